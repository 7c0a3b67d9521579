"""The JSON shapes every API and the CLI share, derived from folded state and stored events."""

from __future__ import annotations

from typing import Any

from .codec import to_builtins
from .events import Recorded, event_type
from .state import TaskState


def task_view(state: TaskState, *, queue_position: int | None = None) -> dict[str, Any]:
    """A task as the HTTP APIs return it (every field explicit, ``null`` when unknown)."""
    return {
        "task_id": state.task_id,
        "user_id": state.user_id,
        "status": state.status.value,
        "repo": state.repo,
        "task_type": state.task_type.value,
        "issue_number": state.issue_number,
        "pr_number": state.pr_number,
        "description": state.description,
        "channel": state.channel,
        "max_turns": state.max_turns,
        "max_budget_usd": state.max_budget_usd,
        "trace": state.trace,
        "attempt": state.attempt,
        "turn": state.turn,
        "cost_usd": round(state.cost_usd, 6),
        "input_tokens": state.input_tokens,
        "output_tokens": state.output_tokens,
        "branch": state.branch,
        "pr_url": state.pr_url,
        "result": state.result,
        "last_milestone": state.last_milestone,
        "current_step": state.current_step,
        "error_code": state.error_code,
        "error_message": state.error_message,
        "cancel_requested": state.cancel_requested,
        "pending_nudges": len(state.pending_nudges),
        "pending_approval": state.pending_approval,
        "waiting_since": to_builtins(state.waiting_since),
        "lost_attempts": state.lost_attempts,
        "created_at": to_builtins(state.created_at),
        "updated_at": to_builtins(state.updated_at),
        "started_at": to_builtins(state.started_at),
        "completed_at": to_builtins(state.completed_at),
        "duration_s": state.duration_s,
        "last_event_type": state.last_event_type,
        "last_event_at": to_builtins(state.last_event_at),
        "last_seq": state.last_seq,
        "queue_position": queue_position,
    }


def event_view(record: Recorded) -> dict[str, Any]:
    """One stored event as APIs and ``--output json`` print it: cursor, type and the event itself."""
    return {
        "seq": record.seq,
        "task_id": record.event.task_id,
        "type": event_type(record.event),
        "event": to_builtins(record.event),
    }
