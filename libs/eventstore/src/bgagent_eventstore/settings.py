"""NATS connection settings shared by every service (built in ``main()``)."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from urllib.parse import urlsplit

import msgspec

from bgagent_contracts.subjects import DEFAULT_PREFIX, DEFAULT_STREAM, check_prefix

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A boolean environment variable (true/false, 1/0, yes/no, on/off); ValueError names the variable."""
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}: expected true or false, got {raw!r}")


class NatsAuth(msgspec.Struct, frozen=True, kw_only=True):
    """Who a process is on NATS: a user and its password, a NATS ``.creds`` file, or nobody.

    The password is read from ``password_file`` at every (re)connect, so rotated credentials are
    picked up after the server reloads its config; ``password`` (``NATS_PASSWORD``) is for
    environments that can only inject values. Neither is ever part of a URL, argv, repr or log.
    """

    user: str | None = None
    password_file: str | None = None
    password: str | None = None
    creds_file: str | None = None
    """A NATS credentials file (JWT + NKey seed) for operator-mode servers; needs ``nats-py[nkeys]``."""

    def __post_init__(self) -> None:
        if self.password_file is not None and self.password is not None:
            raise ValueError("NATS_PASSWORD_FILE and NATS_PASSWORD are both set: keep one (the file)")
        has_password = self.password_file is not None or self.password is not None
        if self.creds_file is not None and (self.user is not None or has_password):
            raise ValueError("NATS_CREDS carries its own identity: unset NATS_USER and NATS_PASSWORD(_FILE)")
        if self.user is not None and not has_password:
            raise ValueError(f"NATS_USER={self.user} needs NATS_PASSWORD_FILE (or NATS_PASSWORD)")
        if self.user is None and has_password:
            raise ValueError("NATS_PASSWORD_FILE/NATS_PASSWORD is set without NATS_USER")

    def __repr__(self) -> str:
        secret = "***" if self.password is not None else None
        return (
            f"NatsAuth(user={self.user!r}, password_file={self.password_file!r}, password={secret}, "
            f"creds_file={self.creds_file!r})"
        )

    @property
    def anonymous(self) -> bool:
        return self.user is None and self.creds_file is None

    def describe(self) -> str:
        """Who connects, for error messages (never the secret)."""
        if self.creds_file is not None:
            return f"the credentials in {self.creds_file}"
        if self.user is not None:
            return f"user {self.user!r}"
        return "no credentials"

    def read_password(self) -> str | None:
        """The password (from the file when one is set); OSError when the file cannot be read."""
        if self.password_file is not None:
            with open(self.password_file, encoding="utf-8") as f:
                return f.read().strip()
        return self.password

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NatsAuth:
        """``NATS_USER`` + ``NATS_PASSWORD_FILE`` (or ``NATS_PASSWORD``), or ``NATS_CREDS``; empty = unset."""
        e = os.environ if env is None else env
        return cls(
            user=e.get("NATS_USER") or None,
            password_file=e.get("NATS_PASSWORD_FILE") or None,
            password=e.get("NATS_PASSWORD") or None,
            creds_file=e.get("NATS_CREDS") or None,
        )


def nats_servers(url: str) -> list[str]:
    """The servers of a ``NATS_URL``: one URL, or several separated by commas (a cluster's nodes,
    ``nats://n1:4222,nats://n2:4222,nats://n3:4222``); blanks around them are dropped."""
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers:
        raise ValueError("NATS_URL is empty: give one URL, or a cluster's URLs separated by commas")
    return servers


def check_url(url: str) -> str:
    """A NATS URL (or comma-separated URLs) without a password in it (it would end up in logs and
    process listings)."""
    for server in url.split(","):
        if "@" in urlsplit(server.strip()).netloc:
            raise ValueError(
                "NATS_URL must not carry credentials: set NATS_USER and NATS_PASSWORD_FILE instead"
            )
    return url


LOCAL_REPO_ROOTS = "BGAGENT_LOCAL_REPO_ROOTS"


