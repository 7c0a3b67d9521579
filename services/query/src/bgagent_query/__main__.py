"""``python -m bgagent_query``: the projector and the read API in one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg
import nats.errors
import uvicorn

from bgagent_contracts.auth import TokenIndex, TokenTable
from bgagent_eventstore import StoreError, TokenWatcher, connect, watch_tokens
from bgagent_eventstore.telemetry import reapply_log_format, setup_telemetry
from bgagent_web import uvicorn_options

from .api import create_app
from .migrations import migrate
from .projector import Projector
from .settings import Settings
from .watch import ProjectionWatch

logger = logging.getLogger("bgagent_query")


async def run(settings: Settings) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(stop.set)

    # uvicorn installs its own handlers while serving and re-raises the signal afterwards.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    tokens = TokenIndex(TokenTable.parse(settings.api_tokens))  # static + managed (kept current)
    nc = await connect(settings.nats.url, name="bgagent-query", auth=settings.nats.auth)
    token_watch: TokenWatcher | None = None
    if settings.managed_tokens:
        token_watch = await watch_tokens(nc.jetstream(), settings.nats.prefix, tokens)
    pool = await asyncpg.create_pool(
        settings.database_url, min_size=1, max_size=settings.pool_max, timeout=settings.pg_connect_timeout_s
    )
    async with pool.acquire() as conn:
        applied = await migrate(conn)
    if applied:
        logger.info("schema migrated to version %d", applied[-1])
    watch = ProjectionWatch(pool, settings.database_url, name=settings.projector_name)
    await watch.start()

    async def ready() -> bool:
        if not nc.is_connected:
            return False
        try:
            async with pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
            return False
        return True

    app = create_app(
        pool=pool,
        watch=watch,
        tokens=tokens,
        prefix=settings.nats.prefix,
        ready=ready,
        min_seq_wait_s=settings.min_seq_wait_s,
        nc=nc,
        stream=settings.nats.stream,
        sse_ping_s=settings.sse_ping_s,
        sse_max_streams=settings.sse_max_streams,
    )
    reapply_log_format()  # building the app applied Litestar's logging config
    server = uvicorn.Server(
        uvicorn.Config(app, **uvicorn_options(), host=settings.http_host, port=settings.http_port)
    )
    tasks: list[asyncio.Task[None]] = [asyncio.create_task(server.serve(), name="http")]
    projector: Projector | None = None
    if settings.projector_enabled:
        projector = Projector(
            pool,
            nc,
            stream=settings.nats.stream,
            prefix=settings.nats.prefix,
            name=settings.projector_name,
            batch_max=settings.batch_max,
            quiet_s=settings.batch_quiet_s,
            retry_max_s=settings.projector_retry_max_s,
        )
        tasks.append(asyncio.create_task(projector.run(), name="projector"))
    stopper = asyncio.create_task(stop.wait(), name="stop")
    try:
        await _until_ready(server, projector, [*tasks, stopper])
        if server.started and not stop.is_set():
            logger.info(
                "query serving on http://%s:%d (stream %s)",
                settings.http_host,
                settings.http_port,
                settings.nats.stream,
            )
            _write_ready_file(settings.ready_file)
        done, _ = await asyncio.wait({*tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
        return _exit_code(done, stopper)
    finally:
        logger.info("query shutting down")
        server.should_exit = True
        for task in tasks[1:]:
            task.cancel()
        stopper.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await watch.close()
        if token_watch is not None:
            await token_watch.close()
        await pool.close()
        with contextlib.suppress(nats.errors.Error):
            await nc.drain()


async def _until_ready(
    server: uvicorn.Server, projector: Projector | None, watched: list[asyncio.Task[Any]]
) -> None:
    """Wait until HTTP listens and the projector has subscribed (or something stopped)."""
    while not server.started and not any(t.done() for t in watched):
        await asyncio.sleep(0.02)
    if projector is not None and not any(t.done() for t in watched):
        started = asyncio.ensure_future(projector.started())
        await asyncio.wait({started, *watched}, timeout=10.0, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()


def _write_ready_file(path: str | None) -> None:
    if path:
        Path(path).write_text("ready\n")


def _exit_code(done: set[asyncio.Task[Any]], stopper: asyncio.Task[Any]) -> int:
    code = 0
    for task in done:
        if task is not stopper and not task.cancelled() and task.exception() is not None:
            logger.error("%s stopped: %r", task.get_name(), task.exception())
            code = 1
    return code


def main() -> None:
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    setup_telemetry("query")
    try:
        sys.exit(asyncio.run(run(settings)))
    except StoreError as exc:  # e.g. no tokens bucket: `bgagent admin init`
        sys.exit(f"query: {exc}")


if __name__ == "__main__":
    main()
