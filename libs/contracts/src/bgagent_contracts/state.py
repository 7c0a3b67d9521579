"""The folded state of one task."""

from __future__ import annotations

import enum
from datetime import datetime

import msgspec

from .events import TaskType


class Status(enum.StrEnum):
    SUBMITTED = "SUBMITTED"
    HYDRATING = "HYDRATING"
    RUNNING = "RUNNING"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    FINALIZING = "FINALIZING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES: frozenset[Status] = frozenset(
    {Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT}
)

# The legal transitions, as data (the fold is the one place that applies them).
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.SUBMITTED: frozenset({Status.HYDRATING, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT}),
    Status.HYDRATING: frozenset(
        {Status.HYDRATING, Status.RUNNING, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT}
    ),
    Status.RUNNING: frozenset(
        {
            Status.HYDRATING,
            Status.AWAITING_APPROVAL,
            Status.FINALIZING,
            Status.FAILED,
            Status.CANCELLED,
            Status.TIMED_OUT,
        }
    ),
    Status.AWAITING_APPROVAL: frozenset(
        {Status.HYDRATING, Status.RUNNING, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT}
    ),
    Status.FINALIZING: frozenset(
        {Status.HYDRATING, Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT}
    ),
    Status.COMPLETED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
    Status.TIMED_OUT: frozenset(),
}


class PendingNudge(msgspec.Struct, frozen=True, kw_only=True):
    nudge_id: str
    message: str
    requested_by: str
    ts: datetime


class OpenApproval(msgspec.Struct, frozen=True, kw_only=True):
    """An ``approval_requested`` nobody has decided yet (of this attempt or an earlier one)."""

    request_id: str
    tool_name: str
    tool_use_id: str
    input_preview: str
    input_sha256: str
    rule_ids: tuple[str, ...]
    severity: str | None
    deadline: datetime | None
    requested_at: datetime
    attempt: int


class DecidedApproval(msgspec.Struct, frozen=True, kw_only=True):
    request_id: str
    decision: str
    """``approve``, ``deny`` or ``expired``."""
    tool_name: str
    input_sha256: str
    requested_at: datetime
    decided_at: datetime
    decided_by: str | None = None
    scope: str | None = None
    reason: str | None = None


class TaskState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a reader needs to know about a task, derived only from its events."""

    task_id: str
    user_id: str
    repo: str
    task_type: TaskType
    issue_number: int | None
    pr_number: int | None
    description: str | None
    max_turns: int
    max_budget_usd: float | None
    trace: bool
    channel: str
    created_at: datetime
    status: Status = Status.SUBMITTED
    updated_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    attempt: int = 0
    runner_id: str | None = None
    branch: str | None = None
    turn: int = 0
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    last_milestone: str | None = None
    current_step: str | None = None
    pr_number_opened: int | None = None
    pr_url: str | None = None
    result: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    cancel_requested: bool = False
    pending_nudges: tuple[PendingNudge, ...] = ()
    acknowledged_nudges: int = 0
    pending_approval: str | None = None
    """The request the task waits on now (AWAITING_APPROVAL)."""
    approval_timeout_s: int = 300
    approved_scopes: tuple[str, ...] = ()
    """The allow-list: scopes pre-approved at submit and granted by approvals (never ``this_call``)."""
    approval_gates: int = 0
    """``approval_requested`` events of distinct requests (the 50-gate cap)."""
    open_approvals: tuple[OpenApproval, ...] = ()
    decided_approvals: tuple[DecidedApproval, ...] = ()
    waiting_since: datetime | None = None
    """Since when the task waits for a runner after its runner was lost (cleared by task_started)."""
    lost_runner_id: str | None = None
    lost_attempts: int = 0
    """Attempts whose runner was lost (``runner_lost`` events)."""
    requeued_attempt: int | None = None
    """The attempt that was current at the last ``task_requeued`` (one requeue per attempt)."""
    last_event_type: str | None = None
    last_event_at: datetime | None = None
    last_seq: int = 0
    event_count: int = 0

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @property
    def duration_s(self) -> float | None:
        """Wall-clock seconds from submission to the terminal event (None while running)."""
        if self.completed_at is None:
            return None
        return (self.completed_at - self.created_at).total_seconds()
