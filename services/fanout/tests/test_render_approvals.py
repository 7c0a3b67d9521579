"""The comment shows the approval a task waits on, and drops it once a decision lands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bgagent_contracts import (
    Actor,
    ApprovalDecided,
    ApprovalExpired,
    ApprovalRequested,
    Event,
    TaskStarted,
    TaskSubmitted,
    WorkspaceReady,
    evolve,
)
from bgagent_contracts import TaskState as State
from bgagent_fanout.render import code_span, render_comment

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
TASK = "01JNQ8Z6V3W6Y1K9T2B4C5D6E7"
REQ = "01JNQ8Z6V3W6Y1K9T2B4C5D6R1"


def _fold(events: list[Event]) -> State:
    state: State | None = None
    for event in events:
        state = evolve(state, event)
    assert state is not None
    return state


def _head() -> list[Event]:
    return [
        TaskSubmitted(
            task_id=TASK,
            event_id="e1",
            ts=T0,
            actor=Actor.ADMISSION,
            user_id="alice",
            repo="acme/widgets",
            issue_number=7,
            description="fix it",
        ),
        TaskStarted(task_id=TASK, event_id="e2", ts=T0, actor=Actor.RUNNER, attempt=1, runner_id="r"),
        WorkspaceReady(task_id=TASK, event_id="e3", ts=T0, actor=Actor.RUNNER, attempt=1, branch="b"),
    ]


def _requested(preview: str, request_id: str = REQ) -> ApprovalRequested:
    return ApprovalRequested(
        task_id=TASK,
        event_id="e4",
        ts=T0 + timedelta(seconds=5),
        actor=Actor.RUNNER,
        attempt=1,
        request_id=request_id,
        tool_use_id="toolu_1",
        tool_name="bash",
        input_preview=preview,
        rule_id="push_to_protected_branch",
        rule_ids=("push_to_protected_branch",),
        severity="medium",
        timeout_s=300,
        deadline=T0 + timedelta(seconds=305),
    )


def test_a_pending_approval_shows_tool_preview_rule_deadline_and_the_commands() -> None:
    body = render_comment(_fold([*_head(), _requested("git push origin main")]))
    assert "**AWAITING_APPROVAL**" in body
    assert "#### Approval needed" in body
    assert "| Tool | `bash` |" in body
    assert "| Input | `git push origin main` |" in body
    assert "| Rule | push\\_to\\_protected\\_branch (medium) |" in body
    assert "| Deadline | 2025-03-01 12:05:05 UTC; no decision by then denies the call |" in body
    assert f"| Approve | `bgagent approve {TASK} {REQ}` |" in body
    assert f"| Deny | `bgagent deny {TASK} {REQ} --reason '<why>'` |" in body


def test_the_section_clears_when_a_decision_or_the_deadline_lands() -> None:
    waiting = [*_head(), _requested("git push origin main")]
    for ending in (
        ApprovalDecided(
            task_id=TASK,
            event_id="e5",
            ts=T0 + timedelta(seconds=9),
            actor=Actor.ADMISSION,
            request_id=REQ,
            decision="approve",
            decided_by="alice",
        ),
        ApprovalExpired(
            task_id=TASK,
            event_id="e5",
            ts=T0 + timedelta(seconds=305),
            actor=Actor.RUNNER,
            attempt=1,
            request_id=REQ,
        ),
    ):
        body = render_comment(_fold([*waiting, ending]))
        assert "**RUNNING**" in body
        assert "Approval needed" not in body
        assert "bgagent approve" not in body


def test_hostile_previews_stay_inside_their_code_span() -> None:
    hostile = "echo `id` | tee x\x1b[31m @here <img src=x> ``` \n| row |"
    body = render_comment(_fold([*_head(), _requested(hostile)]))
    line = next(ln for ln in body.splitlines() if ln.startswith("| Input |"))
    assert "\x1b" not in line
    assert line == "| Input | ````echo `id` \\| tee x @here <img src=x> ``` \\| row \\|```` |"
    assert code_span("`x`") == "`` `x` ``"
    assert code_span("") == "—"
    secret = "ghp_" + "a1B2" * 9
    assert secret not in code_span(f"git push https://{secret}@github.com/a/b")


def test_commands_are_left_out_when_the_ids_are_not_ulids() -> None:
    body = render_comment(_fold([*_head(), _requested("x", request_id="`; rm -rf / #")]))
    assert "Approval needed" in body
    assert "bgagent approve" not in body
