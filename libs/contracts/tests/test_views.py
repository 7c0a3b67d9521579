"""The JSON shapes the APIs and the CLI share."""

from __future__ import annotations

import json
from typing import Any

from bgagent_contracts import CostUpdated, Recorded, Status, TaskState, encode_json, event_type, evolve
from bgagent_contracts.subjects import task_subject
from bgagent_contracts.views import event_view, task_view

TASK_VIEW_KEYS = {
    "task_id",
    "waiting_since",
    "lost_attempts",
    "user_id",
    "status",
    "repo",
    "task_type",
    "issue_number",
    "pr_number",
    "description",
    "channel",
    "max_turns",
    "max_budget_usd",
    "trace",
    "attempt",
    "turn",
    "cost_usd",
    "input_tokens",
    "output_tokens",
    "branch",
    "pr_url",
    "result",
    "last_milestone",
    "current_step",
    "error_code",
    "error_message",
    "cancel_requested",
    "pending_nudges",
    "pending_approval",
    "created_at",
    "updated_at",
    "started_at",
    "completed_at",
    "duration_s",
    "last_event_type",
    "last_event_at",
    "last_seq",
    "queue_position",
}


def test_task_view_has_every_field_even_when_unknown(make: Any) -> None:
    view = task_view(make.state(Status.SUBMITTED), queue_position=3)
    assert set(view) == TASK_VIEW_KEYS
    assert view["status"] == "SUBMITTED"
    assert view["task_type"] == "new_task"
    assert view["queue_position"] == 3
    for unknown in ("started_at", "completed_at", "duration_s", "branch", "pr_url", "error_code"):
        assert view[unknown] is None
    assert json.loads(encode_json(view)) == view  # plain JSON already


def test_task_view_of_a_finished_task(make: Any) -> None:
    state: TaskState = make.state(Status.COMPLETED)
    view = task_view(state)
    assert set(view) == TASK_VIEW_KEYS
    assert view["status"] == "COMPLETED"
    assert view["created_at"].endswith("Z")
    assert view["completed_at"] == state.completed_at.isoformat().replace("+00:00", "Z")
    assert view["duration_s"] == state.duration_s
    assert view["queue_position"] is None
    assert view["pr_url"] == "https://x/pr/1"
    assert json.loads(json.dumps(view)) == view


def test_task_view_rounds_cost_to_micro_dollars(make: Any) -> None:
    state = evolve(
        make.state(Status.RUNNING),
        make(
            CostUpdated,
            attempt=1,
            input_tokens=1,
            output_tokens=1,
            cost_usd=0.1234567891,
            total_cost_usd=0.1234567891,
        ),
    )
    assert task_view(state)["cost_usd"] == 0.123457


def test_every_task_state_field_is_shown_or_deliberately_internal() -> None:
    internal = {
        "runner_id",
        "pr_number_opened",
        "acknowledged_nudges",
        "event_count",
        "lost_runner_id",  # in current_step and the runner_lost event
        "requeued_attempt",  # the reconciler's own bookkeeping
        "open_approvals",  # GET /v1/approvals lists them; the view shows pending_approval
        "decided_approvals",  # the runner's recent-decision cache and admission's 409s
        "approved_scopes",  # the runner's allow-list
        "approval_timeout_s",
        "approval_gates",
    }
    shown_as = {"pending_nudges"}  # a count in the view
    fields = set(TaskState.__struct_fields__)
    assert fields - internal - shown_as <= TASK_VIEW_KEYS


def test_event_view_carries_cursor_type_and_event(make: Any) -> None:
    event = make.one_of_each()[7]
    record = Recorded(seq=42, subject=task_subject(event.task_id, event_type(event)), event=event)
    view = event_view(record)
    assert set(view) == {"seq", "task_id", "type", "event"}
    assert (view["seq"], view["task_id"], view["type"]) == (42, event.task_id, event_type(event))
    assert view["event"]["type"] == event_type(event)
    assert view["event"]["event_id"] == event.event_id
    assert json.loads(encode_json(view))["event"]["ts"] == view["event"]["ts"]
