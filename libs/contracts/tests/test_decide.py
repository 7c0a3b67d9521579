"""Pure decisions: cancel, nudge, and what the runner does between turns."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from bgagent_contracts import (
    AgentTurn,
    CancelRequested,
    ContractsError,
    CostUpdated,
    DecisionError,
    InvalidCommandError,
    NudgeRequested,
    Status,
    TaskAlreadyTerminalError,
    TaskCancelled,
    TaskFailed,
    TaskNotFoundError,
    TaskSubmitted,
    TaskTimedOut,
    between_turns,
    decide_cancel,
    decide_nudge,
    evolve,
    fold,
)
from bgagent_contracts.decide import MAX_NUDGE_CHARS

STARTED = [Status.HYDRATING, Status.RUNNING, Status.AWAITING_APPROVAL, Status.FINALIZING]
TERMINAL = [s for s in Status if s.terminal]


def _cancel(make: Any, state: Any, **kw: Any) -> Any:
    args = {
        "task_id": make.task_id,
        "user_id": "alice",
        "reason": "wrong repo",
        "now": make.now(),
        "event_id": "E1",
    }
    args.update(kw)
    return decide_cancel(state, **args)


def _nudge(make: Any, state: Any, message: str) -> NudgeRequested:
    return decide_nudge(
        state,
        task_id=make.task_id,
        user_id="bob",
        message=message,
        now=make.now(),
        event_id="E2",
        nudge_id="N1",
    )


# --- cancel --------------------------------------------------------------------------------------


def test_cancel_of_a_queued_task_cancels_it_at_once(make: Any) -> None:
    state = make.state(Status.SUBMITTED)
    now = make.now()
    event = _cancel(make, state, now=now)
    assert isinstance(event, TaskCancelled)
    assert (event.task_id, event.event_id, event.ts, event.actor) == (make.task_id, "E1", now, "admission")
    assert (event.cancelled_by, event.reason, event.attempt) == ("alice", "wrong repo", None)
    ended = evolve(state, event)
    assert ended is not None
    assert ended.status is Status.CANCELLED


@pytest.mark.parametrize("status", STARTED)
def test_cancel_of_a_started_task_requests_cancellation(make: Any, status: Status) -> None:
    state = make.state(status)
    event = _cancel(make, state)
    assert isinstance(event, CancelRequested)
    assert (event.requested_by, event.reason, event.actor) == ("alice", "wrong repo", "admission")
    after = evolve(state, event)
    assert after is not None
    assert after.cancel_requested
    assert after.status is status  # the runner ends it


def test_cancel_when_already_requested_decides_nothing(make: Any) -> None:
    state = evolve(make.state(Status.RUNNING), make(CancelRequested, requested_by="bob"))
    assert _cancel(make, state) is None


@pytest.mark.parametrize("status", TERMINAL)
def test_cancel_of_a_terminal_task_is_refused(make: Any, status: Status) -> None:
    with pytest.raises(TaskAlreadyTerminalError, match=status.value) as info:
        _cancel(make, make.state(status))
    assert info.value.code == "TASK_ALREADY_TERMINAL"


def test_cancel_of_a_missing_task_is_not_found(make: Any) -> None:
    with pytest.raises(TaskNotFoundError, match=make.task_id) as info:
        _cancel(make, None)
    assert info.value.code == "NOT_FOUND"


# --- nudge ---------------------------------------------------------------------------------------


def test_nudge_is_trimmed_and_recorded(make: Any) -> None:
    state = make.state(Status.RUNNING)
    event = _nudge(make, state, "  please add a test\n")
    assert (event.message, event.nudge_id, event.requested_by, event.event_id) == (
        "please add a test",
        "N1",
        "bob",
        "E2",
    )
    assert event.actor == "admission"


@pytest.mark.parametrize("message", ["", "   ", "\n\t"])
def test_empty_nudge_is_invalid(make: Any, message: str) -> None:
    with pytest.raises(InvalidCommandError, match="message: must not be empty") as info:
        _nudge(make, make.state(Status.RUNNING), message)
    assert info.value.code == "VALIDATION_ERROR"


def test_nudge_length_limit_counts_trimmed_characters(make: Any) -> None:
    state = make.state(Status.RUNNING)
    assert len(_nudge(make, state, "  " + "x" * MAX_NUDGE_CHARS + "  ").message) == 2000
    with pytest.raises(InvalidCommandError, match=r"message: at most 2000 characters \(got 2001\)"):
        _nudge(make, state, "x" * (MAX_NUDGE_CHARS + 1))


@pytest.mark.parametrize("status", TERMINAL)
def test_nudge_of_a_terminal_task_is_refused(make: Any, status: Status) -> None:
    with pytest.raises(TaskAlreadyTerminalError):
        _nudge(make, make.state(status), "hello")


def test_nudge_of_a_missing_task_is_not_found(make: Any) -> None:
    with pytest.raises(TaskNotFoundError):
        _nudge(make, None, "hello")


def test_decision_errors_form_one_tree() -> None:
    for cls in (TaskNotFoundError, TaskAlreadyTerminalError, InvalidCommandError):
        assert issubclass(cls, DecisionError)
        assert issubclass(cls, ContractsError)
    assert DecisionError.code == "CONFLICT"


# --- between turns -------------------------------------------------------------------------------


def _running(
    make: Any, *, max_turns: int = 10, budget: float | None = None, turn: int = 0, cost: float = 0.0
) -> Any:
    events = make.path_to(Status.RUNNING)
    events[0] = make(TaskSubmitted, user_id="alice", repo="r", max_turns=max_turns, max_budget_usd=budget)
    if turn:
        events.append(make(AgentTurn, attempt=1, turn=turn, model="m"))
    if cost:
        events.append(
            make(
                CostUpdated,
                attempt=1,
                turn=turn,
                input_tokens=1,
                output_tokens=1,
                cost_usd=cost,
                total_cost_usd=cost,
            )
        )
    state = fold(events)
    assert state is not None
    assert state.status is Status.RUNNING
    return state


def test_between_turns_with_nothing_to_do(make: Any) -> None:
    decision = between_turns(_running(make, turn=3), now=make.now(), event_id="E3", wall_clock_limit_s=3600)
    assert (decision.cancel, decision.stop, decision.nudges, decision.nudge_ids) == (False, None, (), ())


def test_cancel_comes_before_everything(make: Any) -> None:
    state = _running(make, max_turns=2, turn=2, budget=1.0, cost=5.0)
    state = evolve(state, make(NudgeRequested, nudge_id="n1", message="hi"))
    state = evolve(state, make(CancelRequested, requested_by="alice"))
    decision = between_turns(state, now=make.now(), event_id="E3", wall_clock_limit_s=0)
    assert decision.cancel
    assert (decision.stop, decision.nudges) == (None, ())


def test_a_terminal_state_means_stop_by_cancel(make: Any) -> None:
    decision = between_turns(make.state(Status.FAILED), now=make.now(), event_id="E3")
    assert decision.cancel


def test_max_turns_stops_before_the_next_model_call(make: Any) -> None:
    assert between_turns(_running(make, max_turns=3, turn=2), now=make.now(), event_id="E").stop is None
    now = make.now()
    state = _running(make, max_turns=3, turn=3)
    stop = between_turns(state, now=now, event_id="E4").stop
    assert isinstance(stop, TaskFailed)
    assert (stop.code, stop.attempt, stop.event_id, stop.ts, stop.actor) == (
        "MAX_TURNS",
        1,
        "E4",
        now,
        "runner",
    )
    assert "max turns (3)" in stop.message


def test_budget_stops_when_spent(make: Any) -> None:
    assert between_turns(_running(make, budget=1.0, cost=0.99), now=make.now(), event_id="E").stop is None
    stop = between_turns(_running(make, budget=1.0, cost=1.0), now=make.now(), event_id="E").stop
    assert isinstance(stop, TaskFailed)
    assert stop.code == "MAX_BUDGET"
    assert "$1.00" in stop.message


def test_no_budget_means_no_budget_stop(make: Any) -> None:
    assert between_turns(_running(make, budget=None, cost=1000.0), now=make.now(), event_id="E").stop is None


def test_wall_clock_limit_times_out(make: Any) -> None:
    state = _running(make)
    assert state.started_at is not None
    under = between_turns(
        state, now=state.started_at + timedelta(seconds=59), event_id="E", wall_clock_limit_s=60
    )
    assert under.stop is None
    over = between_turns(
        state, now=state.started_at + timedelta(seconds=60), event_id="E", wall_clock_limit_s=60
    )
    assert isinstance(over.stop, TaskTimedOut)
    assert (over.stop.limit, over.stop.attempt) == ("wall_clock", 1)
    unlimited = between_turns(state, now=state.started_at + timedelta(days=9), event_id="E")
    assert unlimited.stop is None


def test_limits_are_checked_turns_then_budget_then_wall_clock(make: Any) -> None:
    state = _running(make, max_turns=2, turn=2, budget=1.0, cost=2.0)
    late = make.now() + timedelta(days=1)
    assert between_turns(state, now=late, event_id="E", wall_clock_limit_s=1).stop.code == "MAX_TURNS"
    state = _running(make, max_turns=5, turn=2, budget=1.0, cost=2.0)
    assert between_turns(state, now=late, event_id="E", wall_clock_limit_s=1).stop.code == "MAX_BUDGET"
    state = _running(make, max_turns=5, turn=2, budget=3.0, cost=2.0)
    assert isinstance(between_turns(state, now=late, event_id="E", wall_clock_limit_s=1).stop, TaskTimedOut)


def test_pending_nudges_are_handed_over_in_order(make: Any) -> None:
    state = _running(make, turn=1)
    for nudge_id, text in [("n2", "second"), ("n1", "first"), ("n3", "third")]:
        state = evolve(state, make(NudgeRequested, nudge_id=nudge_id, message=text))
    decision = between_turns(state, now=make.now(), event_id="E")
    assert (decision.cancel, decision.stop) == (False, None)
    assert decision.nudges == ("second", "first", "third")
    assert decision.nudge_ids == ("n2", "n1", "n3")
