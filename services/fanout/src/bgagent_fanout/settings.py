"""Settings of the fanout service, built once in ``main()`` from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from bgagent_eventstore import NatsSettings, env_flag

DEFAULT_GITHUB_API_URL = "https://api.github.com"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    nats: NatsSettings
    github_token: str = ""
    github_api_url: str = DEFAULT_GITHUB_API_URL
    batch_max: int = 100
    """Messages fetched per pull; one batch becomes at most one edit per task."""
    fetch_timeout_s: float = 0.5
    linger_s: float = 0.2
    """After a batch's first message, keep gathering this long: a burst becomes one edit."""
    concurrency: int = 4
    """Tasks whose comments are upserted at the same time within one batch."""
    max_wait_s: float = 900.0
    """Longest single wait for a GitHub rate limit to reset (Retry-After / x-ratelimit-reset)."""
    secondary_wait_s: float = 60.0
    """Wait after a secondary rate limit that names no time (GitHub asks for at least a minute)."""
    backoff_max_s: float = 30.0
    """Cap of the exponential backoff after 5xx answers and network errors."""
    http_timeout_s: float = 30.0
    auto_provision: bool = False
    """Create the stream, consumers and buckets at start (``BGAGENT_AUTO_PROVISION``), as admin init does."""
    ready_file: str | None = None
    log_level: str = "INFO"

    def __repr__(self) -> str:  # never log the token
        return f"Settings(nats={self.nats!r}, github_api_url={self.github_api_url!r}, token=***)"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        return cls(
            nats=NatsSettings.from_env(e),
            github_token=e.get("GITHUB_TOKEN", ""),
            github_api_url=e.get("BGAGENT_GITHUB_API_URL", DEFAULT_GITHUB_API_URL).rstrip("/"),
            batch_max=int(e.get("BGAGENT_FANOUT_BATCH_MAX", "100")),
            fetch_timeout_s=float(e.get("BGAGENT_FANOUT_FETCH_TIMEOUT_S", "0.5")),
            linger_s=float(e.get("BGAGENT_FANOUT_LINGER_S", "0.2")),
            concurrency=int(e.get("BGAGENT_FANOUT_CONCURRENCY", "4")),
            max_wait_s=float(e.get("BGAGENT_FANOUT_MAX_WAIT_S", "900")),
            secondary_wait_s=float(e.get("BGAGENT_FANOUT_SECONDARY_WAIT_S", "60")),
            backoff_max_s=float(e.get("BGAGENT_FANOUT_BACKOFF_MAX_S", "30")),
            http_timeout_s=float(e.get("BGAGENT_FANOUT_HTTP_TIMEOUT_S", "30")),
            auto_provision=env_flag(e, "BGAGENT_AUTO_PROVISION", False),
            ready_file=e.get("BGAGENT_READY_FILE") or None,
            log_level=e.get("BGAGENT_LOG_LEVEL", "INFO").upper(),
        )
