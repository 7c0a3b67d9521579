"""Every fact the system records, as frozen msgspec Structs in one tagged union.

The tag of each struct is its event type and its subject suffix
(``bgagent.task.<task_id>.<type>``). Tags are stable wire names: never rename
one, never change the type of an existing field, add new fields only with a
default. Events do not forbid unknown fields, so an older reader skips what a
newer writer added.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Literal

import msgspec


class TaskType(enum.StrEnum):
    NEW_TASK = "new_task"
    PR_ITERATION = "pr_iteration"
    PR_REVIEW = "pr_review"


class Actor(enum.StrEnum):
    """Who appended an event: the writer table of DESIGN §3."""

    ADMISSION = "admission"
    RUNNER = "runner"
    RECONCILER = "reconciler"


AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
"""A timestamp with its offset: decoding refuses a naive one (it would break duration arithmetic)."""

MAX_COUNT = 2**53 - 1
"""Counters (turns, tokens, sizes, attempts) fit an exact JSON number and a Postgres bigint."""
MAX_NUMBER = 2**31 - 1
"""Issue and PR numbers fit a 32-bit integer (GitHub's and the read model's)."""
MAX_USD = 1_000_000.0

Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
"""A non-negative counter; decoding refuses a negative or absurdly large one."""
Number = Annotated[int, msgspec.Meta(ge=1, le=MAX_NUMBER)]
"""An issue or pull request number."""
Usd = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_USD)]
"""A finite, non-negative amount of dollars."""
Name = Annotated[str, msgspec.Meta(max_length=1024, pattern=r"^[^\x00-\x1f\x7f]*$")]
"""An identifier or name (ids, actors, users, repositories): one line, no control characters."""
ApprovalTimeout = Annotated[int, msgspec.Meta(ge=30, le=3600)]
"""Seconds a gated tool call waits for a human: 30 s to 1 h."""


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    task_id: Name
    event_id: Name
    ts: AwareDatetime
    actor: Name


class _RunnerEvent(_Event, frozen=True, kw_only=True):
    attempt: Count


# --- written by admission -------------------------------------------------


class TaskSubmitted(_Event, frozen=True, kw_only=True, tag="task_submitted"):
    user_id: Name
    repo: Name
    task_type: TaskType = TaskType.NEW_TASK
    issue_number: Number | None = None
    pr_number: Number | None = None
    description: str | None = None
    max_turns: Count = 100
    max_budget_usd: Usd | None = None
    trace: bool = False
    channel: Name = "api"
    idempotency_key: str | None = None
    network: bool = False
    """The agent's commands may reach the network (granted only where the operator allows it)."""
    initial_approvals: tuple[Name, ...] = ()
    """Scopes pre-approved at submit (``bgagent_contracts.scopes``): the allow-list's first entries."""
    approval_timeout_s: ApprovalTimeout = 300
    """How long a gated tool call waits for a decision (a rule's own timeout may be shorter)."""


class CancelRequested(_Event, frozen=True, kw_only=True, tag="cancel_requested"):
    requested_by: str
    reason: str | None = None


class NudgeRequested(_Event, frozen=True, kw_only=True, tag="nudge_requested"):
    nudge_id: str
    requested_by: str
    message: str


class ApprovalDecided(_Event, frozen=True, kw_only=True, tag="approval_decided"):
    request_id: str
    decision: Literal["approve", "deny"]
    decided_by: str
    scope: str | None = None
    reason: str | None = None


# --- written by the runner ------------------------------------------------


class TaskStarted(_RunnerEvent, frozen=True, kw_only=True, tag="task_started"):
    runner_id: str
    sandbox: str | None = None
    """How this attempt's agent commands are isolated: ``"bwrap"`` or ``"off"`` (None: not recorded)."""
    network: bool | None = None
    """Whether this attempt's agent commands can reach the network (None: not recorded)."""


class WorkspaceReady(_RunnerEvent, frozen=True, kw_only=True, tag="workspace_ready"):
    branch: str
    base_branch: str | None = None
    head_sha: str | None = None


class Milestone(_RunnerEvent, frozen=True, kw_only=True, tag="milestone"):
    name: str
    detail: str | None = None


class AgentTurn(_RunnerEvent, frozen=True, kw_only=True, tag="agent_turn"):
    turn: Count
    model: str
    text_preview: str | None = None
    tool_calls: Count = 0
    stop_reason: str | None = None


class ToolCalled(_RunnerEvent, frozen=True, kw_only=True, tag="tool_called"):
    turn: Count
    tool_use_id: str
    tool_name: str
    input_preview: str


class ToolResult(_RunnerEvent, frozen=True, kw_only=True, tag="tool_result"):
    turn: Count
    tool_use_id: str
    tool_name: str
    is_error: bool
    output_preview: str
    duration_ms: Count = 0


class CostUpdated(_RunnerEvent, frozen=True, kw_only=True, tag="cost_updated"):
    turn: Count
    input_tokens: Count
    output_tokens: Count
    cache_read_tokens: Count = 0
    cache_write_tokens: Count = 0
    cost_usd: Usd
    total_cost_usd: Usd


class NudgeAcknowledged(_RunnerEvent, frozen=True, kw_only=True, tag="nudge_acknowledged"):
    nudge_ids: tuple[str, ...]
    turn: Count


class PolicyDenied(_RunnerEvent, frozen=True, kw_only=True, tag="policy_denied"):
    tool_use_id: str
    tool_name: str
    rule_id: str
    reason: str


