"""``python -m bgagent_runner``: run task slots until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from .settings import Settings
from .worker import Runner

logger = logging.getLogger(__name__)


async def serve(settings: Settings) -> None:
    runner = Runner(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runner.stop)
    await runner.run()


def main() -> None:
    settings = Settings.from_env()
    logging.basicConfig(
        level=os.environ.get("BGAGENT_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logger.info("starting runner %s (model %s)", settings.runner_id, settings.model)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
