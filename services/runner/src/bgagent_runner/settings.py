"""Runner settings, built once in ``main()`` from the environment."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import msgspec
from ulid import ULID

from bgagent_eventstore import NatsSettings, env_flag, local_repo_roots

from .sandbox import SandboxSettings

DEFAULT_MODEL = "claude-sonnet-4-6"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    nats: NatsSettings
    runner_id: str
    slots: int = 2
    work_dir: str = "/tmp/bgagent-work"
    local_repo_roots: tuple[str, ...] = ()
    """Folders local repositories may live in (clone and push); empty: no local repositories."""
    github_token: str | None = None
    github_api_url: str = "https://api.github.com"
    github_git_url: str = "https://github.com"
    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    model: str = DEFAULT_MODEL
    max_tokens: int = 8192
    tool_timeout_s: float = 120.0
    tool_output_cap: int = 30_000
    task_timeout_s: float | None = 3600.0
    in_progress_interval_s: float = 10.0
    heartbeat_interval_s: float = 5.0
    """How often the runner re-puts its heartbeat keys (the bucket's TTL is 15 s)."""
    fetch_timeout_s: float = 1.0
    nak_delay_s: float = 30.0
    max_attempts: int = 5
    """``BGAGENT_MAX_ATTEMPTS`` (the reconciler reads it too): a task is never claimed for more."""
    shutdown_grace_s: float = 30.0
    keep_workspaces: bool = False
    ready_file: str | None = None
    sandbox: SandboxSettings = msgspec.field(default_factory=SandboxSettings)
    """``BGAGENT_SANDBOX*``: bubblewrap and resource limits for agent commands (``off`` to opt out)."""
    policy_dir: str | None = None
    """``BGAGENT_POLICY_DIR``: extra ``hard_deny.cedar`` / ``hard_gate.cedar`` next to the starter set."""
    policy_disable: tuple[str, ...] = ()
    """``BGAGENT_POLICY_DISABLE``: hard-gate rule ids to drop (comma separated; hard-deny ones refuse)."""
    approval_timeout_floor_s: float = 30.0
    """No gated call waits less (``BGAGENT_APPROVAL_TIMEOUT_FLOOR_S``; lowered only by tests)."""
    approval_timeout_ceiling_s: float = 3600.0
    """No gated call waits longer (``BGAGENT_APPROVAL_TIMEOUT_CEILING_S``)."""
    approval_max_gates: int = 50
    """``BGAGENT_APPROVAL_MAX_GATES``: distinct approval requests per task; one more fails the task."""
    approval_requests_per_minute: int = 20
    """``BGAGENT_APPROVAL_REQUESTS_PER_MINUTE``: new requests per task per minute; more are denied."""

    @property
    def secrets(self) -> tuple[str, ...]:
        """Exact secret values to redact from every preview and log."""
        return tuple(s for s in (self.github_token, self.anthropic_api_key) if s)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        timeout = e.get("BGAGENT_TASK_TIMEOUT_S", "3600")
        return cls(
            nats=NatsSettings.from_env(e),
            runner_id=e.get("BGAGENT_RUNNER_ID") or f"{socket.gethostname()}-{str(ULID())[-8:].lower()}",
            slots=int(e.get("BGAGENT_RUNNER_SLOTS", "2")),
            work_dir=e.get("BGAGENT_WORK_DIR", "/tmp/bgagent-work"),
            local_repo_roots=local_repo_roots(e),
            github_token=e.get("GITHUB_TOKEN") or None,
            github_api_url=e.get("BGAGENT_GITHUB_API_URL", "https://api.github.com").rstrip("/"),
            github_git_url=e.get("BGAGENT_GITHUB_GIT_URL", "https://github.com").rstrip("/"),
            anthropic_api_key=e.get("ANTHROPIC_API_KEY") or None,
            anthropic_base_url=e.get("ANTHROPIC_BASE_URL") or None,
            model=e.get("BGAGENT_MODEL", DEFAULT_MODEL),
            max_tokens=int(e.get("BGAGENT_MAX_TOKENS", "8192")),
            tool_timeout_s=float(e.get("BGAGENT_TOOL_TIMEOUT_S", "120")),
            tool_output_cap=int(e.get("BGAGENT_TOOL_OUTPUT_CAP", "30000")),
            task_timeout_s=float(timeout) if timeout and float(timeout) > 0 else None,
            in_progress_interval_s=float(e.get("BGAGENT_IN_PROGRESS_INTERVAL_S", "10")),
            heartbeat_interval_s=float(e.get("BGAGENT_HEARTBEAT_INTERVAL_S", "5")),
            nak_delay_s=float(e.get("BGAGENT_NAK_DELAY_S", "30")),
            max_attempts=int(e.get("BGAGENT_MAX_ATTEMPTS", "5")),
            shutdown_grace_s=float(e.get("BGAGENT_SHUTDOWN_GRACE_S", "30")),
            keep_workspaces=env_flag(e, "BGAGENT_KEEP_WORKSPACES", False),
            ready_file=e.get("BGAGENT_READY_FILE") or None,
            sandbox=SandboxSettings.from_env(e),
            policy_dir=e.get("BGAGENT_POLICY_DIR") or None,
            policy_disable=tuple(
                r.strip() for r in e.get("BGAGENT_POLICY_DISABLE", "").split(",") if r.strip()
            ),
            approval_timeout_floor_s=float(e.get("BGAGENT_APPROVAL_TIMEOUT_FLOOR_S", "30")),
            approval_timeout_ceiling_s=float(e.get("BGAGENT_APPROVAL_TIMEOUT_CEILING_S", "3600")),
            approval_max_gates=int(e.get("BGAGENT_APPROVAL_MAX_GATES", "50")),
            approval_requests_per_minute=int(e.get("BGAGENT_APPROVAL_REQUESTS_PER_MINUTE", "20")),
        )
