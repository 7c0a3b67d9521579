"""Admission commands over the in-memory event store: races, retries and idempotency recovery."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pytest
from ulid import ULID

from bgagent_admission.errors import (
    IdempotencyKeyReused,
    InvalidRequest,
    TaskAlreadyTerminal,
    TaskNotFound,
    TooMuchContention,
)
from bgagent_admission.handlers import Admission
from bgagent_admission.idempotency import MemoryIdempotencyStore, key_digest
from bgagent_admission.requests import CreateTask
from bgagent_contracts import (
    Actor,
    CancelRequested,
    Event,
    Milestone,
    NudgeRequested,
    Status,
    TaskCancelled,
    TaskFailed,
    TaskStarted,
    TaskSubmitted,
)
from bgagent_contracts.auth import Principal
from bgagent_eventstore import MemoryEventStore, TaskLog

ALICE = Principal(user_id="alice")
COMMAND = CreateTask(repo="acme/widgets", description="fix it")


def _now() -> datetime:
    return datetime.now(UTC)


def started(task_id: str) -> Event:
    return TaskStarted(
        task_id=task_id, event_id=str(ULID()), ts=_now(), actor=Actor.RUNNER, attempt=1, runner_id="r"
    )


def milestone(task_id: str) -> Event:
    return Milestone(
        task_id=task_id, event_id=str(ULID()), ts=_now(), actor=Actor.RUNNER, attempt=1, name="m"
    )


def stranded(task_id: str) -> Event:
    """The reconciler failing a task nobody started (no attempt)."""
    return TaskFailed(
        task_id=task_id, event_id=str(ULID()), ts=_now(), actor=Actor.RECONCILER, code="STRANDED", message="x"
    )


class RacingStore:
    """MemoryEventStore where another writer appends right before each of the first ``races`` appends."""

    def __init__(self, inner: MemoryEventStore, make: Callable[[str], Event], races: int) -> None:
        self.inner = inner
        self._make = make
        self.races_left = races
        self.appends = 0

    async def read(self, task_id: str, *, after_seq: int = 0) -> TaskLog:
        return await self.inner.read(task_id, after_seq=after_seq)

    async def append(self, task_id: str, events: Sequence[Event], *, expected_seq: int) -> list[int]:
        self.appends += 1
        if self.races_left > 0 and expected_seq > 0:
            self.races_left -= 1
            await self.inner.append(task_id, [self._make(task_id)], expected_seq=expected_seq)
        return await self.inner.append(task_id, events, expected_seq=expected_seq)


async def _submitted(store: MemoryEventStore) -> str:
    admission = Admission(store, MemoryIdempotencyStore(), prefix="bgagent")
    return (await admission.submit(ALICE, COMMAND, None)).state.task_id


def _types(store: MemoryEventStore) -> list[str]:
    return [type(r.event).__name__ for r in store.all()]


async def test_cancel_lost_to_task_started_is_redecided_as_a_request() -> None:
    memory = MemoryEventStore()
    task_id = await _submitted(memory)
    racing = RacingStore(memory, started, races=1)
    changed = await Admission(racing, MemoryIdempotencyStore(), prefix="bgagent").cancel(
        ALICE, task_id, "stop"
    )
    assert isinstance(changed.event, CancelRequested)
    assert changed.state.status is Status.HYDRATING
    assert changed.state.cancel_requested
    assert changed.seq == memory.all()[-1].seq
    assert racing.appends == 2
    assert _types(memory) == ["TaskSubmitted", "TaskStarted", "CancelRequested"]


async def test_nudge_is_retried_while_the_runner_keeps_appending() -> None:
    memory = MemoryEventStore()
    task_id = await _submitted(memory)
    await memory.append(task_id, [started(task_id)], expected_seq=memory.all()[-1].seq)
    racing = RacingStore(memory, milestone, races=3)
    accepted = await Admission(racing, MemoryIdempotencyStore(), prefix="bgagent").nudge(ALICE, task_id, "hi")
    assert racing.appends == 4
    last = memory.all()[-1]
    assert isinstance(last.event, NudgeRequested)
    assert (last.seq, last.event.nudge_id) == (accepted.seq, accepted.nudge_id)
    assert _types(memory).count("NudgeRequested") == 1


async def test_cancel_lost_to_a_terminal_event_is_409() -> None:
    memory = MemoryEventStore()
    task_id = await _submitted(memory)
    racing = RacingStore(memory, stranded, races=1)
    with pytest.raises(TaskAlreadyTerminal):
        await Admission(racing, MemoryIdempotencyStore(), prefix="bgagent").cancel(ALICE, task_id, None)
    assert _types(memory) == ["TaskSubmitted", "TaskFailed"]


async def test_retries_are_bounded() -> None:
    memory = MemoryEventStore()
    task_id = await _submitted(memory)
    await memory.append(task_id, [started(task_id)], expected_seq=memory.all()[-1].seq)
    racing = RacingStore(memory, milestone, races=100)
    admission = Admission(racing, MemoryIdempotencyStore(), prefix="bgagent", max_attempts=3)
    with pytest.raises(TooMuchContention):
        await admission.nudge(ALICE, task_id, "hi")
    assert racing.appends == 3
    assert "NudgeRequested" not in _types(memory)


async def test_queued_cancel_appends_task_cancelled() -> None:
    memory = MemoryEventStore()
    task_id = await _submitted(memory)
    changed = await Admission(memory, MemoryIdempotencyStore(), prefix="bgagent").cancel(ALICE, task_id, None)
    assert isinstance(changed.event, TaskCancelled)
    assert changed.state.status is Status.CANCELLED


async def test_lower_case_task_id_is_accepted_and_foreign_task_hidden() -> None:
    memory = MemoryEventStore()
    task_id = await _submitted(memory)
    admission = Admission(memory, MemoryIdempotencyStore(), prefix="bgagent")
    with pytest.raises(TaskNotFound):
        await admission.cancel(Principal(user_id="bob"), task_id, None)
    changed = await admission.cancel(ALICE, task_id.lower(), None)
    assert changed.state.task_id == task_id


async def test_decision_validation_errors_name_the_field() -> None:
    memory = MemoryEventStore()
    task_id = await _submitted(memory)
    with pytest.raises(InvalidRequest) as info:
        await Admission(memory, MemoryIdempotencyStore(), prefix="bgagent").nudge(ALICE, task_id, "   ")
    assert info.value.field == "message"


async def test_claimed_key_without_events_is_recovered_under_the_claimed_id() -> None:
    """A crash between the KV claim and the append: the next request with the key creates the task."""
    memory = MemoryEventStore()
    keys = MemoryIdempotencyStore()
    orphan = str(ULID())
    assert await keys.claim(key_digest("alice", "k"), orphan) is None
    admission = Admission(memory, keys, prefix="bgagent", claim_wait_s=0.05)
    result = await admission.submit(ALICE, COMMAND, "k")
    assert result.state.task_id == orphan
    assert result.created is False
    event = memory.all()[0].event
    assert isinstance(event, TaskSubmitted)
    assert (event.task_id, event.idempotency_key) == (orphan, "k")
    again = await admission.submit(ALICE, COMMAND, "k")
    assert (again.state.task_id, again.seq) == (orphan, result.seq)
    assert len(memory.all()) == 1


async def test_reused_key_with_other_body_is_refused() -> None:
    memory = MemoryEventStore()
    admission = Admission(memory, MemoryIdempotencyStore(), prefix="bgagent")
    await admission.submit(ALICE, COMMAND, "k")
    with pytest.raises(IdempotencyKeyReused):
        await admission.submit(ALICE, CreateTask(repo="acme/widgets", description="other"), "k")
    assert len(memory.all()) == 1
