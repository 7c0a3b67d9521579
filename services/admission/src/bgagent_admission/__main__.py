"""``python -m bgagent_admission``: serve the admission API until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import nats.js.errors
import uvicorn
from nats.aio.client import Client

from bgagent_contracts.auth import TokenIndex
from bgagent_contracts.subjects import idempotency_bucket
from bgagent_eventstore import (
    JetStreamEventStore,
    StoreError,
    TokenBucketMissingError,
    TokenWatcher,
    connect,
    provision,
    watch_tokens,
)
from bgagent_eventstore.telemetry import reapply_log_format, setup_telemetry
from bgagent_web import uvicorn_options

from .api import create_app
from .handlers import Admission
from .idempotency import KvIdempotencyStore
from .settings import Settings, SettingsError

logger = logging.getLogger("bgagent_admission")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: main() owns SIGTERM/SIGINT and drains NATS after."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _bucket(nc: Client, settings: Settings) -> KvIdempotencyStore:
    js = nc.jetstream()
    bucket = idempotency_bucket(settings.nats.prefix)
    if settings.auto_provision:
        await provision(js, settings.nats)
    try:
        kv = await js.key_value(bucket)
        await js.stream_info(settings.nats.stream)
    except nats.js.errors.NotFoundError as exc:
        raise SystemExit(
            f"admission: stream {settings.nats.stream!r} or KV bucket {bucket!r} does not exist; "
            "run `bgagent admin init` (or set BGAGENT_AUTO_PROVISION=true)"
        ) from exc
    return KvIdempotencyStore(kv)


async def _tokens(nc: Client, settings: Settings) -> tuple[TokenIndex, TokenWatcher | None]:
    """The static tokens, and (unless BGAGENT_MANAGED_TOKENS=false) the managed ones, kept current."""
    index = TokenIndex(settings.tokens)
    if not settings.managed_tokens:
        return index, None
    try:
        watcher = await watch_tokens(nc.jetstream(), settings.nats.prefix, index)
    except TokenBucketMissingError as exc:
        raise SystemExit(
            f"admission: {exc} (or set BGAGENT_AUTO_PROVISION=true, or BGAGENT_MANAGED_TOKENS=false)"
        ) from exc
    logger.info("API tokens: %d static, %d managed", index.static_count, index.managed_count)
    return index, watcher


async def run(settings: Settings) -> None:
    nc = await connect(settings.nats.url, name="bgagent-admission", auth=settings.nats.auth)
    watcher: TokenWatcher | None = None
    try:
        store = JetStreamEventStore(nc, stream=settings.nats.stream, prefix=settings.nats.prefix)
        admission = Admission(store, await _bucket(nc, settings), prefix=settings.nats.prefix)
        tokens, watcher = await _tokens(nc, settings)

        async def ready() -> bool:
            return bool(nc.is_connected)

        app = create_app(
            admission,
            tokens=tokens,
            ready=ready,
            local_roots=settings.local_repo_roots,
            allow_task_network=settings.allow_task_network,
            max_body_bytes=settings.max_body_bytes,
        )
        reapply_log_format()  # building the app applied Litestar's logging config
        config = uvicorn.Config(app, **uvicorn_options(), host=settings.host, port=settings.port)
        server = _Server(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _stop, server, sig)
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            logger.info("admission listening on http://%s:%d", settings.host, settings.port)
            roots = settings.local_repo_roots
            logger.info("local repositories: %s", ", ".join(roots) if roots else "disabled")
            logger.info(
                "tasks may ask for network access: %s", "yes" if settings.allow_task_network else "no"
            )
            if settings.ready_file:
                await asyncio.to_thread(Path(settings.ready_file).write_text, "ready\n")
        await serving
    finally:
        if watcher is not None:
            await watcher.close()
        with contextlib.suppress(Exception):
            await nc.drain()
        logger.info("admission stopped")


def _stop(server: uvicorn.Server, sig: signal.Signals) -> None:
    logger.info("received %s, shutting down", sig.name)
    if server.should_exit:
        server.force_exit = True
    server.should_exit = True


def main() -> None:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        sys.exit(f"admission: {exc}")
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    setup_telemetry("admission")
    try:
        asyncio.run(run(settings))
    except StoreError as exc:
        sys.exit(f"admission: {exc}")


if __name__ == "__main__":
    main()
