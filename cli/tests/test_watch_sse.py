"""``bgagent watch --transport sse`` against query over a real socket (real PostgreSQL and NATS).

The client reaches query through a TCP proxy that can drop every open connection: the watcher must
reconnect with ``Last-Event-ID`` and print each event exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import uvicorn
from nats.aio.client import Client

from bgagent_cli.config import CliConfig
from bgagent_cli.errors import ApiCallError
from bgagent_cli.render import Printer
from bgagent_cli.watch import watch_sse
from bgagent_contracts import Event
from bgagent_contracts.auth import TokenTable
from bgagent_contracts.views import event_view
from bgagent_eventstore import JetStreamEventStore
from bgagent_query.api import create_app
from bgagent_query.migrations import migrate
from bgagent_query.projector import Projector
from bgagent_query.watch import ProjectionWatch
from bgagent_testing import factories
from bgagent_testing.servers import free_port

pytestmark = pytest.mark.integration

DEADLINE_S = 20.0


class Proxy:
    """A TCP forwarder to ``port`` whose open connections can all be cut at once."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self.accepted = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def drop(self) -> None:
        """Cut every open connection (both sides), as a network failure would."""
        for w in list(self._writers):
            w.transport.abort()

    async def close(self) -> None:
        self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class Query:
    def __init__(self, url: str, store: JetStreamEventStore) -> None:
        self.url = url
        self.store = store

    def config(self, token: str = "tok-alice") -> CliConfig:
        return CliConfig(query_url=self.url, token=token, prefix=self.store.prefix, stream=self.store.stream)


@contextlib.asynccontextmanager
async def _schema(database_url: str) -> AsyncIterator[str]:
    schema = f"w_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    parts = urlsplit(database_url)
    query = (parts.query + "&" if parts.query else "") + f"search_path={schema}"
    try:
        yield urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    finally:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture
async def proxy_and_query(
    database_url: str, nc: Client, event_store: JetStreamEventStore
) -> AsyncIterator[tuple[Proxy, Query]]:
    """query (projector + API) under uvicorn, reached through a Proxy."""
    async with _schema(database_url) as db_url:
        pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
        async with pool.acquire() as conn:
            await migrate(conn)
        watch = ProjectionWatch(pool, db_url, poll_s=0.05)
        await watch.start()
        projector = Projector(pool, nc, stream=event_store.stream, prefix=event_store.prefix)
        projecting = asyncio.create_task(projector.run())

        async def ready() -> bool:
            return True

        app = create_app(
            pool=pool,
            watch=watch,
            tokens=TokenTable.parse("tok-alice=alice"),
            prefix=event_store.prefix,
            ready=ready,
            nc=nc,
            stream=event_store.stream,
        )
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
        )
        serving = asyncio.create_task(server.serve())
        proxy = Proxy(port)
        try:
            await asyncio.wait_for(projector.started(), 5)
            async with asyncio.timeout(5):
                while not server.started:
                    assert not serving.done(), "uvicorn stopped"
                    await asyncio.sleep(0.01)
            await proxy.start()
            yield proxy, Query(f"http://127.0.0.1:{proxy.port}", event_store)
        finally:
            await proxy.close()
            server.should_exit = True
            server.force_exit = True
            await serving
            while not projecting.done():
                projecting.cancel()
                await asyncio.wait({projecting}, timeout=0.5)
            await watch.close()
            await pool.close()


async def _append(store: JetStreamEventStore, events: list[Event]) -> None:
    expected = (await store.read(events[0].task_id)).last_seq
    for event in events:
        (expected,) = await store.append(event.task_id, [event], expected_seq=expected)


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def _until(predicate: Any, what: str) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_a_dropped_connection_is_resumed_from_the_last_printed_seq_without_gap_or_duplicate(
    proxy_and_query: tuple[Proxy, Query],
) -> None:
    proxy, query = proxy_and_query
    events = factories.lifecycle(user="alice", turns=3)
    tid = events[0].task_id
    await _append(query.store, events[:5])
    seq = (await query.store.read(tid)).last_seq
    out, err = io.StringIO(), io.StringIO()
    printer = Printer(True, out=out, err=err)
    watcher = asyncio.create_task(watch_sse(query.config(), tid, printer, min_seq=seq))
    await _until(lambda: len(_lines(out)) == 5 or watcher.done(), "the first five events")
    proxy.drop()
    await _append(query.store, events[5:9])
    await _until(lambda: len(_lines(out)) == 9 or watcher.done(), "events after the reconnect")
    proxy.drop()
    await _append(query.store, events[9:])
    async with asyncio.timeout(DEADLINE_S):
        code = await watcher
    assert code == 0
    expected = [event_view(r) for r in (await query.store.read(tid)).records]
    assert _lines(out) == json.loads(json.dumps(expected))
    assert proxy.accepted >= 3
    assert "reconnecting after seq" in err.getvalue()


async def test_a_wrong_token_is_an_error_and_prints_nothing(proxy_and_query: tuple[Proxy, Query]) -> None:
    _, query = proxy_and_query
    events = factories.lifecycle(user="alice", turns=1)
    await _append(query.store, events)
    out = io.StringIO()  # (a wrong token is refused before the task is looked up)
    with pytest.raises(ApiCallError) as caught:
        async with asyncio.timeout(DEADLINE_S):
            await watch_sse(
                query.config("wrong"), events[0].task_id, Printer(True, out=out, err=io.StringIO())
            )
    assert (caught.value.status, caught.value.code) == (401, "UNAUTHORIZED")
    assert out.getvalue() == ""


async def test_a_cursor_past_the_end_of_a_finished_task_exits_with_its_code(
    proxy_and_query: tuple[Proxy, Query],
) -> None:
    _, query = proxy_and_query
    events = factories.lifecycle(user="alice", turns=1)
    await _append(query.store, events)
    last = (await query.store.read(events[0].task_id)).last_seq
    out = io.StringIO()
    async with asyncio.timeout(DEADLINE_S):
        # min_seq: read-your-writes, as submit --watch does right after admission answered
        code = await watch_sse(
            query.config(), events[0].task_id, Printer(True, out=out), after=last, min_seq=last
        )
    assert code == 0
    assert out.getvalue() == ""