class ApprovalRequested(_RunnerEvent, frozen=True, kw_only=True, tag="approval_requested"):
    request_id: str
    tool_use_id: str
    tool_name: str
    input_preview: str
    """Sanitised: control and ANSI characters stripped, secrets redacted."""
    rule_id: str
    """The first of ``rule_ids``."""
    timeout_s: Count
    rule_ids: tuple[str, ...] = ()
    severity: str | None = None
    category: str | None = None
    input_sha256: str = ""
    """sha256 of the full input (``bgagent_policy.input_sha256``): the same call, across attempts."""
    deadline: AwareDatetime | None = None


class ApprovalExpired(_RunnerEvent, frozen=True, kw_only=True, tag="approval_expired"):
    request_id: str


class AgentFinished(_RunnerEvent, frozen=True, kw_only=True, tag="agent_finished"):
    turns: Count
    stop_reason: str
    summary: str | None = None


class PrOpened(_RunnerEvent, frozen=True, kw_only=True, tag="pr_opened"):
    pr_number: Number
    pr_url: str
    branch: str


class PrUpdated(_RunnerEvent, frozen=True, kw_only=True, tag="pr_updated"):
    pr_number: Number
    pr_url: str
    branch: str


class ReviewPosted(_RunnerEvent, frozen=True, kw_only=True, tag="review_posted"):
    pr_number: Number
    review_url: str


class TraceStored(_RunnerEvent, frozen=True, kw_only=True, tag="trace_stored"):
    object_name: str
    size_bytes: Count


class TaskCompleted(_RunnerEvent, frozen=True, kw_only=True, tag="task_completed"):
    result: str
    """What the task produced: ``pr_opened``, ``pr_updated``, ``branch_pushed``, ``no_changes``, …"""
    branch: str | None = None
    pr_url: str | None = None
    head_sha: str | None = None


# --- written by the reconciler ----------------------------------------------


class RunnerLost(_Event, frozen=True, kw_only=True, tag="runner_lost"):
    """The runner of ``attempt`` stopped heartbeating: the task waits for attempt n+1."""

    attempt: Count
    runner_id: Name | None = None
    detail: str = ""


class TaskRequeued(_Event, frozen=True, kw_only=True, tag="task_requeued"):
    """The task's work message is gone while attempts remain: this message is its new one (the
    runner's work consumer pulls ``task_submitted`` and ``task_requeued``)."""

    attempt: Count
    """The attempt that was current when the task was requeued (0: never started)."""
    reason: str = ""


# --- terminal events more than one writer may append -----------------------


class TaskFailed(_Event, frozen=True, kw_only=True, tag="task_failed"):
    code: str
    message: str
    attempt: Count | None = None
    """The runner attempt that failed; ``None`` when written by the reconciler."""


class TaskCancelled(_Event, frozen=True, kw_only=True, tag="task_cancelled"):
    cancelled_by: str
    reason: str | None = None
    attempt: Count | None = None
    """The runner attempt that stopped; ``None`` when admission cancelled a queued task."""


class TaskTimedOut(_Event, frozen=True, kw_only=True, tag="task_timed_out"):
    limit: str
    message: str
    attempt: Count | None = None


Event = (
    TaskSubmitted
    | CancelRequested
    | NudgeRequested
    | ApprovalDecided
    | TaskStarted
    | WorkspaceReady
    | Milestone
    | AgentTurn
    | ToolCalled
    | ToolResult
    | CostUpdated
    | NudgeAcknowledged
    | PolicyDenied
    | ApprovalRequested
    | ApprovalExpired
    | AgentFinished
    | PrOpened
    | PrUpdated
    | ReviewPosted
    | TraceStored
    | TaskCompleted
    | RunnerLost
    | TaskRequeued
    | TaskFailed
    | TaskCancelled
    | TaskTimedOut
)

EVENT_TYPES: tuple[type[Event], ...] = (
    TaskSubmitted,
    CancelRequested,
    NudgeRequested,
    ApprovalDecided,
    TaskStarted,
    WorkspaceReady,
    Milestone,
    AgentTurn,
    ToolCalled,
    ToolResult,
    CostUpdated,
    NudgeAcknowledged,
    PolicyDenied,
    ApprovalRequested,
    ApprovalExpired,
    AgentFinished,
    PrOpened,
    PrUpdated,
    ReviewPosted,
    TraceStored,
    TaskCompleted,
    RunnerLost,
    TaskRequeued,
    TaskFailed,
    TaskCancelled,
    TaskTimedOut,
)


def event_type(event: Event) -> str:
    """The stable wire tag of an event (also its subject suffix)."""
    tag = type(event).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


EVENT_TYPE_NAMES: frozenset[str] = frozenset(str(cls.__struct_config__.tag) for cls in EVENT_TYPES)

WORK_EVENT_TYPES: tuple[str, ...] = ("task_submitted", "task_requeued")
"""The event types the runners' work consumer delivers: each one asks a runner to claim the task."""

TERMINAL_EVENT_TYPES: frozenset[str] = frozenset(
    {"task_completed", "task_failed", "task_cancelled", "task_timed_out"}
)


class Recorded(msgspec.Struct, frozen=True, kw_only=True):
    """An event as stored: its stream sequence (the cursor) and subject."""

    seq: int
    subject: str
    event: Event