def local_repo_roots(env: Mapping[str, str]) -> tuple[str, ...]:
    """``BGAGENT_LOCAL_REPO_ROOTS``: absolute paths separated by ``os.pathsep`` (``:``), like ``PATH``.

    Unset or empty: local repositories are disabled. Roots are normalised (``/a/./b/`` → ``/a/b``)
    and deduplicated, not looked up on disk (a root may appear later). A relative root, or the
    boolean this setting replaced, is a ValueError naming the variable. Shared by admission and
    the runner, which must agree on the roots.
    """
    if env_flag(env, "BGAGENT_ALLOW_LOCAL_REPOS", False):
        raise ValueError(
            f"BGAGENT_ALLOW_LOCAL_REPOS was replaced by {LOCAL_REPO_ROOTS}: set it to the folders local "
            f"repositories may live in, separated by {os.pathsep!r}, and unset BGAGENT_ALLOW_LOCAL_REPOS"
        )
    roots: list[str] = []
    for part in env.get(LOCAL_REPO_ROOTS, "").split(os.pathsep):
        entry = part.strip()
        if not entry:
            continue
        if not entry.startswith("/"):
            raise ValueError(
                f"{LOCAL_REPO_ROOTS}: {entry!r} is not an absolute path "
                f"(roots are absolute paths separated by {os.pathsep!r})"
            )
        root = posixpath.normpath(entry)
        if root.startswith("//"):
            root = "/" + root.lstrip("/")
        if root not in roots:
            roots.append(root)
    return tuple(roots)


MAX_OUTAGE_S = 100.0
"""Upper bound of ``NatsSettings.outage_s``: retries stay inside the 120 s duplicate window."""


class NatsSettings(msgspec.Struct, frozen=True, kw_only=True):
    url: str = "nats://127.0.0.1:4222"
    stream: str = DEFAULT_STREAM
    prefix: str = DEFAULT_PREFIX
    replicas: int = 1
    max_age_days: float = 90.0
    auth: NatsAuth = NatsAuth()
    runner_ack_wait_s: float = 75.0
    """``BGAGENT_RUNNER_ACK_WAIT_S`` (provisioning): a killed runner's task is redelivered after this
    long (a live runner sends in-progress acks well inside it). Above ``outage_s``: a runner cut off
    from NATS for the whole outage budget keeps its attempt (no redelivery to another runner)."""
    heartbeat_ttl_s: float = 15.0
    """``BGAGENT_HEARTBEAT_TTL_S`` (provisioning): the heartbeat bucket's TTL; a runner silent this
    long is lost (runners beat every ``BGAGENT_HEARTBEAT_INTERVAL_S``, 5 s by default)."""
    outage_s: float = 60.0
    """``BGAGENT_NATS_OUTAGE_S``: how long a runner's appends and reads keep retrying (same ``Nats-Msg-Id``,
    same expected sequence) while NATS does not answer, before the attempt is given up. Below the stream's
    2-minute duplicate window, so a retry that lands after the first try is still recognised."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.outage_s <= MAX_OUTAGE_S:
            raise ValueError(
                f"BGAGENT_NATS_OUTAGE_S: {self.outage_s} is outside 0..{MAX_OUTAGE_S:g} seconds "
                "(retries must land within the stream's duplicate window)"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NatsSettings:
        e = os.environ if env is None else env
        # Defaults come from an instance: on a msgspec Struct, ``cls.url`` is a member descriptor.
        d = cls()
        settings = cls(
            url=check_url(e.get("NATS_URL", d.url)),
            stream=e.get("BGAGENT_STREAM", d.stream),
            prefix=check_prefix(e.get("BGAGENT_PREFIX", d.prefix)),
            replicas=int(e.get("BGAGENT_STREAM_REPLICAS", str(d.replicas))),
            max_age_days=float(e.get("BGAGENT_STREAM_MAX_AGE_DAYS", str(d.max_age_days))),
            runner_ack_wait_s=float(e.get("BGAGENT_RUNNER_ACK_WAIT_S", str(d.runner_ack_wait_s))),
            heartbeat_ttl_s=float(e.get("BGAGENT_HEARTBEAT_TTL_S", str(d.heartbeat_ttl_s))),
            auth=NatsAuth.from_env(e),
            outage_s=float(e.get("BGAGENT_NATS_OUTAGE_S", str(d.outage_s))),
        )
        return settings
