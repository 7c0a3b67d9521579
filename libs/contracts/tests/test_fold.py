"""The task state machine (DESIGN §3): every transition, every ignored event, nudges, cost, cursors."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from bgagent_contracts import (
    EVENT_TYPES,
    TERMINAL_STATUSES,
    TRANSITIONS,
    AgentFinished,
    AgentTurn,
    ApprovalDecided,
    ApprovalExpired,
    ApprovalRequested,
    CancelRequested,
    CostUpdated,
    Event,
    Milestone,
    NudgeAcknowledged,
    NudgeRequested,
    PolicyDenied,
    PrOpened,
    PrUpdated,
    ReviewPosted,
    Status,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskStarted,
    TaskSubmitted,
    TaskTimedOut,
    TaskType,
    ToolCalled,
    ToolResult,
    TraceStored,
    WorkspaceReady,
    evolve,
    fold,
    fold_recorded,
)

NON_TERMINAL = [s for s in Status if not s.terminal]
TERMINAL = [s for s in Status if s.terminal]
STARTED = [Status.HYDRATING, Status.RUNNING, Status.AWAITING_APPROVAL, Status.FINALIZING]
ENDINGS = [
    (TaskFailed, {"code": "BOOM", "message": "it broke"}, Status.FAILED, "BOOM", "it broke"),
    (TaskCancelled, {"cancelled_by": "bob", "reason": "stop"}, Status.CANCELLED, "CANCELLED", "stop"),
    (TaskTimedOut, {"limit": "wall_clock", "message": "slow"}, Status.TIMED_OUT, "TIMED_OUT", "slow"),
]


def _has_attempt(cls: type[Any]) -> bool:
    return any(f.name == "attempt" for f in msgspec.structs.fields(cls))


def _apply_all(state: Any, events: list[Event]) -> Any:
    for event in events:
        state = evolve(state, event)
    return state


# --- creation --------------------------------------------------------------------------------------


def test_task_submitted_creates_a_submitted_state(make: Any) -> None:
    event = make(
        TaskSubmitted,
        user_id="alice",
        repo="acme/widgets",
        task_type=TaskType.PR_ITERATION,
        issue_number=None,
        pr_number=7,
        description="fix the flaky test",
        max_turns=12,
        max_budget_usd=2.5,
        trace=True,
        channel="github",
    )
    state = evolve(None, event)
    assert state is not None
    assert state.status is Status.SUBMITTED
    assert (state.task_id, state.user_id, state.repo) == (make.task_id, "alice", "acme/widgets")
    assert state.task_type is TaskType.PR_ITERATION
    assert (state.pr_number, state.issue_number, state.description) == (7, None, "fix the flaky test")
    assert (state.max_turns, state.max_budget_usd, state.trace, state.channel) == (12, 2.5, True, "github")
    assert state.created_at == event.ts == state.updated_at == state.last_event_at
    assert state.last_event_type == "task_submitted"
    assert (state.attempt, state.turn, state.cost_usd, state.started_at) == (0, 0, 0.0, None)
    assert not state.terminal
    assert state.duration_s is None


@pytest.mark.parametrize("cls", [c for c in EVENT_TYPES if c is not TaskSubmitted], ids=lambda c: c.__name__)
def test_events_before_task_submitted_are_ignored(make: Any, cls: type[Any]) -> None:
    assert evolve(None, make(cls)) is None


def test_a_log_that_starts_before_submission_still_folds(make: Any) -> None:
    events = [make(Milestone, attempt=0, name="early"), *make.path_to(Status.RUNNING)]
    state = fold(events)
    assert state is not None
    assert state.status is Status.RUNNING
    assert state.last_milestone is None


def test_a_second_task_submitted_is_ignored(make: Any) -> None:
    state = make.state(Status.RUNNING)
    again = make(TaskSubmitted, user_id="mallory", repo="evil/repo")
    assert evolve(state, again) is state


def test_an_event_of_another_task_is_ignored(make: Any) -> None:
    state = make.state(Status.RUNNING)
    other = make(TaskFailed, task_id=make.new_id(), code="X", message="not yours")
    assert evolve(state, other) is state


# --- the happy path ---------------------------------------------------------------------------------


def test_happy_path_submitted_hydrating_running_finalizing_completed(make: Any) -> None:
    submitted = make(TaskSubmitted, user_id="alice", repo="acme/widgets")
    started = make(TaskStarted, attempt=1, runner_id="runner-a")
    ready = make(WorkspaceReady, attempt=1, branch="bgagent/x", base_branch="main")
    finished = make(AgentFinished, attempt=1, turns=4, stop_reason="end_turn")
    completed = make(TaskCompleted, attempt=1, result="pr_opened", pr_url="https://gh/pr/3", head_sha="abc")

    s0 = evolve(None, submitted)
    s1 = evolve(s0, started)
    assert s1 is not None
    assert s1.status is Status.HYDRATING
    assert (s1.attempt, s1.runner_id, s1.started_at) == (1, "runner-a", started.ts)
    assert s1.current_step == "preparing workspace"

    s2 = evolve(s1, ready)
    assert s2 is not None
    assert s2.status is Status.RUNNING
    assert s2.branch == "bgagent/x"

    s3 = evolve(s2, finished)
    assert s3 is not None
    assert s3.status is Status.FINALIZING
    assert s3.turn == 4

    s4 = evolve(s3, completed)
    assert s4 is not None
    assert s4.status is Status.COMPLETED
    assert s4.terminal
    assert (s4.result, s4.pr_url, s4.completed_at) == ("pr_opened", "https://gh/pr/3", completed.ts)
    assert s4.branch == "bgagent/x"  # the completion event did not name one: kept
    assert s4.current_step is None
    assert s4.duration_s == (completed.ts - submitted.ts).total_seconds()
    assert (s4.last_event_type, s4.updated_at) == ("task_completed", completed.ts)


def test_completion_prefers_the_branch_and_pr_it_names(make: Any) -> None:
    state = make.state(Status.FINALIZING)
    state = evolve(state, make(PrOpened, attempt=1, pr_number=5, pr_url="https://gh/pr/5", branch="b"))
    done = evolve(state, make(TaskCompleted, attempt=1, result="pr_opened", branch="final"))
    assert done is not None
    assert (done.branch, done.pr_url, done.pr_number_opened) == ("final", "https://gh/pr/5", 5)


# --- approvals -------------------------------------------------------------------------------------


def test_approval_requested_moves_running_to_awaiting_approval(make: Any) -> None:
    state = make.state(Status.RUNNING)
    request = make(ApprovalRequested, attempt=1, request_id="req-9", tool_name="bash", timeout_s=30)
    waiting = evolve(state, request)
    assert waiting is not None
    assert waiting.status is Status.AWAITING_APPROVAL
    assert waiting.pending_approval == "req-9"
    assert waiting.current_step == "awaiting approval for bash"


@pytest.mark.parametrize("how", ["approve", "deny", "expired"])
def test_approval_resolution_returns_to_running(make: Any, how: str) -> None:
    state = make.state(Status.AWAITING_APPROVAL)
    if how == "expired":
        event: Event = make(ApprovalExpired, attempt=1, request_id="req-1")
    else:
        event = make(ApprovalDecided, request_id="req-1", decision=how, decided_by="alice")
    running = evolve(state, event)
    assert running is not None
    assert running.status is Status.RUNNING
    assert running.pending_approval is None


@pytest.mark.parametrize("cls", [ApprovalDecided, ApprovalExpired], ids=lambda c: c.__name__)
def test_approval_resolution_for_another_request_is_ignored(make: Any, cls: type[Any]) -> None:
    state = make.state(Status.AWAITING_APPROVAL)
    assert evolve(state, make(cls, request_id="req-other", attempt=1)) is state


@pytest.mark.parametrize("cls", [ApprovalDecided, ApprovalExpired], ids=lambda c: c.__name__)
def test_approval_resolution_without_a_pending_request_is_ignored(make: Any, cls: type[Any]) -> None:
    state = make.state(Status.RUNNING)
    assert evolve(state, make(cls, request_id="req-1", attempt=1)) is state


@pytest.mark.parametrize("status", [Status.HYDRATING, Status.AWAITING_APPROVAL, Status.FINALIZING])
def test_approval_requested_outside_running_is_ignored(make: Any, status: Status) -> None:
    state = make.state(status)
    request = make(ApprovalRequested, attempt=1, request_id="req-2", tool_name="bash", timeout_s=5)
    assert evolve(state, request) is state


# --- endings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", NON_TERMINAL)
@pytest.mark.parametrize(
    ("cls", "fields", "expected", "code", "message"), ENDINGS, ids=["failed", "cancelled", "timed_out"]
)
def test_any_non_terminal_state_can_end(
    make: Any,
    status: Status,
    cls: type[Any],
    fields: dict[str, Any],
    expected: Status,
    code: str,
    message: str,
) -> None:
    state = make.state(status)
    ending = make(cls, attempt=state.attempt if status is not Status.SUBMITTED else None, **fields)
    ended = evolve(state, ending)
    assert ended is not None
    assert ended.status is expected
    assert ended.terminal
    assert (ended.error_code, ended.error_message) == (code, message)
    assert ended.completed_at == ending.ts
    assert ended.current_step is None
    assert ended.pending_approval is None
    assert expected in TRANSITIONS[status]


def test_cancel_without_reason_says_who_cancelled(make: Any) -> None:
    state = make.state(Status.SUBMITTED)
    ended = evolve(state, make(TaskCancelled, cancelled_by="alice"))
    assert ended is not None
    assert ended.error_message == "cancelled by alice"


@pytest.mark.parametrize("status", STARTED)
def test_reconciler_failure_without_attempt_ends_a_started_task(make: Any, status: Status) -> None:
    state = make.state(status, attempt=2)
    failed = evolve(state, make(TaskFailed, actor="reconciler", code="RUNNER_LOST", message="gone"))
    assert failed is not None
    assert failed.status is Status.FAILED
    assert failed.error_code == "RUNNER_LOST"


# --- retries: attempt n+1 --------------------------------------------------------------------------


@pytest.mark.parametrize("status", STARTED)
def test_next_attempt_restarts_from_hydrating(make: Any, status: Status) -> None:
    first = make.state(status)
    state = evolve(first, make(NudgeRequested, nudge_id="n1", requested_by="alice", message="hi"))
    state = evolve(state, make(CancelRequested, requested_by="alice"))
    restarted = evolve(state, make(TaskStarted, attempt=2, runner_id="runner-b"))
    assert restarted is not None
    assert restarted.status is Status.HYDRATING
    assert (restarted.attempt, restarted.runner_id) == (2, "runner-b")
    assert restarted.turn == 0
    assert restarted.pending_approval is None
    assert restarted.started_at == first.started_at  # the task started with attempt 1
    assert restarted.cancel_requested  # a cancel outlives the lost runner
    assert [n.nudge_id for n in restarted.pending_nudges] == ["n1"]
    assert Status.HYDRATING in TRANSITIONS[status]


@pytest.mark.parametrize("attempt", [0, 1], ids=["older", "duplicate"])
def test_duplicate_or_older_task_started_is_ignored(make: Any, attempt: int) -> None:
    state = make.state(Status.RUNNING)
    assert evolve(state, make(TaskStarted, attempt=attempt, runner_id="runner-z")) is state


def _runner_event_classes() -> list[type[Any]]:
    return [c for c in EVENT_TYPES if _has_attempt(c) and c is not TaskStarted]


@pytest.mark.parametrize("cls", _runner_event_classes(), ids=lambda c: c.__name__)
@pytest.mark.parametrize("status", [Status.RUNNING, Status.AWAITING_APPROVAL, Status.FINALIZING])
def test_events_of_a_stale_attempt_are_ignored(make: Any, cls: type[Any], status: Status) -> None:
    state = make.state(status, attempt=2)
    stale = make(cls, attempt=1, request_id="req-1", nudge_ids=(), turn=99, turns=99)
    assert evolve(state, stale) is state


def test_stale_runner_cannot_end_the_new_attempt(make: Any) -> None:
    state = make.state(Status.RUNNING, attempt=2)
    for event in (
        make(TaskFailed, attempt=1, code="X", message="old runner"),
        make(TaskCancelled, attempt=1, cancelled_by="runner"),
        make(TaskTimedOut, attempt=1, limit="wall_clock", message="old"),
        make(AgentFinished, attempt=1, turns=1, stop_reason="end_turn"),
    ):
        assert evolve(state, event) is state


# --- events in states where they mean nothing ----------------------------------------------------


@pytest.mark.parametrize("status", [s for s in NON_TERMINAL if s is not Status.HYDRATING])
def test_workspace_ready_outside_hydrating_is_ignored(make: Any, status: Status) -> None:
    state = make.state(status)
    assert evolve(state, make(WorkspaceReady, attempt=state.attempt, branch="other")) is state


@pytest.mark.parametrize("status", [s for s in NON_TERMINAL if s is not Status.FINALIZING])
def test_task_completed_outside_finalizing_is_ignored(make: Any, status: Status) -> None:
    state = make.state(status)
    assert evolve(state, make(TaskCompleted, attempt=state.attempt, result="pr_opened")) is state


@pytest.mark.parametrize("status", [s for s in NON_TERMINAL if s is not Status.RUNNING])
def test_agent_finished_outside_running_is_ignored(make: Any, status: Status) -> None:
    state = make.state(status)
    event = make(AgentFinished, attempt=state.attempt, turns=3, stop_reason="end_turn")
    assert evolve(state, event) is state


@pytest.mark.parametrize("cls", [AgentTurn, ToolCalled, ToolResult], ids=lambda c: c.__name__)
@pytest.mark.parametrize("status", [Status.HYDRATING, Status.AWAITING_APPROVAL, Status.FINALIZING])
def test_agent_work_outside_running_is_ignored(make: Any, cls: type[Any], status: Status) -> None:
    state = make.state(status)
    assert evolve(state, make(cls, attempt=1, turn=5)) is state


@pytest.mark.parametrize("cls", [Milestone, CostUpdated, PrOpened, PrUpdated], ids=lambda c: c.__name__)
def test_runner_progress_before_any_attempt_is_ignored(make: Any, cls: type[Any]) -> None:
    state = make.state(Status.SUBMITTED)
    assert evolve(state, make(cls, attempt=0)) is state


@pytest.mark.parametrize("cls", [PrOpened, PrUpdated], ids=lambda c: c.__name__)
def test_pr_events_while_hydrating_are_ignored(make: Any, cls: type[Any]) -> None:
    state = make.state(Status.HYDRATING)
    assert evolve(state, make(cls, attempt=1, pr_number=1, pr_url="u", branch="b")) is state


def test_a_second_cancel_request_is_ignored(make: Any) -> None:
    state = evolve(make.state(Status.RUNNING), make(CancelRequested, requested_by="alice"))
    assert state is not None
    assert state.cancel_requested
    assert state.status is Status.RUNNING
    assert evolve(state, make(CancelRequested, requested_by="bob")) is state


# --- terminal states are final ---------------------------------------------------------------------


@pytest.mark.parametrize("status", TERMINAL)
def test_nothing_moves_a_terminal_task(make: Any, status: Status) -> None:
    state = make.state(status)
    attempt = state.attempt
    candidates: list[Event] = [
        make(cls, attempt=attempt, request_id="req-1", nudge_ids=("n-1",)) for cls in EVENT_TYPES
    ]
    candidates.append(make(TaskStarted, attempt=attempt + 1, runner_id="runner-new"))
    candidates.append(make(TaskFailed, code="RUNNER_LOST", message="late reconciler"))
    for event in candidates:
        assert evolve(state, event) is state, type(event).__name__


def test_a_nudge_after_completion_is_ignored(make: Any) -> None:
    state = make.state(Status.COMPLETED)
    nudge = make(NudgeRequested, nudge_id="late", requested_by="alice", message="one more thing")
    assert evolve(state, nudge) is state


# --- TRANSITIONS is exactly what the fold does ------------------------------------------------------


def test_transitions_table_covers_every_status_and_terminals_are_final() -> None:
    assert set(TRANSITIONS) == set(Status)
    for status in Status:
        assert (TRANSITIONS[status] == frozenset()) is status.terminal
    assert frozenset(TERMINAL) == TERMINAL_STATUSES


def test_every_declared_transition_is_reachable_and_no_other(make: Any) -> None:
    """Try every event type (current and next attempt) in every non-terminal state."""
    observed: set[tuple[Status, Status]] = set()
    for status in NON_TERMINAL:
        state = make.state(status)
        attempts = [state.attempt, state.attempt + 1]
        candidates = [
            make(cls, attempt=a, request_id="req-1", nudge_ids=("n-1",), turn=1, turns=1)
            for cls in EVENT_TYPES
            for a in attempts
        ]
        for event in candidates:
            new = evolve(state, event)
            assert new is not None
            if new is not state and (new.status is not state.status or isinstance(event, TaskStarted)):
                observed.add((state.status, new.status))
    declared = {(src, dst) for src, targets in TRANSITIONS.items() for dst in targets}
    assert observed == declared


# --- nudges ----------------------------------------------------------------------------------------


def test_nudges_queue_in_order_and_deduplicate_by_id(make: Any) -> None:
    state = make.state(Status.RUNNING)
    first = make(NudgeRequested, nudge_id="n1", requested_by="alice", message="use pytest")
    second = make(NudgeRequested, nudge_id="n2", requested_by="bob", message="and ruff")
    state = _apply_all(state, [first, second])
    assert [(n.nudge_id, n.message, n.requested_by) for n in state.pending_nudges] == [
        ("n1", "use pytest", "alice"),
        ("n2", "and ruff", "bob"),
    ]
    assert state.pending_nudges[0].ts == first.ts
    again = make(NudgeRequested, nudge_id="n1", requested_by="alice", message="use pytest")
    assert evolve(state, again) is state


def test_nudges_are_accepted_while_queued(make: Any) -> None:
    state = evolve(make.state(Status.SUBMITTED), make(NudgeRequested, nudge_id="n1", message="early"))
    assert state is not None
    assert [n.nudge_id for n in state.pending_nudges] == ["n1"]


def test_acknowledged_nudges_leave_the_pending_list(make: Any) -> None:
    state = make.state(Status.RUNNING)
    state = _apply_all(
        state, [make(NudgeRequested, nudge_id=n, message=f"msg {n}") for n in ("n1", "n2", "n3")]
    )
    state = evolve(state, make(NudgeAcknowledged, attempt=1, nudge_ids=("n1", "n3"), turn=2))
    assert [n.nudge_id for n in state.pending_nudges] == ["n2"]
    assert state.acknowledged_nudges == 2
    assert state.last_event_type == "nudge_acknowledged"


def test_acknowledging_unknown_nudges_is_ignored(make: Any) -> None:
    state = evolve(make.state(Status.RUNNING), make(NudgeRequested, nudge_id="n1", message="x"))
    assert evolve(state, make(NudgeAcknowledged, attempt=1, nudge_ids=("zz",), turn=1)) is state


# --- turns and cost ----------------------------------------------------------------------------------


def test_turns_only_move_forward(make: Any) -> None:
    state = make.state(Status.RUNNING)
    state = evolve(state, make(AgentTurn, attempt=1, turn=3, model="claude-sonnet-4"))
    assert (state.turn, state.current_step) == (3, "turn 3")
    state = evolve(state, make(AgentTurn, attempt=1, turn=2, model="claude-sonnet-4"))
    assert state.turn == 3
    finished = evolve(state, make(AgentFinished, attempt=1, turns=2, stop_reason="end_turn"))
    assert finished.turn == 3
    finished = evolve(state, make(AgentFinished, attempt=1, turns=7, stop_reason="end_turn"))
    assert finished.turn == 7


def test_tool_events_describe_the_current_step(make: Any) -> None:
    state = make.state(Status.RUNNING)
    long_input = "pytest -q " + "x" * 200
    called = evolve(state, make(ToolCalled, attempt=1, tool_name="bash", input_preview=long_input))
    assert called.current_step == f"bash: {long_input[:80]}"
    done = evolve(called, make(ToolResult, attempt=1, tool_name="bash", is_error=False))
    assert done.current_step == "bash finished"
    milestone = evolve(done, make(Milestone, attempt=1, name="tests_passed", detail=None))
    assert (milestone.last_milestone, milestone.current_step) == ("tests_passed", "tests_passed")


def test_informational_runner_events_become_the_last_event(make: Any) -> None:
    running = make.state(Status.RUNNING)
    denied = evolve(running, make(PolicyDenied, attempt=1, tool_name="bash", rule_id="no-force-push"))
    assert denied.last_event_type == "policy_denied"
    assert denied.current_step == "bash denied by policy (no-force-push)"
    finalizing = make.state(Status.FINALIZING)
    stored = evolve(finalizing, make(TraceStored, attempt=1))
    assert (stored.status, stored.last_event_type) == (Status.FINALIZING, "trace_stored")
    reviewed = evolve(finalizing, make(ReviewPosted, attempt=1))
    assert reviewed.last_event_type == "review_posted"


@pytest.mark.parametrize("status", STARTED)
def test_cost_follows_the_running_total_and_tokens_add_up(make: Any, status: Status) -> None:
    state = make.state(status)
    costs = [
        make(
            CostUpdated,
            attempt=1,
            turn=1,
            input_tokens=100,
            output_tokens=10,
            cost_usd=0.1,
            total_cost_usd=0.1,
        ),
        make(
            CostUpdated,
            attempt=1,
            turn=2,
            input_tokens=50,
            output_tokens=5,
            cost_usd=0.05,
            total_cost_usd=0.15,
        ),
    ]
    state = _apply_all(state, costs)
    assert state.cost_usd == pytest.approx(0.15)
    assert (state.input_tokens, state.output_tokens) == (150, 15)


def test_a_restart_resets_turns_but_keeps_spend(make: Any) -> None:
    state = make.state(Status.RUNNING)
    state = _apply_all(
        state,
        [
            make(AgentTurn, attempt=1, turn=4, model="m"),
            make(
                CostUpdated,
                attempt=1,
                turn=4,
                input_tokens=10,
                output_tokens=1,
                cost_usd=1.0,
                total_cost_usd=1.0,
            ),
            make(TaskStarted, attempt=2, runner_id="runner-b"),
        ],
    )
    assert (state.turn, state.cost_usd, state.input_tokens) == (0, 1.0, 10)


# --- fold_recorded -----------------------------------------------------------------------------------


def test_fold_recorded_tracks_last_seq_and_event_count(make: Any) -> None:
    events = make.path_to(Status.COMPLETED)
    records = make.recorded(events, first_seq=10, step=3)
    state = fold_recorded(records)
    assert state is not None
    assert state.last_seq == records[-1].seq
    assert state.event_count == len(records)
    assert msgspec.structs.replace(state, last_seq=0, event_count=0) == fold(events)


def test_fold_recorded_counts_ignored_events_and_skips_replayed_records(make: Any) -> None:
    events = make.path_to(Status.RUNNING)
    records = make.recorded(events)
    state = fold_recorded(records)
    ignored = make.recorded([make(TaskStarted, attempt=1, runner_id="dup")], first_seq=len(records) + 1)
    state2 = fold_recorded(ignored, state)
    assert state2 is not None
    assert (state2.last_seq, state2.event_count) == (len(records) + 1, len(records) + 1)
    assert state2.status is Status.RUNNING
    assert fold_recorded(records, state2) == state2  # replaying old records changes nothing


def test_fold_recorded_resumes_from_a_state(make: Any) -> None:
    records = make.recorded(make.path_to(Status.FINALIZING))
    whole = fold_recorded(records)
    resumed = fold_recorded(records[3:], fold_recorded(records[:3]))
    assert resumed == whole


def test_fold_recorded_ignores_records_before_submission(make: Any) -> None:
    stray = make(Milestone, attempt=0, name="stray")
    records = make.recorded([stray, *make.path_to(Status.SUBMITTED)])
    state = fold_recorded(records)
    assert state is not None
    assert (state.last_seq, state.event_count) == (2, 1)
