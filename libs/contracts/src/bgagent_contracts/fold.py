"""The task state machine: a pure, total fold over events.

``evolve`` is the only place a task changes status. It never raises: an event
that means nothing in the current state (a nudge after completion, a duplicate
``task_started``, an event from a stale runner attempt, anything after a
terminal event) leaves the state as it was.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import singledispatch

import msgspec

from . import events as ev
from .scopes import InvalidScopeError, grant
from .state import TERMINAL_STATUSES, DecidedApproval, OpenApproval, PendingNudge, Status, TaskState

_ACTIVE = frozenset({Status.HYDRATING, Status.RUNNING, Status.AWAITING_APPROVAL, Status.FINALIZING})


def evolve(state: TaskState | None, event: ev.Event) -> TaskState | None:
    """Apply one event. Returns the same object when the event is ignored."""
    if state is None:
        return _create(event)
    if state.status in TERMINAL_STATUSES or event.task_id != state.task_id:
        return state
    if _is_stale(state, event):
        return state
    new = _apply(event, state)
    if new is state:
        return state
    return _touch(new, event)


def fold(events: Iterable[ev.Event], state: TaskState | None = None) -> TaskState | None:
    """Fold a sequence of events (in log order) into a state."""
    for event in events:
        state = evolve(state, event)
    return state


def fold_recorded(records: Iterable[ev.Recorded], state: TaskState | None = None) -> TaskState | None:
    """Fold stored events, also tracking the last stream sequence and the event count."""
    for record in records:
        state = evolve(state, record.event)
        if state is not None and record.seq > state.last_seq:
            state = _replace(state, last_seq=record.seq, event_count=state.event_count + 1)
    return state


# --- internals ---------------------------------------------------------------


def _replace(state: TaskState, **changes: object) -> TaskState:
    return msgspec.structs.replace(state, **changes)


def _create(event: ev.Event) -> TaskState | None:
    if not isinstance(event, ev.TaskSubmitted):
        return None
    return TaskState(
        task_id=event.task_id,
        user_id=event.user_id,
        repo=event.repo,
        task_type=event.task_type,
        issue_number=event.issue_number,
        pr_number=event.pr_number,
        description=event.description,
        max_turns=event.max_turns,
        max_budget_usd=event.max_budget_usd,
        trace=event.trace,
        channel=event.channel,
        created_at=event.ts,
        updated_at=event.ts,
        last_event_type="task_submitted",
        last_event_at=event.ts,
        approval_timeout_s=event.approval_timeout_s,
        approved_scopes=tuple(event.initial_approvals),
    )


def _touch(state: TaskState, event: ev.Event) -> TaskState:
    # An event of the current attempt's runner shows it is alive: it no longer waits for one.
    alive = state.waiting_since is not None and event.actor == ev.Actor.RUNNER
    return _replace(
        state,
        updated_at=event.ts,
        last_event_type=ev.event_type(event),
        last_event_at=event.ts,
        waiting_since=None if alive else state.waiting_since,
    )


def _is_stale(state: TaskState, event: ev.Event) -> bool:
    """Runner events of an attempt other than the current one mean nothing."""
    if isinstance(event, ev.TaskStarted):
        return event.attempt <= state.attempt
    attempt = getattr(event, "attempt", None)
    return attempt is not None and attempt != state.attempt


@singledispatch
def _apply(event: ev.Event, state: TaskState) -> TaskState:
    return state  # events with no effect on the state (TaskSubmitted twice, ToolResult, …)


@_apply.register
def _(event: ev.TaskStarted, state: TaskState) -> TaskState:
    return _replace(
        state,
        status=Status.HYDRATING,
        attempt=event.attempt,
        runner_id=event.runner_id,
        started_at=state.started_at or event.ts,
        turn=0,
        current_step="preparing workspace",
        pending_approval=None,
        waiting_since=None,
    )


@_apply.register
def _(event: ev.WorkspaceReady, state: TaskState) -> TaskState:
    if state.status is not Status.HYDRATING:
        return state
    return _replace(state, status=Status.RUNNING, branch=event.branch, current_step="agent working")


@_apply.register
def _(event: ev.Milestone, state: TaskState) -> TaskState:
    if state.status not in _ACTIVE:
        return state
    return _replace(state, last_milestone=event.name, current_step=event.detail or event.name)


@_apply.register
def _(event: ev.AgentTurn, state: TaskState) -> TaskState:
    if state.status is not Status.RUNNING:
        return state
    return _replace(state, turn=max(state.turn, event.turn), current_step=f"turn {event.turn}")


@_apply.register
def _(event: ev.ToolCalled, state: TaskState) -> TaskState:
    if state.status is not Status.RUNNING:
        return state
    return _replace(state, current_step=f"{event.tool_name}: {event.input_preview[:80]}")


@_apply.register
def _(event: ev.ToolResult, state: TaskState) -> TaskState:
    if state.status is not Status.RUNNING:
        return state
    return _replace(state, current_step=f"{event.tool_name} finished")


@_apply.register
def _(event: ev.PolicyDenied, state: TaskState) -> TaskState:
    if state.status is not Status.RUNNING:
        return state
    return _replace(state, current_step=f"{event.tool_name} denied by policy ({event.rule_id})")


def _noted(state: TaskState) -> TaskState:
    """Facts that change nothing but are still the task's latest news (last event, updated_at)."""
    return _replace(state) if state.status in _ACTIVE else state


