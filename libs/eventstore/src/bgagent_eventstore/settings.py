"""NATS connection settings shared by every service (built in ``main()``)."""

from __future__ import annotations

import os
from collections.abc import Mapping

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


class NatsSettings(msgspec.Struct, frozen=True, kw_only=True):
    url: str = "nats://127.0.0.1:4222"
    stream: str = DEFAULT_STREAM
    prefix: str = DEFAULT_PREFIX
    replicas: int = 1
    max_age_days: float = 90.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NatsSettings:
        e = os.environ if env is None else env
        # Defaults come from an instance: on a msgspec Struct, ``cls.url`` is a member descriptor.
        d = cls()
        settings = cls(
            url=e.get("NATS_URL", d.url),
            stream=e.get("BGAGENT_STREAM", d.stream),
            prefix=check_prefix(e.get("BGAGENT_PREFIX", d.prefix)),
            replicas=int(e.get("BGAGENT_STREAM_REPLICAS", str(d.replicas))),
            max_age_days=float(e.get("BGAGENT_STREAM_MAX_AGE_DAYS", str(d.max_age_days))),
        )
        return settings
