"""Processes that die mid-task: the runner (at five points, for good, five times) and the fanout.

The reconciler (ADR 0006) turns a lost runner into a reason on the task.

A stack of its own with short waits (ack wait 4 s, heartbeat TTL 3 s, reconcile every 0.5 s), so a
lost runner shows within seconds; the production defaults are the same rules with longer waits.
Each test asserts no lost event (seqs strictly increasing, each once), no duplicate PR or comment,
and a terminal state with a reason a user can read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bgagent_cli.demo import DEMO_SCRIPT

from .conftest import E2E, own_database, running_stack, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

FIX_TURNS: list[dict[str, Any]] = DEMO_SCRIPT[0]["turns"]
FAST = {
    "BGAGENT_RUNNER_SLOTS": "2",
    "BGAGENT_RUNNER_ACK_WAIT_S": "4",
    "BGAGENT_IN_PROGRESS_INTERVAL_S": "1",
    "BGAGENT_HEARTBEAT_INTERVAL_S": "1",
    "BGAGENT_HEARTBEAT_TTL_S": "3",
    "BGAGENT_RECONCILE_INTERVAL_S": "0.5",
    "BGAGENT_RECONCILE_GRACE_S": "3",
    "BGAGENT_RECONCILE_REDELIVERY_S": "8",
    "BGAGENT_STRANDED_AFTER_S": "10",
    "BGAGENT_NAK_DELAY_S": "1",
}


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory, postgres_server_url: str) -> Iterator[E2E]:
    with (
        own_database(postgres_server_url, "faults") as database_url,
        running_stack(tmp_path_factory, "e2e-faults", database_url, extra_env=FAST) as e2e,
    ):
        yield e2e


def _github_task(e2e: E2E, name: str, turns: list[dict[str, Any]]) -> tuple[str, int]:
    e2e.github.create_repo("acme", name, {"calc.py": "def add(a, b):\n    return a - b\n"})
    issue = e2e.github.create_issue("acme", name, "add() subtracts")
    token = e2e.script(turns)
    created = e2e.cli_json(
        "submit", "--repo", f"acme/{name}", "--issue", str(issue), "--task", f"fix {token}"
    )
    return created[0]["task_id"], issue


def _attempt_started(e2e: E2E, task_id: str, attempt: int) -> bool:
    return any(e["type"] == "task_started" and e["event"]["attempt"] == attempt for e in e2e.events(task_id))


def _tool_running(e2e: E2E, task_id: str, attempt: int) -> bool:
    return any(e["type"] == "tool_called" and e["event"]["attempt"] == attempt for e in e2e.events(task_id))


def _assert_gap_free_and_one_pr(e2e: E2E, task_id: str, issue: int, name: str) -> None:
    events = e2e.events(task_id)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), "an event was duplicated or reordered"
    ids = [e["event"]["event_id"] for e in events]
    assert len(ids) == len(set(ids))
    prs = [p for p in e2e.github.state()["pulls"] if p["head"]["ref"] == f"bgagent/{task_id}"]
    assert len(prs) <= 1
    comments = [
        c
        for c in e2e.github.state()["comments"]
        if not c["deleted"] and c["issue_number"] == issue and task_id in (c["body"] or "")
    ]
    assert len(comments) <= 1, f"{len(comments)} comments on acme/{name}#{issue}"


def _restart_runner(e2e: E2E) -> None:
    e2e.stack.restart("runner")


def _seen(e2e: E2E, task_id: str, event_type: str, attempt: int = 1) -> bool:
    return any(e["type"] == event_type and e["event"].get("attempt") == attempt for e in e2e.events(task_id))


# Attempt 1's script: a slow model call, a slow tool call, a slow turn after a tool result, then the
# fix. Attempt n+1 replays it from the first turn (the model server matches the task's token).
POINTS = {
    "cloning": "task_started",
    "model call": "workspace_ready",
    "tool call": "tool_called",
    "after a tool result": "tool_result",
    "finalizing": "agent_finished",
}
SLOW_FIX = [
    {"text": "Looking.", "delay_s": 2, "tool_uses": [{"name": "bash", "input": {"command": "sleep 3"}}]},
    {**FIX_TURNS[2], "delay_s": 2},
    *FIX_TURNS[3:],
]


@pytest.mark.parametrize("point", list(POINTS))
def test_a_runner_killed_at_any_point_ends_completed_with_one_pr_and_one_comment(
    fast: E2E, point: str
) -> None:
    name = "at-" + point.replace(" ", "-")
    task_id, issue = _github_task(fast, name, SLOW_FIX)
    wait_until(lambda: _seen(fast, task_id, POINTS[point]), 40, f"{POINTS[point]} of attempt 1")
    fast.stack.kill("runner")
    _restart_runner(fast)
    task = fast.wait_status(task_id, "COMPLETED", timeout=90)
    assert task["result"] == "pr_opened"
    _assert_gap_free_and_one_pr(fast, task_id, issue, name)
    prs = [p for p in fast.github.state()["pulls"] if p["head"]["ref"] == f"bgagent/{task_id}"]
    assert [p["html_url"] for p in prs] == [task["pr_url"]]

    def final_comment() -> list[dict[str, Any]] | None:
        comments = [
            c
            for c in fast.github.state()["comments"]
            if not c["deleted"] and c["issue_number"] == issue and task_id in (c["body"] or "")
        ]
        return comments if comments and "COMPLETED" in comments[-1]["body"] else None

    assert len(wait_until(final_comment, 30, "the issue comment to show COMPLETED")) == 1


def test_a_fanout_killed_mid_edit_leaves_one_comment_that_ends_correct(fast: E2E) -> None:
    task_id, issue = _github_task(fast, "fanout-killed", SLOW_FIX)
    wait_until(lambda: _seen(fast, task_id, "tool_called"), 40, "the first tool call")

    def commented() -> bool:
        return any(task_id in (c["body"] or "") for c in fast.github.state()["comments"])

    wait_until(commented, 30, "the task's comment")
    fast.stack.kill("fanout")  # while it keeps the comment current, edit after edit
    fast.stack.restart("fanout")
    task = fast.wait_status(task_id, "COMPLETED", timeout=90)

    def final_comment() -> list[dict[str, Any]] | None:
        comments = [
            c
            for c in fast.github.state()["comments"]
            if not c["deleted"] and c["issue_number"] == issue and task_id in (c["body"] or "")
        ]
        return comments if comments and "COMPLETED" in comments[-1]["body"] else None

    (comment,) = wait_until(final_comment, 30, "the comment to show COMPLETED")
    assert task["pr_url"] in comment["body"]
    _assert_gap_free_and_one_pr(fast, task_id, issue, "fanout-killed")


def test_a_runner_killed_mid_task_is_seen_lost_then_replaced_and_the_task_ends_with_one_pr(
    fast: E2E,
) -> None:
    slow = [{"text": "Waiting.", "tool_uses": [{"name": "bash", "input": {"command": "sleep 6"}}]}]
    task_id, issue = _github_task(fast, "killed", slow + FIX_TURNS[2:])
    wait_until(lambda: _tool_running(fast, task_id, 1), 30, "attempt 1's first tool call")
    fast.stack.kill("runner")
    try:
        fast.wait_event(task_id, "runner_lost", timeout=30)
        status = fast.cli("status", task_id)
        assert status.returncode == 0, status.stderr
        assert "waiting for a runner" in status.stdout
        assert "attempt 1" in status.stdout
    finally:
        _restart_runner(fast)
    task = fast.wait_status(task_id, "COMPLETED", timeout=60)
    assert task["attempt"] >= 2
    assert task["lost_attempts"] == 1
    assert task["waiting_since"] is None
    _assert_gap_free_and_one_pr(fast, task_id, issue, "killed")
    prs = [p for p in fast.github.state()["pulls"] if p["head"]["ref"] == f"bgagent/{task_id}"]
    assert len(prs) == 1
    assert task["pr_url"] == prs[0]["html_url"]


def test_a_runner_that_never_comes_back_leaves_the_task_stranded_with_a_reason(fast: E2E) -> None:
    slow = [{"text": "Waiting.", "tool_uses": [{"name": "bash", "input": {"command": "sleep 30"}}]}]
    task_id, issue = _github_task(fast, "stranded", slow)
    wait_until(lambda: _tool_running(fast, task_id, 1), 30, "attempt 1's first tool call")
    fast.stack.kill("runner")
    try:
        fast.wait_event(task_id, "runner_lost", timeout=30)
        task = fast.wait_status(task_id, "FAILED", timeout=60)
    finally:
        _restart_runner(fast)
    assert task["error_code"] == "STRANDED"
    assert "no runner was alive" in task["error_message"]
    assert "resubmit" in task["error_message"]
    kinds = [e["type"] for e in fast.events(task_id)]
    assert kinds.count("runner_lost") == 1
    assert kinds[-1] == "task_failed"
    shown = fast.cli("status", task_id)
    assert "STRANDED" in shown.stdout
    _assert_gap_free_and_one_pr(fast, task_id, issue, "stranded")


def test_five_lost_attempts_end_runner_lost_even_with_a_healthy_runner_beside_it(fast: E2E) -> None:
    slow = [{"text": "Waiting.", "tool_uses": [{"name": "bash", "input": {"command": "sleep 60"}}]}]
    task_id, issue = _github_task(fast, "five", slow * 5)
    for attempt in range(1, 6):
        wait_until(lambda a=attempt: _tool_running(fast, task_id, a), 40, f"attempt {attempt}'s tool call")
        fast.stack.kill("runner")
        _restart_runner(fast)  # a healthy runner is always there to take the next attempt
    task = fast.wait_status(task_id, "FAILED", timeout=60)
    assert task["error_code"] == "RUNNER_LOST"
    assert "5 attempts" in task["error_message"]
    assert task["attempt"] == 5
    events = fast.events(task_id)
    assert [e["event"]["attempt"] for e in events if e["type"] == "task_started"] == [1, 2, 3, 4, 5]
    failed = events[-1]
    assert (failed["type"], failed["event"]["actor"]) == ("task_failed", "reconciler")
    _assert_gap_free_and_one_pr(fast, task_id, issue, "five")
    # the healthy runner still works
    ok, _ = _github_task(fast, "after", FIX_TURNS[2:])
    assert fast.wait_status(ok, "COMPLETED", timeout=60)["result"] == "pr_opened"
