"""The query service killed with SIGKILL mid-projection recovers exactly: nothing missing, nothing doubled."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from ulid import ULID

from bgagent_contracts import Milestone, TaskFailed, TaskStarted, TaskSubmitted, encode_event, event_type
from bgagent_contracts.subjects import task_subject
from bgagent_eventstore import connect

from .conftest import E2E, wait_until

pytestmark = pytest.mark.e2e

TASKS = 300
EVENTS_PER_TASK = 60  # 18,000 events: long enough for a kill to land mid-projection


async def _publish_backlog(e2e: E2E) -> tuple[int, int]:
    """Publish a backlog straight to the stream as the admin user; returns (messages published, last seq)."""
    client = e2e.client
    nc = await connect(client["nats_url"], name="e2e-backlog", auth=e2e.nats_auth("admin"))
    js = nc.jetstream()
    now = datetime.now(UTC)
    count = 0
    last = 0
    try:
        for t in range(TASKS):
            task_id = str(ULID())
            events: list[Any] = [
                TaskSubmitted(
                    task_id=task_id,
                    event_id=str(ULID()),
                    ts=now,
                    actor="admission",
                    user_id="dev",
                    repo="acme/backlog",
                    description=f"backlog {t}",
                ),
                TaskStarted(
                    task_id=task_id, event_id=str(ULID()), ts=now, actor="runner", attempt=1, runner_id="r"
                ),
            ]
            events += [
                Milestone(
                    task_id=task_id,
                    event_id=str(ULID()),
                    ts=now,
                    actor="runner",
                    attempt=1,
                    name="step",
                    detail=f"{i}",
                )
                for i in range(EVENTS_PER_TASK - 3)
            ]
            # Each backlog task ends failed, so a runner that sees its task_submitted has nothing to do.
            events.append(
                TaskFailed(
                    task_id=task_id,
                    event_id=str(ULID()),
                    ts=now,
                    actor="reconciler",
                    code="BACKLOG",
                    message="synthetic backlog task",
                )
            )
            futures = [
                await js.publish_async(
                    task_subject(task_id, event_type(e), client["prefix"]),
                    encode_event(e),
                    headers={"Nats-Msg-Id": e.event_id},
                )
                for e in events
            ]
            if t == TASKS // 2:  # a poison message in the middle of the backlog
                futures.append(
                    await js.publish_async(task_subject(task_id, "milestone", client["prefix"]), b"{oops")
                )
            acks = await asyncio.gather(*futures)
            count += len(acks)
            last = max(last, *(a.seq for a in acks))
    finally:
        await nc.close()
    return count, last


async def _snapshot(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = await asyncpg.connect(database_url)
    try:
        return {
            "tasks": [
                tuple(r)
                for r in await conn.fetch(
                    "SELECT task_id, user_id, status, repo, created_at, updated_at, last_seq, state::text"
                    " FROM tasks"
                    " ORDER BY task_id"
                )
            ],
            "events": [
                tuple(r)
                for r in await conn.fetch(
                    "SELECT seq, task_id, type, ts, event::text FROM task_events ORDER BY seq"
                )
            ],
            "poison": [
                tuple(r) for r in await conn.fetch("SELECT seq, subject FROM poison_messages ORDER BY seq")
            ],
        }
    finally:
        await conn.close()


async def _checkpoint(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT coalesce(max(last_seq), 0) FROM projector_checkpoint"))
    finally:
        await conn.close()


@pytest.fixture
def runner_paused(e2e: E2E) -> Iterator[None]:
    """Keep the runner off the synthetic backlog while the test counts events."""
    e2e.stack.kill("runner")
    try:
        yield
    finally:
        e2e.stack.restart("runner")


@pytest.mark.faults
@pytest.mark.usefixtures("runner_paused")
def test_query_killed_mid_projection_ends_equal_to_a_rebuild(e2e: E2E) -> None:
    db = e2e.client["database_url"]
    e2e.stack.kill("query")
    before = asyncio.run(_checkpoint(db))
    published, last_seq = asyncio.run(_publish_backlog(e2e))
    e2e.stack.restart("query")

    # Kill it again while it is working through the backlog.
    killed_at = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        cp = asyncio.run(_checkpoint(db))
        if before < cp < last_seq:
            e2e.stack.kill("query")
            killed_at = cp
            break
        time.sleep(0.002)
    assert killed_at is not None, "the projector finished before it could be killed mid-projection"

    e2e.stack.restart("query")
    wait_until(
        lambda: asyncio.run(_checkpoint(db)) >= last_seq, 60, "the projector to catch up after restart"
    )
    incremental = asyncio.run(_snapshot(db))

    backlog_events = [row for row in incremental["events"] if row[0] > before]
    assert len(backlog_events) == published - 1  # everything but the poison message, once each
    assert len({row[0] for row in backlog_events}) == len(backlog_events)
    assert len([p for p in incremental["poison"] if p[0] > before]) == 1

    done = e2e.cli("admin", "rebuild")
    assert done.returncode == 0, done.stderr
    rebuilt = asyncio.run(_snapshot(db))
    assert rebuilt["events"] == incremental["events"]
    assert rebuilt["tasks"] == incremental["tasks"]
    assert rebuilt["poison"] == incremental["poison"]
