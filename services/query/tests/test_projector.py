"""Projector and rebuild against real NATS JetStream and real PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client

from bgagent_contracts import TaskState, decode_event
from bgagent_contracts.subjects import task_subject
from bgagent_eventstore import JetStreamEventStore, NatsSettings, provision
from bgagent_query.migrations import migrate
from bgagent_query.rebuild import rebuild

pytestmark = pytest.mark.integration


async def _stream_last(event_store: JetStreamEventStore) -> int:
    return await event_store.last_stream_seq()


async def test_projector_projects_every_task_as_the_fold_of_its_log(
    event_store: JetStreamEventStore, pool: Any, projectors: Any, q: Any
) -> None:
    await projectors.start()
    tasks = [q.lifecycle(user=u, turns=t) for u, t in (("alice", 1), ("bob", 3), ("alice", 2))]
    for events in tasks:
        await q.append_all(event_store, events)
    last = await _stream_last(event_store)
    await q.wait_until(lambda: _reached(pool, q, last))

    async with pool.acquire() as conn:
        rows = {r["task_id"]: r for r in await conn.fetch("SELECT * FROM tasks")}
        stored = await conn.fetch("SELECT seq, task_id, type, event FROM task_events ORDER BY seq")
    assert set(rows) == {events[0].task_id for events in tasks}
    for events in tasks:
        log = await event_store.read(events[0].task_id)
        expected = log.state()
        assert expected is not None
        row = rows[expected.task_id]
        assert msgspec.json.decode(row["state"], type=TaskState) == expected
        assert (row["status"], row["user_id"], row["last_seq"]) == (
            expected.status.value,
            expected.user_id,
            expected.last_seq,
        )
    assert len(stored) == sum(len(t) for t in tasks)
    for row in stored:
        (record,) = (await event_store.read(row["task_id"], after_seq=row["seq"] - 1)).records[:1]
        assert record.seq == row["seq"]
        assert decode_event(row["event"].encode()) == record.event


async def _reached(pool: Any, q: Any, seq: int) -> bool:
    return bool(await q.checkpoint(pool) >= seq)


async def test_projector_writes_many_events_per_transaction(
    event_store: JetStreamEventStore, pool: Any, projectors: Any, q: Any
) -> None:
    for _ in range(20):
        await q.append_all(event_store, q.lifecycle(turns=3))  # 20 x 19 = 380 events
    last = await _stream_last(event_store)
    projector, _ = await projectors.start(batch_max=1000)
    await q.wait_until(lambda: _reached(pool, q, last))
    assert projector.batches <= 5, f"{projector.batches} transactions for 380 events"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM task_events") == 380


async def test_incremental_projection_equals_rebuild(
    event_store: JetStreamEventStore,
    pool: Any,
    projectors: Any,
    nc: Client,
    provisioned: NatsSettings,
    q: Any,
) -> None:
    await projectors.start(batch_max=7)  # small batches: many transactions, states carried across them
    for i in range(12):
        await q.append_all(event_store, q.lifecycle(user=f"u{i % 3}", turns=i % 4))
    last = await _stream_last(event_store)
    await q.wait_until(lambda: _reached(pool, q, last))
    incremental = await q.snapshot(pool)

    async with pool.acquire() as conn:
        report = await rebuild(conn, nc, stream=provisioned.stream, prefix=provisioned.prefix)
    rebuilt = await q.snapshot(pool)
    assert report.last_seq == last
    assert report.events == len(incremental["task_events"]) == last
    assert report.tasks == 12
    assert rebuilt == incremental
    assert await q.checkpoint(pool) == last


async def test_projector_follows_on_after_a_rebuild(
    event_store: JetStreamEventStore,
    pool: Any,
    projectors: Any,
    nc: Client,
    provisioned: NatsSettings,
    q: Any,
) -> None:
    await projectors.start()
    await q.append_all(event_store, q.lifecycle())
    first = await _stream_last(event_store)
    await q.wait_until(lambda: _reached(pool, q, first))
    async with pool.acquire() as conn:
        await rebuild(conn, nc, stream=provisioned.stream, prefix=provisioned.prefix)
    events = q.lifecycle(turns=1)
    await q.append_all(event_store, events)
    last = await _stream_last(event_store)
    await q.wait_until(lambda: _reached(pool, q, last))
    after_both = await q.snapshot(pool)
    async with pool.acquire() as conn:
        await rebuild(conn, nc, stream=provisioned.stream, prefix=provisioned.prefix)
    assert await q.snapshot(pool) == after_both
    assert len(after_both["task_events"]) == last


async def test_restarted_projector_continues_from_checkpoint_without_duplicates(
    event_store: JetStreamEventStore,
    pool: Any,
    projectors: Any,
    nc: Client,
    provisioned: NatsSettings,
    q: Any,
) -> None:
    _, first_task = await projectors.start(batch_max=5)
    writer_tasks = [q.lifecycle(turns=2) for _ in range(10)]
    writer = asyncio.create_task(_append_many(event_store, writer_tasks, q))
    await q.wait_until(lambda: _checkpoint_above(pool, q, 20))
    first_task.cancel()  # stopped mid-way while the writer keeps appending
    await q.stop_task(first_task)
    stopped_at = await q.checkpoint(pool)
    await writer
    last = await _stream_last(event_store)
    assert stopped_at < last
    await projectors.start(batch_max=50)
    await q.wait_until(lambda: _reached(pool, q, last))
    incremental = await q.snapshot(pool)
    seqs = [row[0] for row in incremental["task_events"]]
    assert seqs == sorted(set(seqs))
    assert len(seqs) == last
    async with pool.acquire() as conn:
        await rebuild(conn, nc, stream=provisioned.stream, prefix=provisioned.prefix)
    assert await q.snapshot(pool) == incremental


async def _checkpoint_above(pool: Any, q: Any, seq: int) -> bool:
    return bool(await q.checkpoint(pool) > seq)


async def _append_many(event_store: JetStreamEventStore, tasks: list[Any], q: Any) -> None:
    for events in tasks:
        await q.append_all(event_store, events)


async def test_malformed_messages_are_recorded_and_skipped(
    event_store: JetStreamEventStore,
    pool: Any,
    projectors: Any,
    nc: Client,
    provisioned: NatsSettings,
    q: Any,
) -> None:
    await projectors.start()
    good = q.lifecycle(turns=1)
    await q.append_all(event_store, good[:2])
    js = nc.jetstream()
    tid = good[0].task_id
    garbage = await js.publish(task_subject(tid, "milestone", provisioned.prefix), b"{not json")
    # A valid event stored on another task's subject: poison too (it claims a task it is not filed under).
    other = q.lifecycle()[0]
    misfiled = await js.publish(
        task_subject(tid, "task_submitted", provisioned.prefix), msgspec.json.encode(other)
    )
    seqs = await q.append_all(event_store, good[2:], expected=misfiled.seq)
    await q.wait_until(lambda: _reached(pool, q, seqs[-1]))

    async with pool.acquire() as conn:
        poison = await conn.fetch("SELECT seq, subject, error, raw FROM poison_messages ORDER BY seq")
        projected = await conn.fetchval("SELECT count(*) FROM task_events WHERE task_id = $1", tid)
        status = await conn.fetchval("SELECT status FROM tasks WHERE task_id = $1", tid)
    assert [p["seq"] for p in poison] == [garbage.seq, misfiled.seq]
    assert poison[0]["raw"] == b"{not json"
    assert "malformed" in poison[0]["error"]
    assert "does not match subject" in poison[1]["error"]
    assert projected == len(good)
    assert status == "COMPLETED"
    async with pool.acquire() as conn:
        report = await rebuild(conn, nc, stream=provisioned.stream, prefix=provisioned.prefix)
    assert report.poison == 2
    assert report.events == len(good)


async def test_migrations_apply_once(db_url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(db_url)
    try:
        first = await migrate(conn)
        second = await migrate(conn)
        versions = await conn.fetch("SELECT version FROM schema_migrations")
    finally:
        await conn.close()
    assert first == [1, 2]
    assert second == []
    assert sorted(r["version"] for r in versions) == [1, 2]


async def test_projector_rebuilds_when_the_stream_was_recreated(
    event_store: JetStreamEventStore,
    pool: Any,
    projectors: Any,
    nc: Client,
    provisioned: NatsSettings,
    q: Any,
) -> None:
    """A checkpoint from a deleted stream must not make the projector skip the new stream's events."""
    _, task = await projectors.start()
    for _ in range(3):
        await q.append_all(event_store, q.lifecycle(turns=2))
    old_last = await _stream_last(event_store)
    await q.wait_until(lambda: _reached(pool, q, old_last))
    await q.stop_task(task)

    js = nc.jetstream()
    await js.delete_stream(provisioned.stream)
    await provision(js, provisioned)
    fresh = q.lifecycle(turns=0)
    await q.append_all(event_store, fresh)
    new_last = await _stream_last(event_store)
    assert new_last < old_last  # the old checkpoint is past the new stream's end

    await projectors.start()
    await q.wait_until(lambda: _reached_exactly(pool, q, new_last))
    snap = await q.snapshot(pool)
    assert [row[0] for row in snap["task_events"]] == list(range(1, new_last + 1))
    assert [row[0] for row in snap["tasks"]] == [fresh[0].task_id]


async def _reached_exactly(pool: Any, q: Any, seq: int) -> bool:
    return bool(await q.checkpoint(pool) == seq)
