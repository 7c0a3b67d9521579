"""Settings of the query service, built once in ``main()`` from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from bgagent_eventstore import NatsSettings, env_flag

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/bgagent"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    nats: NatsSettings
    database_url: str = DEFAULT_DATABASE_URL
    api_tokens: str = ""
    """``tok=user,tok2=bob:admin``: static tokens for bootstrap and tests (parsed in ``main()``), merged
    with the managed tokens of the tokens bucket."""
    managed_tokens: bool = True
    """``BGAGENT_MANAGED_TOKENS``: also accept the managed tokens of the tokens bucket (watched live)."""
    http_host: str = "127.0.0.1"
    http_port: int = 8081
    projector_name: str = "tasks"
    projector_enabled: bool = True
    batch_max: int = 1000
    batch_quiet_s: float = 0.01
    min_seq_wait_s: float = 5.0
    pool_max: int = 10
    pg_connect_timeout_s: float = 5.0
    """``BGAGENT_QUERY_PG_CONNECT_TIMEOUT_S``: a request that needs a new database connection answers 503
    after this long when PostgreSQL does not answer (asyncpg would wait 60 s)."""
    projector_retry_max_s: float = 5.0
    """``BGAGENT_PROJECTOR_RETRY_MAX_S``: cap of the projector's backoff while its database or NATS is
    down."""
    sse_ping_s: float = 15.0
    """Seconds between ``: ping`` comment lines on an idle event stream."""
    sse_max_streams: int = 1000
    """Open event streams per process; beyond it the stream route answers 503."""
    ready_file: str | None = None
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        return cls(
            nats=NatsSettings.from_env(e),
            database_url=e.get("DATABASE_URL", DEFAULT_DATABASE_URL),
            api_tokens=e.get("BGAGENT_API_TOKENS", ""),
            managed_tokens=env_flag(e, "BGAGENT_MANAGED_TOKENS", True),
            http_host=e.get("BGAGENT_HTTP_HOST", "127.0.0.1"),
            http_port=int(e.get("BGAGENT_QUERY_PORT", "8081")),
            projector_name=e.get("BGAGENT_PROJECTOR_NAME", "tasks"),
            projector_enabled=env_flag(e, "BGAGENT_QUERY_PROJECTOR", True),
            batch_max=int(e.get("BGAGENT_PROJECTOR_BATCH_MAX", "1000")),
            batch_quiet_s=float(e.get("BGAGENT_PROJECTOR_BATCH_QUIET_S", "0.01")),
            min_seq_wait_s=float(e.get("BGAGENT_QUERY_MIN_SEQ_WAIT_S", "5.0")),
            pool_max=int(e.get("BGAGENT_QUERY_PG_POOL_MAX", "10")),
            pg_connect_timeout_s=float(e.get("BGAGENT_QUERY_PG_CONNECT_TIMEOUT_S", "5")),
            projector_retry_max_s=float(e.get("BGAGENT_PROJECTOR_RETRY_MAX_S", "5")),
            sse_ping_s=float(e.get("BGAGENT_QUERY_SSE_PING_S", "15")),
            sse_max_streams=int(e.get("BGAGENT_QUERY_SSE_MAX_STREAMS", "1000")),
            ready_file=e.get("BGAGENT_READY_FILE") or None,
            log_level=e.get("BGAGENT_LOG_LEVEL", "INFO").upper(),
        )


class ReconcilerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """``python -m bgagent_query.reconciler_main`` (NATS user ``reconciler``; reads query's read model)."""

    nats: NatsSettings
    database_url: str = DEFAULT_DATABASE_URL
    interval_s: float = 5.0
    grace_s: float = 15.0
    redelivery_s: float = 90.0
    """After ``runner_lost``, how long the consumer may take to redeliver (its ack wait, 75 s, + 15 s)."""
    max_attempts: int = 5
    stranded_after_s: float = 1200.0
    ready_file: str | None = None
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReconcilerSettings:
        e = os.environ if env is None else env
        return cls(
            nats=NatsSettings.from_env(e),
            database_url=e.get("DATABASE_URL", DEFAULT_DATABASE_URL),
            interval_s=float(e.get("BGAGENT_RECONCILE_INTERVAL_S", "5")),
            grace_s=float(e.get("BGAGENT_RECONCILE_GRACE_S", "15")),
            redelivery_s=float(e.get("BGAGENT_RECONCILE_REDELIVERY_S", "90")),
            max_attempts=int(e.get("BGAGENT_MAX_ATTEMPTS", "5")),
            stranded_after_s=float(e.get("BGAGENT_STRANDED_AFTER_S", "1200")),
            ready_file=e.get("BGAGENT_READY_FILE") or None,
            log_level=e.get("BGAGENT_LOG_LEVEL", "INFO").upper(),
        )
