"""Where the CLI finds the services: environment first, then the dev stack's state file."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

from bgagent_contracts.subjects import DEFAULT_PREFIX, DEFAULT_STREAM


def home_dir(env: Mapping[str, str] | None = None) -> Path:
    """BGAGENT_HOME, default ~/.bgagent: CLI state and the dev stack live here."""
    e = os.environ if env is None else env
    return Path(e.get("BGAGENT_HOME") or Path.home() / ".bgagent")


def stack_file(home: Path) -> Path:
    return home / "dev" / "stack.json"


class CliConfig(msgspec.Struct, frozen=True, kw_only=True):
    api_url: str | None = None
    query_url: str | None = None
    token: str | None = None
    nats_url: str | None = None
    stream: str = DEFAULT_STREAM
    prefix: str = DEFAULT_PREFIX
    database_url: str | None = None

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None) -> CliConfig:
        """Environment variables win; anything unset comes from a running ``bgagent dev up`` stack."""
        e = os.environ if env is None else env
        stack: dict[str, str] = {}
        path = stack_file(home_dir(e))
        if path.exists():
            try:
                raw = json.loads(path.read_text())
                stack = {k: str(v) for k, v in raw.get("client", {}).items()}
            except (OSError, ValueError):
                stack = {}

        def pick(env_name: str, key: str) -> str | None:
            return e.get(env_name) or stack.get(key) or None

        return cls(
            api_url=pick("BGAGENT_API_URL", "api_url"),
            query_url=pick("BGAGENT_QUERY_URL", "query_url"),
            token=pick("BGAGENT_TOKEN", "token"),
            nats_url=pick("NATS_URL", "nats_url"),
            stream=pick("BGAGENT_STREAM", "stream") or DEFAULT_STREAM,
            prefix=pick("BGAGENT_PREFIX", "prefix") or DEFAULT_PREFIX,
            database_url=pick("DATABASE_URL", "database_url"),
        )
