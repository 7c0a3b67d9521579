"""One contract for every EventStore: the real JetStream adapter and the in-memory fake behave alike."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bgagent_contracts import Status, event_type
from bgagent_contracts.subjects import task_subject
from bgagent_eventstore import ConcurrencyError, StoreError, TaskExistsError


async def test_append_then_read_in_order_with_seqs(store: Any, ev: Any) -> None:
    task = ev.new_id()
    submitted = ev.submitted(task)
    [s1] = await store.append(task, [submitted], expected_seq=0)
    m1, m2 = ev.milestone(task, "cloned"), ev.milestone(task, "tests_ran")
    s2, s3 = await store.append(task, [m1, m2], expected_seq=s1)
    assert 0 < s1 < s2 < s3

    log = await store.read(task)
    assert [r.seq for r in log.records] == [s1, s2, s3]
    assert [r.event for r in log.records] == [submitted, m1, m2]
    assert [r.subject for r in log.records] == [
        task_subject(task, event_type(e), store.prefix) for e in (submitted, m1, m2)
    ]
    assert log.last_seq == s3
    assert log.skipped == ()
    state = log.state()
    assert state is not None
    assert (state.status, state.last_seq, state.event_count) == (Status.SUBMITTED, s3, 3)


async def test_reading_an_unknown_task_is_empty(store: Any, ev: Any) -> None:
    log = await store.read(ev.new_id())
    assert (log.records, log.last_seq, log.skipped) == ((), 0, ())
    assert log.state() is None


async def test_read_after_seq_resumes(store: Any, ev: Any) -> None:
    task = ev.new_id()
    seqs = await store.append(
        task, [ev.submitted(task), *(ev.milestone(task, f"m{i}") for i in range(4))], expected_seq=0
    )
    assert len(seqs) == 5
    assert seqs == sorted(seqs)
    rest = await store.read(task, after_seq=seqs[1])
    assert [r.seq for r in rest.records] == seqs[2:]
    assert [r.event.name for r in rest.records] == ["m1", "m2", "m3"]
    assert rest.last_seq == seqs[-1]
    nothing = await store.read(task, after_seq=seqs[-1])
    assert (nothing.records, nothing.last_seq) == ((), seqs[-1])


async def test_of_two_writers_with_the_same_expected_seq_exactly_one_wins(store: Any, ev: Any) -> None:
    task = ev.new_id()
    [s1] = await store.append(task, [ev.submitted(task)], expected_seq=0)
    a, b = ev.milestone(task, "writer-a"), ev.milestone(task, "writer-b")
    results = await asyncio.gather(
        store.append(task, [a], expected_seq=s1),
        store.append(task, [b], expected_seq=s1),
        return_exceptions=True,
    )
    wins = [r for r in results if isinstance(r, list)]
    losses = [r for r in results if isinstance(r, BaseException)]
    assert len(wins) == 1
    assert len(losses) == 1
    [winner_seq] = wins[0]
    loss = losses[0]
    assert type(loss) is ConcurrencyError
    assert (loss.task_id, loss.expected_seq, loss.actual_seq, loss.appended) == (task, s1, winner_seq, 0)
    assert loss.retryable

    log = await store.read(task)
    names = [r.event.name for r in log.records[1:]]
    assert len(names) == 1
    assert names[0] in {"writer-a", "writer-b"}


async def test_the_loser_can_reread_and_retry(store: Any, ev: Any) -> None:
    task = ev.new_id()
    [s1] = await store.append(task, [ev.submitted(task)], expected_seq=0)
    [s2] = await store.append(task, [ev.milestone(task, "first")], expected_seq=s1)
    late = ev.milestone(task, "second")
    with pytest.raises(ConcurrencyError):
        await store.append(task, [late], expected_seq=s1)
    log = await store.read(task)
    assert log.last_seq == s2
    [s3] = await store.append(task, [late], expected_seq=log.last_seq)
    assert s3 > s2
    assert [r.event.name for r in (await store.read(task)).records[1:]] == ["first", "second"]


async def test_a_task_id_can_only_be_submitted_once(store: Any, ev: Any) -> None:
    task = ev.new_id()
    first = ev.submitted(task, description="original")
    [s1] = await store.append(task, [first], expected_seq=0)
    with pytest.raises(TaskExistsError) as info:
        await store.append(task, [ev.submitted(task, description="impostor")], expected_seq=0)
    assert (info.value.expected_seq, info.value.actual_seq) == (0, s1)
    assert isinstance(info.value, ConcurrencyError)
    assert not info.value.retryable
    log = await store.read(task)
    assert [r.event for r in log.records] == [first]


async def test_a_retried_submission_returns_the_original_seq(store: Any, ev: Any) -> None:
    """The ack of the first publish was lost; the writer retries with the same event (same Nats-Msg-Id)."""
    task = ev.new_id()
    submitted = ev.submitted(task)
    [s1] = await store.append(task, [submitted], expected_seq=0)
    assert await store.append(task, [submitted], expected_seq=0) == [s1]
    assert [r.event for r in (await store.read(task)).records] == [submitted]


async def test_a_retried_append_does_not_duplicate(store: Any, ev: Any) -> None:
    task = ev.new_id()
    [s1] = await store.append(task, [ev.submitted(task)], expected_seq=0)
    m = ev.milestone(task, "once")
    [s2] = await store.append(task, [m], expected_seq=s1)
    assert await store.append(task, [m], expected_seq=s1) == [s2]
    log = await store.read(task)
    assert [r.seq for r in log.records] == [s1, s2]
    assert log.last_seq == s2
    # and the log goes on from the original seq
    [s3] = await store.append(task, [ev.milestone(task, "next")], expected_seq=s2)
    assert s3 > s2


async def test_a_retry_after_another_writer_moved_on_is_a_conflict(store: Any, ev: Any) -> None:
    """OCC is checked before de-duplication: the retry cannot know where its event landed."""
    task = ev.new_id()
    [s1] = await store.append(task, [ev.submitted(task)], expected_seq=0)
    m = ev.milestone(task, "mine")
    [s2] = await store.append(task, [m], expected_seq=s1)
    [s3] = await store.append(task, [ev.milestone(task, "theirs")], expected_seq=s2)
    with pytest.raises(ConcurrencyError) as info:
        await store.append(task, [m], expected_seq=s1)
    assert (info.value.expected_seq, info.value.actual_seq) == (s1, s3)
    assert [r.event.name for r in (await store.read(task)).records[1:]] == ["mine", "theirs"]


async def test_a_stale_multi_event_append_appends_nothing(store: Any, ev: Any) -> None:
    task = ev.new_id()
    [s1] = await store.append(task, [ev.submitted(task)], expected_seq=0)
    [s2] = await store.append(task, [ev.milestone(task, "a")], expected_seq=s1)
    with pytest.raises(ConcurrencyError) as info:
        await store.append(task, [ev.milestone(task, "b"), ev.milestone(task, "c")], expected_seq=s1)
    assert info.value.appended == 0
    assert (await store.read(task)).last_seq == s2


async def test_tasks_do_not_conflict_with_each_other(store: Any, ev: Any) -> None:
    one, two = ev.new_id(), ev.new_id()
    [a1] = await store.append(one, [ev.submitted(one)], expected_seq=0)
    [b1] = await store.append(two, [ev.submitted(two)], expected_seq=0)
    [b2] = await store.append(two, [ev.milestone(two, "b")], expected_seq=b1)
    # task one's last seq is a1 even though the stream moved on
    [a2] = await store.append(one, [ev.milestone(one, "a")], expected_seq=a1)
    assert a1 < b1 < b2 < a2
    assert [r.seq for r in (await store.read(one)).records] == [a1, a2]
    assert [r.seq for r in (await store.read(two)).records] == [b1, b2]


async def test_concurrent_submissions_of_different_tasks_all_succeed(store: Any, ev: Any) -> None:
    tasks = [ev.new_id() for _ in range(8)]
    results = await asyncio.gather(*(store.append(t, [ev.submitted(t)], expected_seq=0) for t in tasks))
    seqs = [s for [s] in results]
    assert len(set(seqs)) == len(tasks)


async def test_an_event_of_another_task_is_refused(store: Any, ev: Any) -> None:
    task, other = ev.new_id(), ev.new_id()
    with pytest.raises(ValueError, match="belongs to task"):
        await store.append(task, [ev.submitted(other)], expected_seq=0)
    assert (await store.read(task)).records == ()
    assert (await store.read(other)).records == ()


def test_store_errors_form_one_tree() -> None:
    assert issubclass(TaskExistsError, ConcurrencyError)
    assert issubclass(ConcurrencyError, StoreError)
