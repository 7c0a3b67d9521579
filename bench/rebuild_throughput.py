"""Read-model rebuild throughput vs a one-transaction-per-event baseline (and the batched projector).

Starts its own nats-server and a scratch PostgreSQL database (on DATABASE_URL's server), writes
>= 100k synthetic events (many tasks, interleaved, a realistic event mix) with bounded-concurrency
``publish_async``, then measures:

  1. rebuild:   ``bgagent_query.rebuild.rebuild`` over the whole stream (one transaction, COPY);
  2. projector: the incremental projector catching up from seq 0 (batches of up to 1000 / tx);
  3. baseline:  one Postgres transaction per event (lock checkpoint, insert event, upsert task,
                advance checkpoint) over a slice of the stream.

Usage: uv run python bench/rebuild_throughput.py [--events 100000] [--baseline-events 5000]
Goal: rebuild >= 20,000 events/s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import time
from datetime import timedelta
from typing import Any

import asyncpg

from bgagent_contracts import (
    Event,
    TaskState,
    decode_event,
    encode_event,
    event_type,
)
from bgagent_contracts.events import Recorded
from bgagent_contracts.fold import fold_recorded
from bgagent_contracts.subjects import all_tasks_filter, task_subject
from bgagent_eventstore import NatsSettings, connect, follow, provision
from bgagent_query import store
from bgagent_query.migrations import migrate
from bgagent_query.projector import Projector
from bgagent_query.rebuild import rebuild
from bgagent_testing import factories
from bgagent_testing.factories import T0
from bgagent_testing.servers import (
    NatsServer,
    database_url_from_env,
    drop_database,
    ensure_database,
    with_database,
)


def task_events(i: int, turns: int) -> list[Event]:
    """One task's life with realistic preview sizes (the shared test factory)."""
    return factories.lifecycle(
        user=f"user{i % 50}",
        repo=f"acme/repo{i % 20}",
        turns=turns,
        start=T0 + timedelta(seconds=i),
        description="Fix the flaky test in the payment module and open a PR",
        pr_number=100 + i,
        model="claude-sonnet-4",
        text_preview="Let me look at the failing test and the code it exercises. " * 3,
        command="cd repo && python -m pytest tests/test_payments.py -x -q",
        output_preview="...F.\nFAILED tests/test_payments.py::test_refund - AssertionError" * 2,
        cost_per_turn=0.0123,
    )


async def write_events(nc: Any, s: NatsSettings, target: int, active: int = 200) -> int:
    """Interleave ``active`` tasks at a time until ``target`` events are published; returns the count."""
    js = nc.jetstream(publish_async_max_pending=2000)
    pending: list[list[Event]] = []
    written = 0
    i = 0
    while written < target or pending:
        while len(pending) < active and written + sum(len(p) for p in pending) < target:
            pending.append(task_events(i, turns=3 + i % 5))
            i += 1
        if not pending:
            break
        still: list[list[Event]] = []
        for events in pending:
            event = events.pop(0)
            await js.publish_async(
                task_subject(event.task_id, event_type(event), s.prefix), encode_event(event)
            )
            written += 1
            if events:
                still.append(events)
        pending = still
    await js.publish_async_completed()
    return written


async def baseline(pool: Any, nc: Any, s: NatsSettings, limit: int) -> float:
    """One transaction per event over the first ``limit`` events; returns events/s."""
    async with pool.acquire() as conn:
        await store.truncate_read_models(conn)
        await conn.execute("DELETE FROM projector_checkpoint")
        await store.ensure_checkpoint(conn, "baseline")
    states: dict[str, TaskState] = {}
    done = 0
    started = time.perf_counter()
    async with pool.acquire() as conn:
        insert_event = await conn.prepare(
            "INSERT INTO task_events (seq, task_id, type, ts, event) VALUES ($1, $2, $3, $4, $5)"
        )
        upsert = await conn.prepare(
            "INSERT INTO tasks (task_id, user_id, status, repo, created_at, updated_at, last_seq, state)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (task_id)"
            " DO UPDATE SET status = EXCLUDED.status,"
            " updated_at = EXCLUDED.updated_at, last_seq = EXCLUDED.last_seq, state = EXCLUDED.state"
        )
        advance = await conn.prepare("UPDATE projector_checkpoint SET last_seq = $2 WHERE name = $1")
        lock = await conn.prepare("SELECT last_seq FROM projector_checkpoint WHERE name = $1 FOR UPDATE")
        async for msg in follow(nc, stream=s.stream, subject_filter=all_tasks_filter(s.prefix)):
            event = decode_event(msg.data)
            state = fold_recorded(
                (Recorded(seq=msg.seq, subject=msg.subject, event=event),), states.get(event.task_id)
            )
            async with conn.transaction():
                await lock.fetchval("baseline")
                await insert_event.fetch(
                    msg.seq, event.task_id, event_type(event), event.ts, msg.data.decode()
                )
                if state is not None:
                    states[event.task_id] = state
                    await upsert.fetch(*store.task_row(state))
                await advance.fetch("baseline", msg.seq)
            done += 1
            if done >= limit:
                break
    return done / (time.perf_counter() - started)


async def projector_catch_up(pool: Any, nc: Any, s: NatsSettings, last: int) -> float:
    async with pool.acquire() as conn:
        await store.truncate_read_models(conn)
        await conn.execute("DELETE FROM projector_checkpoint")
    projector = Projector(pool, nc, stream=s.stream, prefix=s.prefix, batch_max=1000)
    started = time.perf_counter()
    task = asyncio.create_task(projector.run())
    try:
        while projector.checkpoint < last:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    print(f"  projector committed {projector.batches} transactions")
    return last / elapsed


async def main(events: int, baseline_events: int) -> None:
    db_url = with_database(database_url_from_env(), f"bgagent_bench_{secrets.token_hex(4)}")
    await ensure_database(db_url)
    try:
        with NatsServer() as server:
            s = NatsSettings(url=server.url, stream="BENCH_TASKS", prefix="bench")
            nc = await connect(s.url, name="bench")
            pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
            try:
                await provision(nc.jetstream(), s)
                async with pool.acquire() as conn:
                    await migrate(conn)
                t = time.perf_counter()
                written = await write_events(nc, s, events)
                print(f"wrote {written} events in {time.perf_counter() - t:.1f}s")

                base = await baseline(pool, nc, s, baseline_events)
                print(f"baseline, one transaction per event ({baseline_events} events): {base:,.0f} events/s")

                async with pool.acquire() as conn:
                    report = await rebuild(conn, nc, stream=s.stream, prefix=s.prefix)
                print(
                    f"rebuild ({report.events} events, {report.tasks} tasks, one transaction, COPY): "
                    f"{report.events_per_s:,.0f} events/s in {report.elapsed_s:.2f}s"
                )
                rebuilt = report.last_seq
                proj = await projector_catch_up(pool, nc, s, rebuilt)
                print(
                    f"incremental projector catching up ({rebuilt} events, <=1000/tx): {proj:,.0f} events/s"
                )
                print(
                    f"ratio rebuild/baseline: {report.events_per_s / base:.1f}x; "
                    f"projector/baseline: {proj / base:.1f}x; goal rebuild >= 20,000 events/s: "
                    f"{'met' if report.events_per_s >= 20_000 else 'NOT met'}"
                )
            finally:
                await pool.close()
                await nc.drain()
    finally:
        await drop_database(db_url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--baseline-events", type=int, default=5_000)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.baseline_events))
