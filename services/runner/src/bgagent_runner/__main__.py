"""``python -m bgagent_runner``: run task slots until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from bgagent_eventstore import StoreError
from bgagent_eventstore.telemetry import setup_telemetry
from bgagent_policy import HARD_DENY, PolicyEngine, PolicyLoadError

from .errors import RunnerError
from .gate import load_engine
from .logs import install_redaction
from .sandbox import SandboxUnavailable, probe
from .settings import Settings
from .worker import Runner

logger = logging.getLogger(__name__)


async def serve(settings: Settings, policy: PolicyEngine | None = None) -> None:
    runner = Runner(settings, policy=policy)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runner.stop)
    await runner.run()


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("BGAGENT_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    setup_telemetry("runner")
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        logger.error("invalid runner settings: %s", exc)
        raise SystemExit(2) from None
    install_redaction(settings.secrets)
    if settings.sandbox.mode == "off":
        logger.warning(
            "BGAGENT_SANDBOX=off: agent commands run WITHOUT a sandbox, as this runner's user, with its "
            "network and file system (every task_started records sandbox 'off'); use only for trusted repos"
        )
    else:
        try:
            logger.info("%s", probe(settings.sandbox))
        except SandboxUnavailable as exc:
            logger.error("runner not started: %s", exc)
            raise SystemExit(1) from None
    try:
        policy = load_engine(settings)
    except PolicyLoadError as exc:
        logger.error("runner not started: the policy set does not load: %s", exc)
        raise SystemExit(1) from None
    rules = policy.rules()
    logger.info(
        "policy: %d hard-deny and %d hard-gate rule(s)%s",
        sum(1 for r in rules if r.tier == HARD_DENY),
        sum(1 for r in rules if r.tier != HARD_DENY),
        f" (extra rules from {settings.policy_dir})" if settings.policy_dir else "",
    )
    logger.info("starting runner %s (model %s)", settings.runner_id, settings.model)
    try:
        asyncio.run(serve(settings, policy))
    except (StoreError, RunnerError) as exc:
        logger.error("runner stopped: %s", exc)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
