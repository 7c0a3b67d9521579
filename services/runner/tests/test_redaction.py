"""Nothing the agent prints leaves the runner unredacted: events, trace, commit, pull request, review.

The unit tests cover the builders in prompts.py; the integration test drives a task end to end
(real NATS, the scripted model, the fake GitHub) with an agent that prints secrets in a tool output
and in its final text, and looks for them everywhere the runner writes.
"""

from __future__ import annotations

import gzip
import logging
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ulid import ULID

from bgagent_contracts import Status, TaskState, TaskSubmitted, TaskType, TraceStored, encode_event
from bgagent_contracts.fold import fold
from bgagent_contracts.subjects import traces_bucket
from bgagent_contracts.text import BODY_MAX, COMMIT_SUBJECT_MAX, ELLIPSIS, PR_TITLE_MAX
from bgagent_runner.prompts import commit_message, pr_body, pr_title, review_body
from bgagent_testing.fake_github import FakeGitHub
from bgagent_testing.model_server import ModelServer

# Fake secrets, assembled from pieces so that this file does not trip secret scanners.
GITHUB_TOKEN = "ghs_" + "Q7r8S9t0U1v2" * 3
SLACK = "xox" + "b-" + "123456789012-1234567890123-" + "AbCdEfGhIjKlMnOpQrStUvWx"
AWS_ID = "AKIA" + "IOSFODNN7" + "EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG" + "/bPxRfiCYEXAMPLEKEY"
URL_PASSWORD = "p@ss" + "@w0rd"
CLONE_URL = f"https://deploy:{URL_PASSWORD}@git.internal.example/x.git"
MODEL_KEY = "model-" + "key-of-no-known-shape-7"


def task_state(description: str | None, **fields: Any) -> TaskState:
    submitted = TaskSubmitted(
        task_id=str(ULID()),
        event_id=str(ULID()),
        ts=datetime.now(UTC),
        actor="admission",
        user_id="alice",
        repo="acme/widgets",
        description=description,
        **fields,
    )
    state = fold([submitted])
    assert state is not None
    return state


# --- the builders ---------------------------------------------------------------------------------


def test_the_commit_message_and_pr_title_come_from_the_description_redacted_and_clean() -> None:
    state = task_state(f"Rotate\x00 the {SLACK} token\x1b[0m\nsecond line")
    message = commit_message(state, (MODEL_KEY,))
    title = pr_title(state)
    for text in (message, title):
        assert SLACK not in text
        assert "[REDACTED-SLACK_TOKEN]" in text
        assert "\x00" not in text
        assert "\x1b" not in text
        assert "second line" not in text
    assert message.startswith("bgagent: Rotate the [REDACTED-SLACK_TOKEN] token[0m\n\nTask-Id: ")
    assert "\n" not in title


def test_a_secret_on_a_later_line_of_a_pem_block_is_still_caught_in_the_title() -> None:
    key = "-----BEGIN " + "PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
    title = pr_title(task_state(f"{key}-----END PRIVATE KEY-----\nfix"))
    assert title == "[REDACTED-PRIVATE_KEY]"


def test_titles_are_bounded_and_cut_at_a_word() -> None:
    state = task_state("word " * 200)
    title = pr_title(state)
    assert len(title) <= PR_TITLE_MAX
    assert title.endswith("word" + ELLIPSIS)
    subject = commit_message(state).splitlines()[0]
    assert len(subject.removeprefix("bgagent: ")) <= COMMIT_SUBJECT_MAX


def test_blank_descriptions_fall_back() -> None:
    state = task_state("\x00\n  \n", issue_number=4)
    assert pr_title(state) == "Resolve issue #4"
    assert commit_message(state).startswith("bgagent: work on acme/widgets\n")
    assert pr_title(task_state(None)).startswith("bgagent task ")


def test_the_pr_body_is_the_summary_redacted_clean_and_bounded() -> None:
    state = task_state("x", issue_number=9)
    summary = f"Done.\x00 Used {AWS_ID} {AWS_SECRET} and key {MODEL_KEY}.\r\n" + "more text " * 10_000
    body = pr_body(state, summary, (MODEL_KEY,))
    for secret in (AWS_ID, AWS_SECRET, MODEL_KEY, "\x00", "\r"):
        assert secret not in body
    assert len(body) <= BODY_MAX
    assert body.endswith(f"\n\nCloses #9\n\n---\nbgagent task `{state.task_id}`")
    assert "…(truncated)" in body
    assert pr_body(state, None).startswith("Changes made by bgagent.\n\nCloses #9")


def test_the_review_body_is_redacted_too() -> None:
    state = task_state("review", task_type=TaskType.PR_REVIEW, pr_number=3)
    body = review_body(state, f"LGTM but {CLONE_URL} leaks", ())
    assert URL_PASSWORD not in body
    assert "w0rd" not in body
    assert body.startswith("LGTM but https://[REDACTED-URL_CREDENTIALS]@git.internal.example/x.git leaks")
    assert review_body(state, "  ") == f"No findings.\n\n---\nbgagent task `{state.task_id}`"


