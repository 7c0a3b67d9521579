"""PostgreSQL cut off from query and back: 503 with Retry-After meanwhile, then recovery on its own.

Postgres is "down" for query only: query reaches it through a TCP proxy that the test closes (every
open connection reset, new ones refused) and opens again on the same port; the machine's PostgreSQL,
which other tests share, keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import uvicorn
from nats.aio.client import Client

from bgagent_contracts.auth import TokenTable
from bgagent_eventstore import JetStreamEventStore, NatsSettings
from bgagent_query.api import create_app
from bgagent_query.projector import Projector
from bgagent_query.rebuild import rebuild
from bgagent_query.watch import ProjectionWatch
from bgagent_testing.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.faults]

ROOT = {"Authorization": "Bearer tok-root"}


class TcpProxy:
    """127.0.0.1:<port> → ``target``; ``cut()`` resets every connection and stops listening,
    ``restore()`` listens again on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._transports: set[asyncio.BaseTransport] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._transports |= {writer.transport, up_writer.transport}
        pipes = {
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        }
        self._pipes |= pipes
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait(pipes)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for transport in self._transports:
            transport.abort()
        self._transports.clear()
        pipes, self._pipes = self._pipes, set()
        for pipe in pipes:
            pipe.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)

    async def restore(self) -> None:
        await self.start()


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@127.0.0.1:{port}" if auth else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@pytest.fixture
async def proxy(db_url: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(db_url)
    p = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await p.start()
    try:
        yield p
    finally:
        await p.cut()


class Query:
    """query's HTTP app and projector, on a pool that reaches Postgres through the proxy."""

    def __init__(self, client: httpx.AsyncClient, projector: Projector) -> None:
        self.client = client
        self.projector = projector


@pytest.fixture
async def query(
    pool: Any, db_url: str, proxy: TcpProxy, nc: Client, provisioned: NatsSettings
) -> AsyncIterator[Query]:
    url = _through(db_url, proxy.port)
    proxied = await asyncpg.create_pool(url, min_size=1, max_size=4, timeout=2.0)
    watch = ProjectionWatch(proxied, url, poll_s=0.05)
    await watch.start()

    async def ready() -> bool:
        try:
            async with proxied.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
            return False
        return True

    app = create_app(
        pool=proxied,
        watch=watch,
        tokens=TokenTable.parse("tok-root=root:admin"),
        prefix=provisioned.prefix,
        ready=ready,
        min_seq_wait_s=1.0,
        nc=nc,
        stream=provisioned.stream,
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    serving = asyncio.create_task(server.serve())
    projector = Projector(proxied, nc, stream=provisioned.stream, prefix=provisioned.prefix, retry_max_s=0.5)
    projecting = asyncio.create_task(projector.run())
    try:
        deadline = time.monotonic() + 5
        while not server.started:
            assert not serving.done(), "uvicorn stopped"
            assert time.monotonic() < deadline, "uvicorn did not start"
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield Query(client, projector)
    finally:
        projecting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await projecting
        server.should_exit = True
        await serving
        await watch.close()
        await proxied.close()


async def test_query_answers_503_while_postgres_is_down_and_recovers_exactly_once(
    query: Query,
    proxy: TcpProxy,
    pool: Any,
    nc: Client,
    event_store: JetStreamEventStore,
    provisioned: NatsSettings,
    q: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = [q.lifecycle(user=f"u{i}", turns=i) for i in range(3)]
    for events in before:
        await q.append_all(event_store, events)
    last = await event_store.last_stream_seq()
    await q.wait_until(lambda: _at(pool, q, last), 10)
    task_id = before[0][0].task_id
    assert (await query.client.get("/v1/tasks", headers=ROOT)).status_code == 200

    await proxy.cut()
    during = [q.lifecycle(user=f"v{i}", turns=2) for i in range(3)]
    for events in during:  # written while the projector cannot reach its database
        await q.append_all(event_store, events)
    last = await event_store.last_stream_seq()
    paths = [
        "/v1/tasks",
        f"/v1/tasks/{task_id}",
        f"/v1/tasks/{task_id}/events",
        f"/v1/tasks/{task_id}/events/stream",
        f"/v1/tasks/{task_id}?min_seq={last}",
        "/readyz",
    ]
    for path in paths:
        resp = await query.client.get(path, headers=ROOT)
        assert resp.status_code == 503, (path, resp.status_code, resp.text)
        assert int(resp.headers["retry-after"]) > 0, path
        if path != "/readyz":
            assert resp.json()["error"]["code"] in {"SERVICE_UNAVAILABLE", "PROJECTION_LAG"}, path
    deadline = time.monotonic() + 10
    while sum("restarting from its checkpoint" in r.getMessage() for r in caplog.records) < 3:
        assert time.monotonic() < deadline, "the projector did not keep retrying"
        await asyncio.sleep(0.05)
    assert await q.checkpoint(pool) < last  # the projector is stuck, not skipping

    await proxy.restore()
    deadline = time.monotonic() + 20
    while (await query.client.get("/v1/tasks", headers=ROOT)).status_code != 200:
        assert time.monotonic() < deadline, "query did not recover after Postgres came back"
        await asyncio.sleep(0.1)
    await q.wait_until(lambda: _at(pool, q, last), 20)
    resp = await query.client.get(f"/v1/tasks/{during[-1][0].task_id}?min_seq={last}", headers=ROOT)
    assert resp.status_code == 200
    assert (await query.client.get("/readyz")).status_code == 200

    projected = await q.snapshot(pool)
    assert [row[0] for row in projected["task_events"]] == list(range(1, last + 1))  # each event once
    async with pool.acquire() as conn:
        await rebuild(conn, nc, stream=provisioned.stream, prefix=provisioned.prefix)
    assert await q.snapshot(pool) == projected


async def _at(pool: Any, q: Any, seq: int) -> bool:
    return bool(await q.checkpoint(pool) >= seq)
