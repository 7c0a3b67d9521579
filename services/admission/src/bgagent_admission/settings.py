"""Admission settings, built once in ``main()`` from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from bgagent_contracts.auth import TokenTable
from bgagent_eventstore import NatsSettings, env_flag
from bgagent_eventstore import local_repo_roots as shared_local_repo_roots

from .api import DEFAULT_MAX_BODY_BYTES


class SettingsError(ValueError):
    """The environment does not describe a usable admission service; the message names the variable."""


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    try:
        return env_flag(env, name, default)
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}: must be between {low} and {high}, got {value}")
    return value


def local_repo_roots(env: Mapping[str, str]) -> tuple[str, ...]:
    """``BGAGENT_LOCAL_REPO_ROOTS`` as the runner reads it (SettingsError instead of ValueError)."""
    try:
        return shared_local_repo_roots(env)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    nats: NatsSettings
    tokens: TokenTable
    """Static tokens (``BGAGENT_API_TOKENS``), for bootstrap and tests; merged with the managed ones."""
    managed_tokens: bool = True
    """``BGAGENT_MANAGED_TOKENS``: also accept the managed tokens of the tokens bucket (watched live)."""
    host: str = "127.0.0.1"
    port: int = 8080
    local_repo_roots: tuple[str, ...] = ()
    """Folders local repositories (absolute paths, ``file://``) may live in; empty disables them."""
    auto_provision: bool = False
    allow_task_network: bool = False
    """``BGAGENT_ALLOW_TASK_NETWORK``: tasks may ask for ``network: true`` (runners check again)."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    log_level: str = "INFO"
    ready_file: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        spec = e.get("BGAGENT_API_TOKENS", "")
        try:
            tokens = TokenTable.parse(spec)
        except ValueError as exc:
            raise SettingsError(f"BGAGENT_API_TOKENS: {exc}") from None
        managed = _flag(e, "BGAGENT_MANAGED_TOKENS", True)
        if not spec.strip() and not managed:
            raise SettingsError(
                "BGAGENT_API_TOKENS: no tokens configured and BGAGENT_MANAGED_TOKENS is off; "
                "set e.g. 'secret=alice,other=bob:admin', or use managed tokens (bgagent admin token create)"
            )
        try:
            nats = NatsSettings.from_env(e)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        return cls(
            nats=nats,
            tokens=tokens,
            managed_tokens=managed,
            host=e.get("BGAGENT_HTTP_HOST", "127.0.0.1") or "127.0.0.1",
            port=_int(e, "BGAGENT_ADMISSION_PORT", 8080, 0, 65535),
            local_repo_roots=local_repo_roots(e),
            auto_provision=_flag(e, "BGAGENT_AUTO_PROVISION", False),
            allow_task_network=_flag(e, "BGAGENT_ALLOW_TASK_NETWORK", False),
            max_body_bytes=_int(e, "BGAGENT_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, 1024, 16 * 1024 * 1024),
            log_level=(e.get("BGAGENT_LOG_LEVEL") or "INFO").upper(),
            ready_file=e.get("BGAGENT_READY_FILE") or None,
        )