# --- end to end ------------------------------------------------------------------------------------

PRINTED = (SLACK, AWS_ID, AWS_SECRET, URL_PASSWORD, "w0rd", MODEL_KEY, GITHUB_TOKEN)


def bash(command: str) -> dict[str, Any]:
    return {"name": "bash", "input": {"command": command}}


@pytest.fixture
def github(tmp_path: Path) -> Iterator[FakeGitHub]:
    with FakeGitHub(tmp_path / "github", token=GITHUB_TOKEN) as gh:
        gh.create_repo("acme", "widgets", {"app.py": "def greet():\n    return 'hi'\n"})
        yield gh


def assert_clean(where: str, text: str) -> None:
    leaked = [secret for secret in PRINTED if secret in text]
    assert leaked == [], f"{where} leaks {leaked}: {text[:2000]}"


@pytest.mark.integration
async def test_a_secret_the_agent_prints_reaches_no_event_trace_commit_pr_or_review(
    kit: Any, github: FakeGitHub, model_server: ModelServer, nc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = kit.make_settings(
        kit.settings.nats,
        model_server.url,
        Path(kit.settings.work_dir),
        local_repo_roots=(),
        github_token=github.token,
        github_api_url=github.api_url,
        github_git_url=github.git_url,
        anthropic_api_key=MODEL_KEY,
    )
    printed = f"{SLACK} {AWS_ID} {AWS_SECRET} url={CLONE_URL} key={MODEL_KEY} gh={GITHUB_TOKEN}"
    final = f"Changed greet().\x00 While at it I saw {printed}.\nAll tests pass."
    tag = f"leak-{ULID()}"
    model_server.add_script(
        tag,
        [
            {"text": f"Looking: {SLACK}", "tool_uses": [bash(f"echo '{printed}'; echo hi > NOTES.txt")]},
            {
                "tool_uses": [
                    {
                        "name": "str_replace_based_edit_tool",
                        "input": {
                            "command": "str_replace",
                            "path": "app.py",
                            "old_str": "'hi'",
                            "new_str": "'yo'",
                        },
                    }
                ]
            },
            {"text": final},
        ],
    )
    await kit.start_runner(settings)
    # The tag goes on the second line: the review task's message quotes the PR title, and the model
    # server plays the first script whose tag it finds there.
    task_id = await kit.submit("acme/widgets", f"Greet differently\n{tag}", trace=True)
    state = await kit.wait_terminal(task_id, timeout=20)
    assert state.status is Status.COMPLETED, (state.error_code, state.error_message)
    assert state.result == "pr_opened"

    review_tag = f"leak-review-{ULID()}"
    model_server.add_script(
        review_tag,
        [{"tool_uses": [bash(f"echo '{printed}'")]}, {"text": f"Review: found {printed} in the diff."}],
    )
    number = github.pulls()[0]["number"]
    review_id = await kit.submit(
        "acme/widgets", f"{review_tag} review", task_type=TaskType.PR_REVIEW, pr_number=number, trace=True
    )
    review = await kit.wait_terminal(review_id, timeout=20)
    assert review.status is Status.COMPLETED, (review.error_code, review.error_message)

    # The tool really printed the secrets: the model saw them (it needs the real output to work).
    tool_output = model_server.requests(tag)[1]["body"]["messages"][-1]["content"][0]["content"]
    assert SLACK in tool_output

    bucket = await nc.jetstream().object_store(traces_bucket(kit.settings.nats.prefix))
    for tid in (task_id, review_id):
        events = await kit.events(tid)
        for event in events[1:]:  # task_submitted is the caller's, not the runner's
            assert_clean(type(event).__name__, encode_event(event).decode())
        stored = next(e for e in events if isinstance(e, TraceStored))
        obj = await bucket.get(stored.object_name)
        assert obj.data is not None
        trace = gzip.decompress(obj.data).decode()
        assert "[REDACTED-SLACK_TOKEN]" in trace
        assert_clean("trace", trace)

    pull = github.pulls()[0]
    assert_clean("PR title", pull["title"])
    assert_clean("PR body", pull["body"])
    assert "[REDACTED-AWS_SECRET_KEY]" in pull["body"]
    assert "\x00" not in pull["body"]
    assert pull["body"].startswith("Changed greet(). While at it I saw [REDACTED-SLACK_TOKEN]")

    bare = github.repo_dir("acme", "widgets")
    log = subprocess.run(
        ["git", "log", "--format=%B", f"bgagent/{task_id}"],
        cwd=bare,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert_clean("commit message", log)
    assert f"Task-Id: {task_id}" in log

    reviews = github.state()["reviews"]
    assert len(reviews) == 1
    assert_clean("review body", reviews[0]["body"])
    assert reviews[0]["body"].startswith("Review: found [REDACTED-SLACK_TOKEN]"), reviews[0]["body"]

    assert_clean("runner logs", caplog.text)
