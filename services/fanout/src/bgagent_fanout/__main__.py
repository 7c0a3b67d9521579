"""``python -m bgagent_fanout``: keep one GitHub comment per task up to date."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from bgagent_contracts.subjects import comments_bucket, fanout_consumer
from bgagent_eventstore import JetStreamEventStore, connect, provision
from bgagent_eventstore.telemetry import setup_telemetry

from .comments import CommentIds, CommentKeeper
from .consumer import Fanout
from .github import GitHubClient
from .settings import Settings

logger = logging.getLogger("bgagent_fanout")


async def _provisioned(js: JetStreamContext, settings: Settings) -> KeyValue:
    """The comments bucket, after checking the stream and our consumer exist (or creating them)."""
    if settings.auto_provision:
        await provision(js, settings.nats)
    bucket = comments_bucket(settings.nats.prefix)
    consumer = fanout_consumer(settings.nats.prefix)
    try:
        await js.consumer_info(settings.nats.stream, consumer)
        return await js.key_value(bucket)
    except nats.js.errors.NotFoundError as exc:
        raise SystemExit(
            f"fanout: stream {settings.nats.stream!r}, consumer {consumer!r} or KV bucket {bucket!r} "
            "does not exist; run `bgagent admin init` (or set BGAGENT_AUTO_PROVISION=true)"
        ) from exc


async def serve(settings: Settings, stopping: asyncio.Event) -> None:
    """Connect, bind the consumer, write the ready file, consume until ``stopping``; drain NATS."""
    nc = await connect(settings.nats.url, name="bgagent-fanout", auth=settings.nats.auth)
    github = GitHubClient(
        settings.github_api_url,
        settings.github_token,
        timeout_s=settings.http_timeout_s,
        max_wait_s=settings.max_wait_s,
        secondary_wait_s=settings.secondary_wait_s,
        backoff_max_s=settings.backoff_max_s,
        stopping=stopping,
    )
    try:
        js = nc.jetstream()
        kv = await _provisioned(js, settings)
        store = JetStreamEventStore(nc, stream=settings.nats.stream, prefix=settings.nats.prefix)
        fanout = Fanout(
            nc,
            stream=settings.nats.stream,
            prefix=settings.nats.prefix,
            store=store,
            keeper=CommentKeeper(github, CommentIds(kv)),
            batch_max=settings.batch_max,
            fetch_timeout_s=settings.fetch_timeout_s,
            concurrency=settings.concurrency,
            linger_s=settings.linger_s,
        )
        runner = asyncio.create_task(fanout.run(stopping))
        bound = asyncio.create_task(fanout.bound())
        await asyncio.wait({runner, bound}, return_when=asyncio.FIRST_COMPLETED)
        if bound.done() and settings.ready_file:
            await asyncio.to_thread(Path(settings.ready_file).write_text, "ready\n")
        bound.cancel()
        await runner
    finally:
        await github.aclose()
        with contextlib.suppress(Exception):
            await nc.drain()


def main() -> None:
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    setup_telemetry("fanout")
    if not settings.github_token:
        logger.warning("GITHUB_TOKEN is not set: GitHub will refuse every comment")

    async def run() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await serve(settings, stopping)

    asyncio.run(run())
    logger.info("fanout stopped")


if __name__ == "__main__":
    main()
