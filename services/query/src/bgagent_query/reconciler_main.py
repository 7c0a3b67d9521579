"""``python -m bgagent_query.reconciler_main``: the reconciler as its own process (ADR 0006)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

import asyncpg
import nats.errors

from bgagent_contracts.reconcile import Policy
from bgagent_eventstore import StoreError, connect
from bgagent_eventstore.heartbeats import bucket
from bgagent_eventstore.telemetry import setup_telemetry

from .reconciler import Reconciler
from .settings import ReconcilerSettings

logger = logging.getLogger("bgagent_query.reconciler")


async def run(settings: ReconcilerSettings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    nc = await connect(settings.nats.url, name="bgagent-reconciler", auth=settings.nats.auth)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    reconciler: Reconciler | None = None
    try:
        reconciler = Reconciler(
            nc,
            pool,
            await bucket(nc.jetstream(), settings.nats.prefix),
            stream=settings.nats.stream,
            prefix=settings.nats.prefix,
            policy=Policy(
                grace_s=settings.grace_s,
                redelivery_s=settings.redelivery_s,
                max_attempts=settings.max_attempts,
                stranded_after_s=settings.stranded_after_s,
            ),
            interval_s=settings.interval_s,
        )
        logger.info("reconciler running every %.1f s on %s", settings.interval_s, settings.nats.stream)
        if settings.ready_file:
            await asyncio.to_thread(Path(settings.ready_file).write_text, "ready\n")
        await reconciler.run(stop)
        return 0
    finally:
        if reconciler is not None:
            await reconciler.close()
        await pool.close()
        with contextlib.suppress(nats.errors.Error):
            await nc.close()  # nothing to flush: every append was awaited


def main() -> None:
    settings = ReconcilerSettings.from_env()
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    setup_telemetry("reconciler")
    try:
        sys.exit(asyncio.run(run(settings)))
    except StoreError as exc:
        sys.exit(f"reconciler: {exc}")
    except nats.errors.Error as exc:  # e.g. the heartbeat bucket is missing: `bgagent admin init`
        sys.exit(f"reconciler: {exc}; run 'bgagent admin init'")


if __name__ == "__main__":
    main()
