"""The runner against the fake GitHub: clone and push over smart HTTP with the token, PRs over REST."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ulid import ULID

from bgagent_contracts import PrOpened, PrUpdated, ReviewPosted, Status, TaskType, encode_event
from bgagent_runner.forge import GitHubForge
from bgagent_testing.fake_github import FakeGitHub
from bgagent_testing.model_server import ModelServer

pytestmark = pytest.mark.integration

TOKEN = "ghs_" + "f" * 36


@pytest.fixture
def github(tmp_path: Path) -> Iterator[FakeGitHub]:
    with FakeGitHub(tmp_path / "github", token=TOKEN) as gh:
        gh.create_repo("acme", "widgets", {"app.py": "def greet():\n    return 'hi'\n"})
        yield gh


def gh_settings(kit: Any, github: FakeGitHub, model_server: ModelServer) -> Any:
    return kit.make_settings(
        kit.settings.nats,
        model_server.url,
        Path(kit.settings.work_dir),
        local_repo_roots=(),
        github_token=github.token,
        github_api_url=github.api_url,
        github_git_url=github.git_url,
    )


def edit(path: str, old: str, new: str) -> dict[str, Any]:
    return {
        "name": "str_replace_based_edit_tool",
        "input": {"command": "str_replace", "path": path, "old_str": old, "new_str": new},
    }


async def assert_token_never_recorded(kit: Any, task_id: str) -> None:
    for event in await kit.events(task_id):
        assert TOKEN not in encode_event(event).decode()


async def test_new_task_opens_a_pull_request_for_the_issue(
    kit: Any, github: FakeGitHub, model_server: ModelServer
) -> None:
    tag = f"gh-{ULID()}"
    issue = github.create_issue("acme", "widgets", "Greet louder", f"{tag}: make greet() say HELLO")
    model_server.add_script(
        tag,
        [
            {"tool_uses": [edit("app.py", "'hi'", "'HELLO'")]},
            {
                "tool_uses": [
                    {"name": "bash", "input": {"command": "git remote -v; env | grep -ci token || true"}}
                ]
            },
            {"text": "greet() now says HELLO."},
        ],
    )
    await kit.start_runner(gh_settings(kit, github, model_server))
    task_id = await kit.submit("acme/widgets", None, issue_number=issue)

    state = await kit.wait_terminal(task_id, timeout=15)

    assert state.status is Status.COMPLETED, (state.error_code, state.error_message)
    assert state.result == "pr_opened"
    branch = f"bgagent/{task_id}"
    pulls = github.pulls()
    assert len(pulls) == 1
    assert pulls[0]["head"]["ref"] == branch
    assert pulls[0]["base"]["ref"] == "main"
    assert f"Closes #{issue}" in pulls[0]["body"]
    assert "greet() now says HELLO." in pulls[0]["body"]
    opened = [e for e in await kit.events(task_id) if isinstance(e, PrOpened)]
    assert len(opened) == 1
    assert state.pr_url == opened[0].pr_url == pulls[0]["html_url"]
    assert github.branch_sha("acme", "widgets", branch) is not None
    first = model_server.requests(tag)[0]["body"]["messages"][0]["content"][0]["text"]
    assert "Greet louder" in first
    tool_output = model_server.requests(tag)[2]["body"]["messages"][-1]["content"][0]["content"]
    assert TOKEN not in tool_output
    assert tool_output.rstrip().endswith("0")  # no variable with "token" in the agent's environment
    await assert_token_never_recorded(kit, task_id)


async def test_pr_iteration_pushes_to_the_pr_branch_and_updates_the_pr(
    kit: Any, github: FakeGitHub, model_server: ModelServer
) -> None:
    tag = f"iter-{ULID()}"
    model_server.add_script(tag, [{"tool_uses": [edit("app.py", "'hi'", "'hey'")]}, {"text": "first"}])
    await kit.start_runner(gh_settings(kit, github, model_server))
    first_id = await kit.submit("acme/widgets", f"Change the greeting\n{tag}")  # tag not in the PR title
    first = await kit.wait_terminal(first_id, timeout=15)
    assert first.result == "pr_opened"
    number = github.pulls()[0]["number"]
    branch = f"bgagent/{first_id}"
    before = github.branch_sha("acme", "widgets", branch)

    tag2 = f"iter2-{ULID()}"
    model_server.add_script(
        tag2, [{"tool_uses": [edit("app.py", "'hey'", "'hey there'")]}, {"text": "again"}]
    )
    second_id = await kit.submit(
        "acme/widgets", f"{tag2} address review", task_type=TaskType.PR_ITERATION, pr_number=number
    )
    second = await kit.wait_terminal(second_id, timeout=15)

    assert second.status is Status.COMPLETED, (second.error_code, second.error_message)
    assert second.result == "pr_updated"
    assert len(github.pulls()) == 1
    after = github.branch_sha("acme", "widgets", branch)
    assert after not in (None, before)
    updated = [e for e in await kit.events(second_id) if isinstance(e, PrUpdated)]
    assert [u.pr_number for u in updated] == [number]


async def test_pr_review_posts_a_review_and_never_pushes(
    kit: Any, github: FakeGitHub, model_server: ModelServer
) -> None:
    tag = f"rev-{ULID()}"
    model_server.add_script(tag, [{"tool_uses": [edit("app.py", "'hi'", "'yo'")]}, {"text": "first"}])
    await kit.start_runner(gh_settings(kit, github, model_server))
    first_id = await kit.submit("acme/widgets", f"Change the greeting\n{tag}")  # tag not in the PR title
    assert (await kit.wait_terminal(first_id, timeout=15)).result == "pr_opened"
    number = github.pulls()[0]["number"]
    branch = f"bgagent/{first_id}"
    before = github.branch_sha("acme", "widgets", branch)

    tag2 = f"rev2-{ULID()}"
    model_server.add_script(
        tag2,
        [
            {
                "tool_uses": [
                    {"name": "bash", "input": {"command": "echo scratch > scratch.txt; git diff main"}}
                ]
            },
            {"text": "Looks good; consider a test for greet()."},
        ],
    )
    review_id = await kit.submit(
        "acme/widgets", f"{tag2} review", task_type=TaskType.PR_REVIEW, pr_number=number
    )
    state = await kit.wait_terminal(review_id, timeout=15)

    assert state.status is Status.COMPLETED, (state.error_code, state.error_message)
    assert state.result == "review_posted"
    assert github.branch_sha("acme", "widgets", branch) == before
    reviews = github.state()["reviews"]
    assert len(reviews) == 1
    assert reviews[0]["body"].startswith("Looks good; consider a test for greet().")
    posted = [e for e in await kit.events(review_id) if isinstance(e, ReviewPosted)]
    assert [p.pr_number for p in posted] == [number]


async def test_transient_github_errors_are_retried(
    kit: Any, github: FakeGitHub, model_server: ModelServer
) -> None:
    tag = f"flaky-{ULID()}"
    model_server.add_script(tag, [{"tool_uses": [edit("app.py", "'hi'", "'hello'")]}, {"text": "done"}])
    github.inject(502, path_prefix="/repos/acme/widgets/pulls", method="POST")
    github.inject(429, retry_after=0, path_prefix="/repos/acme/widgets/pulls", method="GET")
    await kit.start_runner(gh_settings(kit, github, model_server))
    task_id = await kit.submit("acme/widgets", f"{tag} flaky forge")

    state = await kit.wait_terminal(task_id, timeout=15)

    assert state.status is Status.COMPLETED, (state.error_code, state.error_message)
    assert state.result == "pr_opened"
    assert len(github.pulls()) == 1


async def test_a_forge_that_keeps_failing_fails_the_task_and_says_the_branch_was_pushed(
    kit: Any, github: FakeGitHub, model_server: ModelServer
) -> None:
    tag = f"down-{ULID()}"
    model_server.add_script(tag, [{"tool_uses": [edit("app.py", "'hi'", "'hello'")]}, {"text": "done"}])
    github.inject(500, times=None, path_prefix="/repos/acme/widgets/pulls", method="POST")
    forge = GitHubForge(github.api_url, github.token, retry_base_s=0.05)
    try:
        await kit.start_runner(gh_settings(kit, github, model_server), forge=forge)
        task_id = await kit.submit("acme/widgets", f"{tag} forge down")

        state = await kit.wait_terminal(task_id, timeout=15)
    finally:
        await forge.aclose()

    assert state.status is Status.FAILED
    assert state.error_code == "FORGE_ERROR"
    branch = f"bgagent/{task_id}"
    assert f"pushed {branch}" in (state.error_message or "")
    assert "answered 500" in (state.error_message or "")
    assert github.branch_sha("acme", "widgets", branch) is not None
    assert github.pulls() == []
