"""Pure decisions over the folded task state: what to append for a command.

Time and ids are passed in; nothing here reads a clock or makes an id.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from . import events as ev
from .errors import (
    InvalidCommandError,
    RequestAlreadyDecidedError,
    RequestNotFoundError,
    TaskAlreadyTerminalError,
    TaskNotAwaitingApprovalError,
    TaskNotFoundError,
)
from .scopes import InvalidScopeError, check_decision_scope
from .state import Status, TaskState

MAX_NUDGE_CHARS = 2000
MAX_DENY_REASON_CHARS = 2000
RECENT_DENIAL_S = 60.0


def _require_live(state: TaskState | None, task_id: str) -> TaskState:
    if state is None:
        raise TaskNotFoundError(f"task {task_id} not found")
    if state.terminal:
        raise TaskAlreadyTerminalError(f"task {task_id} is already {state.status.value}")
    return state


def decide_cancel(
    state: TaskState | None,
    *,
    task_id: str,
    user_id: str,
    reason: str | None,
    now: datetime,
    event_id: str,
) -> ev.Event | None:
    """A queued task is cancelled at once; a started one gets a cancel request.

    Returns None when a cancel was already requested (the command is idempotent).
    """
    live = _require_live(state, task_id)
    if live.status is Status.SUBMITTED:
        return ev.TaskCancelled(
            task_id=task_id,
            event_id=event_id,
            ts=now,
            actor=ev.Actor.ADMISSION,
            cancelled_by=user_id,
            reason=reason,
        )
    if live.cancel_requested:
        return None
    return ev.CancelRequested(
        task_id=task_id,
        event_id=event_id,
        ts=now,
        actor=ev.Actor.ADMISSION,
        requested_by=user_id,
        reason=reason,
    )


def decide_nudge(
    state: TaskState | None,
    *,
    task_id: str,
    user_id: str,
    message: str,
    now: datetime,
    event_id: str,
    nudge_id: str,
) -> ev.NudgeRequested:
    """Accept a nudge for a live task; the message is trimmed and 1–2000 characters."""
    text = message.strip()
    if not text:
        raise InvalidCommandError("message: must not be empty")
    if len(text) > MAX_NUDGE_CHARS:
        raise InvalidCommandError(f"message: at most {MAX_NUDGE_CHARS} characters (got {len(text)})")
    _require_live(state, task_id)
    return ev.NudgeRequested(
        task_id=task_id,
        event_id=event_id,
        ts=now,
        actor=ev.Actor.ADMISSION,
        nudge_id=nudge_id,
        requested_by=user_id,
        message=text,
    )


def decide_approval(
    state: TaskState | None,
    *,
    task_id: str,
    request_id: str,
    user_id: str,
    decision: str,
    scope: str | None,
    reason: str | None,
    now: datetime,
    event_id: str,
) -> ev.ApprovalDecided:
    """Approve or deny an open approval request (of the current attempt or, after a runner crash,
    an earlier one: the next attempt honours it). The reason is capped here; redact it before."""
    if decision not in ("approve", "deny"):
        raise InvalidCommandError("decision: must be approve or deny")
    live = _require_live(state, task_id)
    if any(d.request_id == request_id for d in live.decided_approvals):
        raise RequestAlreadyDecidedError(f"request {request_id} of task {task_id} was already decided")
    if not any(a.request_id == request_id for a in live.open_approvals):
        raise RequestNotFoundError(f"task {task_id} has no approval request {request_id}")
    if live.cancel_requested:
        raise TaskNotAwaitingApprovalError(f"task {task_id} is being cancelled; the request is void")
    if decision == "deny" and scope is not None:
        raise InvalidCommandError("scope: only an approval takes a scope")
    try:
        checked_scope = check_decision_scope(scope)
    except InvalidScopeError as exc:
        raise InvalidCommandError(f"scope: {exc}") from None
    text = (reason or "").strip() or None
    if text is not None and len(text) > MAX_DENY_REASON_CHARS:
        text = text[:MAX_DENY_REASON_CHARS]
    return ev.ApprovalDecided(
        task_id=task_id,
        event_id=event_id,
        ts=now,
        actor=ev.Actor.ADMISSION,
        request_id=request_id,
        decision="approve" if decision == "approve" else "deny",
        decided_by=user_id,
        scope=checked_scope,
        reason=text,
    )


def recent_denial(state: TaskState, tool_name: str, input_sha256: str, now: datetime) -> str | None:
    """Why the same call (tool, sha256 of its input) was denied or timed out within 60 s, if it was."""
    for d in reversed(state.decided_approvals):
        if d.decision == "approve" or d.tool_name != tool_name or d.input_sha256 != input_sha256:
            continue
        if (now - d.decided_at).total_seconds() <= RECENT_DENIAL_S:
            why = "denied" if d.decision == "deny" else "not approved in time"
            return f"the same call was {why} {int((now - d.decided_at).total_seconds())} s ago" + (
                f": {d.reason}" if d.reason and d.decision == "deny" else ""
            )
    return None


class BetweenTurns(msgspec.Struct, frozen=True, kw_only=True):
    """What the runner must do before its next model call, in order."""

    cancel: bool
    stop: ev.TaskFailed | ev.TaskTimedOut | None
    nudges: tuple[str, ...]
    nudge_ids: tuple[str, ...]


def between_turns(
    state: TaskState,
    *,
    now: datetime,
    event_id: str,
    wall_clock_limit_s: float | None = None,
) -> BetweenTurns:
    """Cancel first, then limits (turns, dollars, wall clock), then nudges."""
    if state.cancel_requested or state.terminal:
        return BetweenTurns(cancel=True, stop=None, nudges=(), nudge_ids=())
    stop: ev.TaskFailed | ev.TaskTimedOut | None = None
    if state.turn >= state.max_turns:
        stop = ev.TaskFailed(
            task_id=state.task_id,
            event_id=event_id,
            ts=now,
            actor=ev.Actor.RUNNER,
            attempt=state.attempt,
            code="MAX_TURNS",
            message=f"Exceeded max turns ({state.max_turns}) before the agent finished",
        )
    elif state.max_budget_usd is not None and state.cost_usd >= state.max_budget_usd:
        stop = ev.TaskFailed(
            task_id=state.task_id,
            event_id=event_id,
            ts=now,
            actor=ev.Actor.RUNNER,
            attempt=state.attempt,
            code="MAX_BUDGET",
            message=f"Exceeded max budget (${state.max_budget_usd:.2f}; spent ${state.cost_usd:.4f})",
        )
    elif wall_clock_limit_s is not None and state.started_at is not None:
        elapsed = (now - state.started_at).total_seconds()
        if elapsed >= wall_clock_limit_s:
            stop = ev.TaskTimedOut(
                task_id=state.task_id,
                event_id=event_id,
                ts=now,
                actor=ev.Actor.RUNNER,
                attempt=state.attempt,
                limit="wall_clock",
                message=f"Ran for {elapsed:.0f}s, over the {wall_clock_limit_s:.0f}s limit",
            )
    nudges = tuple(n.message for n in state.pending_nudges)
    ids = tuple(n.nudge_id for n in state.pending_nudges)
    return BetweenTurns(cancel=False, stop=stop, nudges=nudges, nudge_ids=ids)
