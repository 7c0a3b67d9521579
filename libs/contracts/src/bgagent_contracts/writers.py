"""Who writes what (DESIGN §3), and what else each service touches on NATS, as data.

``bgagent_eventstore.nats_auth`` turns this table into the nats-server authorization config: each
service connects as its own user and the server refuses a publish on a task subject whose event
type the service does not write. Pure: names only, nothing here talks to NATS.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .subjects import (
    comments_bucket,
    fanout_consumer,
    heartbeats_bucket,
    idempotency_bucket,
    poison_bucket,
    runner_consumer,
    tokens_bucket,
    traces_bucket,
)


class Role(enum.StrEnum):
    """A bgagent service; also its NATS user name."""

    ADMISSION = "admission"
    RUNNER = "runner"
    QUERY = "query"
    FANOUT = "fanout"
    RECONCILER = "reconciler"


class Bucket(enum.StrEnum):
    """A KV bucket or object store of bgagent (its name depends on the subject prefix)."""

    IDEMPOTENCY = "idempotency"
    COMMENTS = "comments"
    POISON = "poison"
    TRACES = "traces"
    TOKENS = "tokens"
    HEARTBEATS = "heartbeats"

    def bucket_name(self, prefix: str) -> str:
        return _BUCKET_NAMES[self](prefix)


_BUCKET_NAMES = {
    Bucket.IDEMPOTENCY: idempotency_bucket,
    Bucket.COMMENTS: comments_bucket,
    Bucket.POISON: poison_bucket,
    Bucket.TRACES: traces_bucket,
    Bucket.TOKENS: tokens_bucket,
    Bucket.HEARTBEATS: heartbeats_bucket,
}


class Durable(enum.StrEnum):
    """A durable consumer on the task stream (its name depends on the subject prefix)."""

    RUNNER = "runner"
    FANOUT = "fanout"

    def consumer_name(self, prefix: str) -> str:
        return runner_consumer(prefix) if self is Durable.RUNNER else fanout_consumer(prefix)


ADMISSION_WRITES: frozenset[str] = frozenset(
    {"task_submitted", "cancel_requested", "task_cancelled", "nudge_requested", "approval_decided"}
)
"""``task_cancelled`` only while nobody has started the task (``decide_cancel``)."""

RUNNER_WRITES: frozenset[str] = frozenset(
    {
        "task_started",
        "workspace_ready",
        "milestone",
        "agent_turn",
        "tool_called",
        "tool_result",
        "cost_updated",
        "nudge_acknowledged",
        "policy_denied",
        "approval_requested",
        "approval_expired",
        "agent_finished",
        "pr_opened",
        "pr_updated",
        "review_posted",
        "trace_stored",
        "task_completed",
        "task_failed",
        "task_cancelled",
        "task_timed_out",
    }
)

RECONCILER_WRITES: frozenset[str] = frozenset({"runner_lost", "task_requeued", "task_failed"})
"""``task_failed`` only with ``RUNNER_LOST`` or ``STRANDED`` (``bgagent_contracts.reconcile``)."""


@dataclass(frozen=True)
class Access:
    """What one service may do on NATS, in bgagent's terms (subjects come from ``nats_auth``).

    Every service may also read the stream (batched direct get, stream info).
    """

    appends: frozenset[str] = frozenset()
    """Event types it appends (publishes on ``<prefix>.task.*.<type>``)."""
    listens: frozenset[str] = frozenset()
    """Event types it subscribes to live over core NATS (the runner's cancel watch and approval wait)."""
    inspects: frozenset[Durable] = frozenset()
    """Durable consumers whose info it reads, never pulls from (the reconciler: the runner queue)."""
    advisories: bool = False
    """Whether it pulls the max-deliveries advisories of the runner consumer (its own durable)."""
    durable: Durable | None = None
    """The durable consumer it pulls from and acks."""
    follows: bool = False
    """Whether it replays and tails the stream with ordered (ephemeral) consumers."""
    kv: frozenset[Bucket] = field(default_factory=frozenset)
    """KV buckets it reads and writes, every key."""
    kv_reads: frozenset[Bucket] = field(default_factory=frozenset)
    """KV buckets it reads and watches, never writes (the managed API tokens; ``admin`` writes them)."""
    kv_own_keys: frozenset[Bucket] = field(default_factory=frozenset)
    """KV buckets it writes only under its own key prefix ``<role>.`` (the poison records)."""
    object_stores: frozenset[Bucket] = field(default_factory=frozenset)
    """Object stores it writes (and replaces objects in)."""


ACCESS: Mapping[Role, Access] = MappingProxyType(
    {
        Role.ADMISSION: Access(
            appends=ADMISSION_WRITES,
            kv=frozenset({Bucket.IDEMPOTENCY}),
            kv_reads=frozenset({Bucket.TOKENS}),
        ),
        Role.RUNNER: Access(
            appends=RUNNER_WRITES,
            listens=frozenset({"cancel_requested", "approval_decided"}),
            durable=Durable.RUNNER,
            kv=frozenset({Bucket.HEARTBEATS}),
            kv_own_keys=frozenset({Bucket.POISON}),
            object_stores=frozenset({Bucket.TRACES}),
        ),
        Role.QUERY: Access(follows=True, kv_reads=frozenset({Bucket.TOKENS})),
        Role.FANOUT: Access(
            durable=Durable.FANOUT,
            kv=frozenset({Bucket.COMMENTS}),
            kv_own_keys=frozenset({Bucket.POISON}),
        ),
        Role.RECONCILER: Access(
            appends=RECONCILER_WRITES,
            inspects=frozenset({Durable.RUNNER}),
            advisories=True,
            kv_reads=frozenset({Bucket.HEARTBEATS}),
        ),
    }
)

WRITERS: Mapping[Role, frozenset[str]] = MappingProxyType({role: a.appends for role, a in ACCESS.items()})
"""DESIGN §3's "who writes what": role → the event types it may append (query and fanout: none)."""


def writers_of(event_type: str) -> frozenset[Role]:
    """The roles allowed to append ``event_type`` (empty for an unknown type)."""
    return frozenset(role for role, types in WRITERS.items() if event_type in types)
