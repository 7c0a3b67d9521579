"""The reconciler's pure decision, and how the fold records a lost runner and a requeue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from ulid import ULID

from bgagent_contracts import (
    AgentTurn,
    RunnerLost,
    Status,
    TaskRequeued,
    TaskStarted,
    TaskState,
    TaskSubmitted,
    WorkspaceReady,
    fold,
)
from bgagent_contracts.reconcile import (
    RUNNER_LOST,
    STRANDED,
    Action,
    Observation,
    Policy,
    decide_reconcile,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TID = str(ULID())
POLICY = Policy(grace_s=15, redelivery_s=45, max_attempts=5, stranded_after_s=600)


def _head(at: float) -> dict[str, object]:
    return {"task_id": TID, "event_id": str(ULID()), "ts": T0 + timedelta(seconds=at)}


def submitted() -> TaskSubmitted:
    return TaskSubmitted(**_head(0), actor="admission", user_id="alice", repo="acme/app")  # type: ignore[arg-type]


def started(attempt: int, at: float) -> list[object]:
    run = {"actor": "runner", "attempt": attempt}
    return [
        TaskStarted(**_head(at), **run, runner_id=f"r{attempt}"),  # type: ignore[arg-type]
        WorkspaceReady(**_head(at + 1), **run, branch="b"),  # type: ignore[arg-type]
    ]


def lost(attempt: int, at: float) -> RunnerLost:
    return RunnerLost(**_head(at), actor="reconciler", attempt=attempt, runner_id=f"r{attempt}")  # type: ignore[arg-type]


def requeued(attempt: int, at: float) -> TaskRequeued:
    return TaskRequeued(**_head(at), actor="reconciler", attempt=attempt)  # type: ignore[arg-type]


def state_of(*events: object) -> TaskState:
    state = fold([submitted(), *events])  # type: ignore[list-item]
    assert state is not None
    return state


def observe(state: TaskState, at: float, **kw: object) -> Observation:
    defaults: dict[str, object] = {"held": False, "queued": False}
    return Observation(state=state, now=T0 + timedelta(seconds=at), **{**defaults, **kw})  # type: ignore[arg-type]


RUNNING = state_of(*started(1, 1))


def test_a_held_task_is_left_alone_however_quiet_it_is() -> None:
    assert decide_reconcile(observe(RUNNING, 10_000, held=True), POLICY) is None


def test_a_queued_task_waits_while_any_runner_is_alive() -> None:
    fresh = state_of()
    assert decide_reconcile(observe(fresh, 10_000, queued=True, live_runners=2), POLICY) is None


def test_a_quiet_task_within_the_grace_is_left_alone() -> None:
    assert decide_reconcile(observe(RUNNING, 2 + 14), POLICY) is None


def test_an_unheld_started_task_is_marked_lost_and_says_it_waits_for_a_runner() -> None:
    decision = decide_reconcile(observe(RUNNING, 2 + 16), POLICY)
    assert decision is not None
    assert decision.action is Action.MARK_LOST
    assert "r1" in decision.message
    assert "waiting for a runner" in decision.message
    after = state_of(*started(1, 1), lost(1, 18))
    assert after.status is Status.RUNNING
    assert after.waiting_since == T0 + timedelta(seconds=18)
    assert after.current_step is not None
    assert "r1 was lost at 12:00:18 UTC" in after.current_step
    assert "waiting for a runner" in after.current_step


def test_a_lost_task_is_requeued_when_no_runner_took_it_back_within_the_redelivery_wait() -> None:
    waiting = state_of(*started(1, 1), lost(1, 18))
    assert decide_reconcile(observe(waiting, 18 + 44), POLICY) is None
    decision = decide_reconcile(observe(waiting, 18 + 45), POLICY)
    assert decision is not None
    assert decision.action is Action.REQUEUE


def test_a_requeued_task_that_is_queued_again_waits() -> None:
    again = state_of(*started(1, 1), lost(1, 18), requeued(1, 63))
    assert decide_reconcile(observe(again, 200, queued=True), POLICY) is None


def test_a_requeue_delivered_but_never_claimed_is_stranded() -> None:
    again = state_of(*started(1, 1), lost(1, 18), requeued(1, 63))
    decision = decide_reconcile(observe(again, 63 + 45), POLICY)
    assert decision is not None
    assert (decision.action, decision.code) == (Action.FAIL, STRANDED)
    assert "resubmit" in decision.message


def test_a_new_attempt_clears_the_wait_and_gets_its_own_requeue() -> None:
    later = state_of(*started(1, 1), lost(1, 18), requeued(1, 63), *started(2, 70))
    assert later.waiting_since is None
    assert later.attempt == 2
    assert later.lost_attempts == 1
    assert decide_reconcile(observe(later, 71 + 16), POLICY) is not None


def test_attempts_exhausted_fail_runner_lost_as_soon_as_the_last_runner_is_gone() -> None:
    events: list[object] = []
    for attempt in range(1, 6):
        events += started(attempt, attempt * 100)
    fifth = state_of(*events)
    assert decide_reconcile(observe(fifth, 501 + 14), POLICY) is None  # within the grace
    assert decide_reconcile(observe(fifth, 10_000, held=True), POLICY) is None  # still running
    decision = decide_reconcile(observe(fifth, 501 + 16), POLICY)  # no wait for a redelivery
    assert decision is not None
    assert (decision.action, decision.code) == (Action.FAIL, RUNNER_LOST)
    assert "r5" in decision.message
    assert "5 attempts" in decision.message


def test_a_max_deliveries_advisory_acts_at_once_without_waiting_for_grace() -> None:
    events: list[object] = []
    for attempt in range(1, 6):
        events += started(attempt, attempt * 100)
    fifth = state_of(*events)
    decision = decide_reconcile(observe(fifth, 502, exhausted=True), POLICY)
    assert decision is not None
    assert (decision.action, decision.code) == (Action.FAIL, RUNNER_LOST)
    # attempts remain: the dropped message is replaced
    second = state_of(*started(1, 1), *started(2, 50))
    assert decide_reconcile(observe(second, 52, exhausted=True), POLICY) == decide_reconcile(
        observe(second, 52, exhausted=True, queued=True), POLICY
    )
    assert decide_reconcile(observe(second, 52, exhausted=True), POLICY).action is Action.REQUEUE  # type: ignore[union-attr]


def test_a_never_started_task_whose_delivery_went_nowhere_is_requeued() -> None:
    fresh = state_of()
    assert decide_reconcile(observe(fresh, 44), POLICY) is None
    decision = decide_reconcile(observe(fresh, 45), POLICY)
    assert decision is not None
    assert decision.action is Action.REQUEUE


def test_a_queued_task_with_no_runner_alive_for_too_long_is_stranded() -> None:
    fresh = state_of()
    assert decide_reconcile(observe(fresh, 599, queued=True, live_runners=0), POLICY) is None
    decision = decide_reconcile(observe(fresh, 601, queued=True, live_runners=0), POLICY)
    assert decision is not None
    assert (decision.action, decision.code) == (Action.FAIL, STRANDED)
    assert "no runner was alive" in decision.message
    # a runner seen recently restarts the clock
    seen = T0 + timedelta(seconds=500)
    assert (
        decide_reconcile(observe(fresh, 601, queued=True, live_runners=0, runner_seen_at=seen), POLICY)
        is None
    )


@pytest.mark.parametrize("at", [0, 16, 100, 10_000])
def test_a_terminal_task_is_never_touched(at: float) -> None:
    from bgagent_contracts import TaskFailed

    done = state_of(*started(1, 1), TaskFailed(**_head(3), actor="runner", attempt=1, code="X", message="x"))  # type: ignore[arg-type]
    assert decide_reconcile(observe(done, at), POLICY) is None
    assert decide_reconcile(observe(done, at, exhausted=True), POLICY) is None


def test_runner_lost_of_another_attempt_and_a_second_requeue_of_one_attempt_change_nothing() -> None:
    base = state_of(*started(2, 1))
    stale = fold([lost(1, 30)], base)  # type: ignore[list-item]
    assert stale is base
    once = fold([requeued(2, 40)], base)  # type: ignore[list-item]
    assert once is not None
    assert once.requeued_attempt == 2
    assert fold([requeued(2, 50)], once) is once  # type: ignore[list-item]


def test_the_runner_speaking_again_after_a_false_alarm_clears_the_wait() -> None:
    waiting = state_of(*started(1, 1), lost(1, 18))
    turn = AgentTurn(**_head(20), actor="runner", attempt=1, turn=1, model="m", text_preview="", tool_calls=0)  # type: ignore[arg-type]
    alive = fold([turn], waiting)
    assert alive is not None
    assert alive.waiting_since is None
