"""Fixtures of the query tests: a Postgres schema of its own per test, projectors, sample events."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from nats.aio.client import Client

from bgagent_contracts import Event
from bgagent_eventstore import JetStreamEventStore, NatsSettings
from bgagent_query.migrations import migrate
from bgagent_query.projector import Projector
from bgagent_testing import factories
from bgagent_testing.factories import T0


@pytest.fixture
async def db_url(database_url: str) -> AsyncIterator[str]:
    """The session database with a schema of this test's own first on the search path."""
    schema = f"q_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    parts = urlsplit(database_url)
    query = (parts.query + "&" if parts.query else "") + f"search_path={schema}"
    yield urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[Any]:
    p = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    async with p.acquire() as conn:
        await migrate(conn)
    try:
        yield p
    finally:
        await p.close()


class Projectors:
    """Starts projectors as tasks; stops them all at the end of the test."""

    def __init__(self, pool: Any, nc: Client, settings: NatsSettings) -> None:
        self.pool = pool
        self.nc = nc
        self.settings = settings
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, **kwargs: Any) -> tuple[Projector, asyncio.Task[None]]:
        projector = Projector(
            self.pool, self.nc, stream=self.settings.stream, prefix=self.settings.prefix, **kwargs
        )
        task = asyncio.create_task(projector.run())
        self._tasks.append(task)
        await asyncio.wait_for(projector.started(), 5)
        return projector, task

    async def stop_all(self) -> None:
        for task in self._tasks:
            await stop_task(task)


async def stop_task(task: asyncio.Task[Any]) -> None:
    """Cancel until done (on 3.11 a cancellation can be lost inside ``asyncio.wait_for``)."""
    for _ in range(50):
        if task.done():
            break
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    assert task.done(), "task did not stop"
    with contextlib.suppress(asyncio.CancelledError):
        task.result()


@pytest.fixture
async def projectors(pool: Any, nc: Client, provisioned: NatsSettings) -> AsyncIterator[Projectors]:
    p = Projectors(pool, nc, provisioned)
    try:
        yield p
    finally:
        await p.stop_all()


async def _wait_until(pred: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


@pytest.fixture
def wait_until() -> Callable[..., Awaitable[None]]:
    """``await wait_until(async_pred, timeout)``: poll a condition with a deadline."""
    return _wait_until


def lifecycle(
    user: str = "alice", repo: str = "acme/app", turns: int = 2, start: datetime = T0
) -> list[Event]:
    """A realistic completed task (the shared factory; a NUL in the model text on purpose)."""
    return factories.lifecycle(user=user, repo=repo, turns=turns, start=start)


async def append_all(store: JetStreamEventStore, events: list[Event], expected: int = 0) -> list[int]:
    """Append a task's events one by one (as writers do), returning their sequences."""
    seqs: list[int] = []
    for event in events:
        (seq,) = await store.append(event.task_id, [event], expected_seq=expected)
        expected = seq
        seqs.append(seq)
    return seqs


async def checkpoint(pool: Any, name: str = "tasks") -> int:
    async with pool.acquire() as conn:
        value = await conn.fetchval("SELECT last_seq FROM projector_checkpoint WHERE name = $1", name)
    return int(value or 0)


async def snapshot(pool: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Both read-model tables, row by row, in key order (json columns compared as text)."""
    async with pool.acquire() as conn:
        tasks = await conn.fetch(
            "SELECT task_id, user_id, status, repo, created_at, updated_at, last_seq, state::text"
            " FROM tasks ORDER BY task_id"
        )
        events = await conn.fetch("SELECT seq, task_id, type, ts, event::text FROM task_events ORDER BY seq")
    return {"tasks": [tuple(r) for r in tasks], "task_events": [tuple(r) for r in events]}


@pytest.fixture
def q() -> Any:
    """The helpers above, for test modules (conftest is not importable under --import-mode=importlib)."""
    import types

    return types.SimpleNamespace(
        lifecycle=lifecycle,
        append_all=append_all,
        checkpoint=checkpoint,
        snapshot=snapshot,
        stop_task=stop_task,
        wait_until=_wait_until,
    )
