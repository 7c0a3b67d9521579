"""Stream, subject, consumer and bucket names: one place, as functions.

Names take a ``prefix`` (default ``bgagent``) so two deployments, or two test
runs, can share one NATS server without seeing each other's tasks.
"""

from __future__ import annotations

import re

DEFAULT_PREFIX = "bgagent"
DEFAULT_STREAM = "BGAGENT_TASKS"

_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def is_task_id(value: str) -> bool:
    """True for a 26-character Crockford ULID in canonical upper case."""
    return bool(_ULID.match(value))


def check_prefix(prefix: str) -> str:
    """Validate a subject prefix (dot-separated tokens, no wildcards)."""
    if not prefix or not all(_TOKEN.match(part) for part in prefix.split(".")):
        raise ValueError(f"invalid subject prefix {prefix!r}: use letters, digits, '_', '-' and dots")
    return prefix


def task_subject(task_id: str, event_type: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The subject one event of one task is stored on."""
    return f"{prefix}.task.{task_id}.{event_type}"


def task_filter(task_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Every event of one task (the optimistic-concurrency scope)."""
    return f"{prefix}.task.{task_id}.*"


def all_tasks_filter(prefix: str = DEFAULT_PREFIX) -> str:
    """Every event of every task: the stream's subject space."""
    return f"{prefix}.task.*.*"


def event_type_filter(event_type: str, prefix: str = DEFAULT_PREFIX) -> str:
    """One event type across all tasks, e.g. the runner's work filter."""
    return f"{prefix}.task.*.{event_type}"


def parse_subject(subject: str, prefix: str = DEFAULT_PREFIX) -> tuple[str, str]:
    """Split a task subject into ``(task_id, event_type)``; ValueError if it is not one."""
    head = f"{prefix}.task."
    if not subject.startswith(head):
        raise ValueError(f"not a task subject: {subject!r}")
    rest = subject[len(head) :].split(".")
    if len(rest) != 2 or not rest[0] or not rest[1]:
        raise ValueError(f"not a task subject: {subject!r}")
    return rest[0], rest[1]


def runner_consumer(prefix: str = DEFAULT_PREFIX) -> str:
    """Durable pull consumer shared by all runner replicas (work distribution)."""
    return f"{prefix.replace('.', '_')}_runner"


def fanout_consumer(prefix: str = DEFAULT_PREFIX) -> str:
    """Durable consumer of the fanout service (every event, in order)."""
    return f"{prefix.replace('.', '_')}_fanout"


def comments_bucket(prefix: str = DEFAULT_PREFIX) -> str:
    """KV bucket: task id → GitHub comment id."""
    return f"{prefix.replace('.', '_')}_comments"


def idempotency_bucket(prefix: str = DEFAULT_PREFIX) -> str:
    """KV bucket: hashed (user, Idempotency-Key) → task id."""
    return f"{prefix.replace('.', '_')}_idempotency"


def traces_bucket(prefix: str = DEFAULT_PREFIX) -> str:
    """Object store bucket for full task traces."""
    return f"{prefix.replace('.', '_')}_traces"


def poison_bucket(prefix: str = DEFAULT_PREFIX) -> str:
    """KV bucket: ``<reader>.<seq>`` → why a reader skipped a message (fanout, runner)."""
    return f"{prefix.replace('.', '_')}_poison"


def tokens_bucket(prefix: str = DEFAULT_PREFIX) -> str:
    """KV bucket: token id → managed API token record (SHA-256 digest, user, admin, revoked_at)."""
    return f"{prefix.replace('.', '_')}_tokens"


def heartbeats_bucket(prefix: str = DEFAULT_PREFIX) -> str:
    """KV bucket with a TTL: ``task.<task_id>`` → the runner holding it, ``runner.<id>`` → a live runner."""
    return f"{prefix.replace('.', '_')}_heartbeats"


def reconciler_consumer(prefix: str = DEFAULT_PREFIX) -> str:
    """Durable consumer of the reconcilers on the advisory stream (shared by every instance)."""
    return f"{prefix.replace('.', '_')}_reconciler"


def advisory_stream(stream: str = DEFAULT_STREAM) -> str:
    """The stream that keeps JetStream's max-deliveries advisories of the runner consumer."""
    return f"{stream}_ADVISORIES"


def max_deliveries_subject(stream: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The advisory JetStream publishes when the runner consumer gives up on a message."""
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{runner_consumer(prefix)}"
