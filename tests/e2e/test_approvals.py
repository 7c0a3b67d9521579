"""End to end: approval gates through the CLI with the scripted model.

A gated tool call (the starter set's ``write_env_files`` and ``push_to_protected_branch``) waits for a
human: ``bgagent approve`` ⇒ the tool runs and the task opens its PR; ``bgagent deny`` ⇒ the tool
never runs and the model's next request carries the denial; no decision ⇒ ``approval_expired``, and
the same call a moment later is denied outright (the 60 s recent-decision cache).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bgagent_cli.demo import DEMO_SCRIPT, make_demo_repo

from .conftest import E2E, own_database, running_stack, wait_until

pytestmark = pytest.mark.e2e

FIX_TURNS: list[dict[str, Any]] = DEMO_SCRIPT[0]["turns"]
PUSH = "touch pushed.marker && git push origin main"


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)


def _submit(e2e: E2E, *args: str) -> str:
    task_id: str = e2e.cli_json("submit", *args)[0]["task_id"]
    return task_id


def _comment(e2e: E2E, task_id: str) -> str | None:
    comments = [
        c for c in e2e.github.state()["comments"] if not c["deleted"] and task_id in (c["body"] or "")
    ]
    return str(comments[-1]["body"]) if comments else None


def test_approve_runs_the_tool_and_the_task_opens_its_pr(e2e: E2E) -> None:
    e2e.github.create_repo(
        "acme", "gated", {"calc.py": "def add(a, b):\n    return a - b\n", "README.md": "x\n"}
    )
    issue = e2e.github.create_issue("acme", "gated", "add() subtracts; also add prod.env")
    write_env = {
        "text": "Adding the production settings.",
        "tool_uses": [
            {
                "name": "str_replace_based_edit_tool",
                "input": {"command": "create", "path": "prod.env", "file_text": "MODE=prod\n"},
            }
        ],
    }
    token = e2e.script([write_env, *FIX_TURNS[2:]])
    task_id = _submit(e2e, "--repo", "acme/gated", "--issue", str(issue), "--task", f"fix add {token}")
    watcher = e2e.cli_popen("watch", task_id)
    try:
        requested = e2e.wait_event(task_id, "approval_requested", timeout=60)["event"]
        request_id = requested["request_id"]
        assert requested["tool_name"] == "str_replace_based_edit_tool"
        assert "write_env_files" in requested["rule_ids"]
        assert "prod.env" in requested["input_preview"]
        e2e.wait_status(task_id, "AWAITING_APPROVAL")

        pending = e2e.cli_json("pending")
        mine = [p for p in pending if p["request_id"] == request_id]
        assert len(mine) == 1
        assert mine[0]["task_id"] == task_id
        assert mine[0]["severity"] == "high"
        status = e2e.cli("status", task_id)
        assert status.returncode == 0, status.stderr
        assert f"bgagent approve {task_id} {request_id}" in status.stdout
        assert "prod.env" in status.stdout
        comment = wait_until(
            lambda: (body := _comment(e2e, task_id)) and "Approval needed" in body and body,
            30,
            "the issue comment to show the pending approval",
        )
        assert f"bgagent approve {task_id} {request_id}" in comment

        approved = e2e.cli("approve", task_id, request_id)
        assert approved.returncode == 0, approved.stderr
        assert f"Approved request {request_id}" in approved.stdout
        again = e2e.cli("approve", task_id, request_id)
        assert again.returncode != 0
        # decided already, or (the task is quick) finished already
        assert "REQUEST_ALREADY_DECIDED" in again.stderr or "TASK_ALREADY_TERMINAL" in again.stderr

        out, err = watcher.communicate(timeout=120)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    assert watcher.returncode == 0, err
    assert f"approve: bgagent approve {task_id} {request_id}" in out
    assert f"deny:    bgagent deny {task_id} {request_id}" in out
    assert f"request {request_id} approved by" in out

    events = e2e.events(task_id)
    results = [e["event"] for e in events if e["type"] == "tool_result"]
    write = next(r for r in results if r["tool_use_id"] == requested["tool_use_id"])
    assert write["is_error"] is False
    task = e2e.wait_status(task_id, "COMPLETED")
    prs = [p for p in e2e.github.state()["pulls"] if p["head"]["ref"] == f"bgagent/{task_id}"]
    assert len(prs) == 1
    assert task["pr_url"] == prs[0]["html_url"]
    final = wait_until(
        lambda: (body := _comment(e2e, task_id)) and "COMPLETED" in body and body, 30, "the final comment"
    )
    assert "Approval needed" not in final


def test_deny_never_runs_the_tool_and_the_model_hears_why(e2e: E2E, tmp_path: Path) -> None:
    repo = make_demo_repo(tmp_path)
    main_before = _git(repo, "rev-parse", "main").stdout
    token = e2e.script(
        [
            {
                "text": "Pushing straight to main.",
                "tool_uses": [{"name": "bash", "input": {"command": PUSH}}],
            },
            {"text": "Understood; I will not push to main."},
        ]
    )
    task_id = _submit(e2e, "--repo", str(repo), "--task", f"ship it {token}")
    requested = e2e.wait_event(task_id, "approval_requested", timeout=60)["event"]
    assert requested["rule_ids"] == ["push_to_protected_branch"]
    reason = "open a pull request instead"
    denied = e2e.cli("deny", task_id, requested["request_id"], "--reason", reason)
    assert denied.returncode == 0, denied.stderr
    watched = e2e.cli("watch", task_id, timeout=120)
    assert "denied by" in watched.stdout
    assert reason in watched.stdout

    result = next(
        e["event"]
        for e in e2e.events(task_id)
        if e["type"] == "tool_result" and e["event"]["tool_use_id"] == requested["tool_use_id"]
    )
    assert result["is_error"] is True
    assert "pushed.marker" not in _git(repo, "log", "--all", "--name-only", "--format=").stdout
    assert _git(repo, "rev-parse", "main").stdout == main_before
    requests = e2e.model_requests(token)
    assert len(requests) >= 2
    last_user = requests[1]["body"]["messages"][-1]
    assert last_user["role"] == "user"
    text = json.dumps(last_user)
    assert "<user_denial" in text
    assert reason in text
    assert reason not in json.dumps(requests[0]["body"])


@pytest.fixture(scope="module")
def short_gates(tmp_path_factory: pytest.TempPathFactory, postgres_server_url: str) -> Iterator[E2E]:
    """A stack whose gated calls wait at most 3 s (``BGAGENT_APPROVAL_TIMEOUT_CEILING_S``)."""
    with (
        own_database(postgres_server_url, "approvals") as database_url,
        running_stack(
            tmp_path_factory,
            "e2e-approvals",
            database_url,
            extra_env={"BGAGENT_APPROVAL_TIMEOUT_CEILING_S": "3"},
        ) as e2e,
    ):
        yield e2e


def test_no_decision_expires_and_the_same_call_is_then_denied(short_gates: E2E, tmp_path: Path) -> None:
    e2e = short_gates
    repo = make_demo_repo(tmp_path)
    push = {"text": "Pushing to main.", "tool_uses": [{"name": "bash", "input": {"command": PUSH}}]}
    token = e2e.script([push, {**push, "text": "Trying again."}, {"text": "I give up on pushing."}])
    task_id = _submit(e2e, "--repo", str(repo), "--task", f"ship it {token}", "--approval-timeout", "30")
    watched = e2e.cli("watch", task_id, timeout=120)
    assert "approval_expired" in watched.stdout
    types = [e["type"] for e in e2e.events(task_id)]
    assert types.count("approval_requested") == 1
    assert types.count("approval_expired") == 1
    assert "approval_decided" not in types
    denied = [e["event"] for e in e2e.events(task_id) if e["type"] == "policy_denied"]
    assert len(denied) == 1
    assert denied[0]["rule_id"] == "recent_decision"
    assert "pushed.marker" not in _git(repo, "log", "--all", "--name-only", "--format=").stdout
    requests = e2e.model_requests(token)
    assert "timed_out" in json.dumps(requests[1]["body"]["messages"][-1])
    request_id = next(
        e["event"]["request_id"] for e in e2e.events(task_id) if e["type"] == "approval_requested"
    )
    late = e2e.cli("approve", task_id, request_id)
    assert late.returncode != 0
    assert "TASK_ALREADY_TERMINAL" in late.stderr or "REQUEST_ALREADY_DECIDED" in late.stderr