@_apply.register
def _(event: ev.ReviewPosted, state: TaskState) -> TaskState:
    return _noted(state)


@_apply.register
def _(event: ev.TraceStored, state: TaskState) -> TaskState:
    return _noted(state)


@_apply.register
def _(event: ev.CostUpdated, state: TaskState) -> TaskState:
    if state.status not in _ACTIVE:
        return state
    return _replace(
        state,
        cost_usd=event.total_cost_usd,
        input_tokens=state.input_tokens + event.input_tokens,
        output_tokens=state.output_tokens + event.output_tokens,
    )


@_apply.register
def _(event: ev.CancelRequested, state: TaskState) -> TaskState:
    if state.cancel_requested:
        return state
    return _replace(state, cancel_requested=True)


@_apply.register
def _(event: ev.NudgeRequested, state: TaskState) -> TaskState:
    if any(n.nudge_id == event.nudge_id for n in state.pending_nudges):
        return state
    nudge = PendingNudge(
        nudge_id=event.nudge_id, message=event.message, requested_by=event.requested_by, ts=event.ts
    )
    return _replace(state, pending_nudges=(*state.pending_nudges, nudge))


@_apply.register
def _(event: ev.NudgeAcknowledged, state: TaskState) -> TaskState:
    acked = set(event.nudge_ids)
    remaining = tuple(n for n in state.pending_nudges if n.nudge_id not in acked)
    if len(remaining) == len(state.pending_nudges):
        return state
    done = len(state.pending_nudges) - len(remaining)
    return _replace(state, pending_nudges=remaining, acknowledged_nudges=state.acknowledged_nudges + done)


@_apply.register
def _(event: ev.ApprovalRequested, state: TaskState) -> TaskState:
    if state.status is not Status.RUNNING or _decided(state, event.request_id) is not None:
        return state
    known = any(a.request_id == event.request_id for a in state.open_approvals)
    opened = state.open_approvals
    if not known:  # a new request; a later attempt re-waiting on an open one does not count again
        opened = (
            *opened,
            OpenApproval(
                request_id=event.request_id,
                tool_name=event.tool_name,
                tool_use_id=event.tool_use_id,
                input_preview=event.input_preview,
                input_sha256=event.input_sha256,
                rule_ids=event.rule_ids or (event.rule_id,),
                severity=event.severity,
                deadline=event.deadline,
                requested_at=event.ts,
                attempt=event.attempt,
            ),
        )
    return _replace(
        state,
        status=Status.AWAITING_APPROVAL,
        pending_approval=event.request_id,
        open_approvals=opened,
        approval_gates=state.approval_gates + (0 if known else 1),
        current_step=f"awaiting approval for {event.tool_name}",
    )


def _decided(state: TaskState, request_id: str) -> DecidedApproval | None:
    return next((d for d in state.decided_approvals if d.request_id == request_id), None)


