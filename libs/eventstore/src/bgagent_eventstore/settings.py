"""NATS connection settings shared by every service (built in ``main()``)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from bgagent_contracts.subjects import DEFAULT_PREFIX, DEFAULT_STREAM, check_prefix


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