def _close_approval(
    state: TaskState,
    request_id: str,
    decision: str,
    event: ev.Event,
    *,
    by: str | None = None,
    scope: str | None = None,
    reason: str | None = None,
) -> TaskState:
    """Record the decision of an open request; the task resumes if it was waiting on it."""
    request = next((a for a in state.open_approvals if a.request_id == request_id), None)
    if request is None:
        return state
    decided = DecidedApproval(
        request_id=request_id,
        decision=decision,
        tool_name=request.tool_name,
        input_sha256=request.input_sha256,
        requested_at=request.requested_at,
        decided_at=event.ts,
        decided_by=by,
        scope=scope,
        reason=reason,
    )
    scopes = state.approved_scopes
    try:
        granted = grant(scope, request.tool_name) if decision == "approve" else None
    except InvalidScopeError:
        granted = None  # a scope admission would have refused (a forged event): grants nothing

    if granted is not None and granted not in scopes:
        scopes = (*scopes, granted)
    new = _replace(
        state,
        open_approvals=tuple(a for a in state.open_approvals if a.request_id != request_id),
        decided_approvals=(*state.decided_approvals, decided),
        approved_scopes=scopes,
    )
    if state.status is Status.AWAITING_APPROVAL and state.pending_approval == request_id:
        new = _replace(new, status=Status.RUNNING, pending_approval=None, current_step="agent working")
    return new


@_apply.register
def _(event: ev.ApprovalDecided, state: TaskState) -> TaskState:
    return _close_approval(
        state,
        event.request_id,
        event.decision,
        event,
        by=event.decided_by,
        scope=event.scope,
        reason=event.reason,
    )


@_apply.register
def _(event: ev.ApprovalExpired, state: TaskState) -> TaskState:
    return _close_approval(
        state, event.request_id, "expired", event, reason="no decision before the deadline"
    )


@_apply.register
def _(event: ev.AgentFinished, state: TaskState) -> TaskState:
    if state.status is not Status.RUNNING:
        return state
    return _replace(
        state, status=Status.FINALIZING, turn=max(state.turn, event.turns), current_step="finalizing"
    )


@_apply.register
def _(event: ev.RunnerLost, state: TaskState) -> TaskState:
    if state.status not in _ACTIVE or state.waiting_since is not None:
        return state
    who = f"runner {event.runner_id}" if event.runner_id else "its runner"
    return _replace(
        state,
        waiting_since=event.ts,
        lost_runner_id=event.runner_id,
        lost_attempts=state.lost_attempts + 1,
        current_step=(
            f"{who} was lost at {event.ts:%H:%M:%S} UTC (attempt {event.attempt}); waiting for a runner"
        ),
    )


@_apply.register
def _(event: ev.TaskRequeued, state: TaskState) -> TaskState:
    if state.requeued_attempt == state.attempt:
        return state
    step = state.current_step if state.waiting_since is not None else "requeued; waiting for a runner"
    return _replace(
        state,
        requeued_attempt=state.attempt,
        waiting_since=state.waiting_since or event.ts,
        current_step=step,
    )


def _pr(state: TaskState, pr_number: int, pr_url: str) -> TaskState:
    if state.status not in (Status.RUNNING, Status.FINALIZING):
        return state
    return _replace(state, pr_number_opened=pr_number, pr_url=pr_url)


@_apply.register
def _(event: ev.PrOpened, state: TaskState) -> TaskState:
    return _pr(state, event.pr_number, event.pr_url)


@_apply.register
def _(event: ev.PrUpdated, state: TaskState) -> TaskState:
    return _pr(state, event.pr_number, event.pr_url)


@_apply.register
def _(event: ev.TaskCompleted, state: TaskState) -> TaskState:
    if state.status is not Status.FINALIZING:
        return state
    return _replace(
        state,
        status=Status.COMPLETED,
        completed_at=event.ts,
        result=event.result,
        pr_url=event.pr_url or state.pr_url,
        branch=event.branch or state.branch,
        current_step=None,
    )


def _end(state: TaskState, status: Status, event: ev.Event, code: str, message: str | None) -> TaskState:
    return _replace(
        state,
        status=status,
        completed_at=event.ts,
        error_code=code,
        error_message=message,
        current_step=None,
        pending_approval=None,
    )


@_apply.register
def _(event: ev.TaskFailed, state: TaskState) -> TaskState:
    return _end(state, Status.FAILED, event, event.code, event.message)


@_apply.register
def _(event: ev.TaskCancelled, state: TaskState) -> TaskState:
    return _end(
        state, Status.CANCELLED, event, "CANCELLED", event.reason or f"cancelled by {event.cancelled_by}"
    )


@_apply.register
def _(event: ev.TaskTimedOut, state: TaskState) -> TaskState:
    return _end(state, Status.TIMED_OUT, event, "TIMED_OUT", event.message)
