"""Provision the stream, consumers, KV buckets and object store; idempotent."""

from __future__ import annotations

import logging

import msgspec
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from bgagent_contracts import WORK_EVENT_TYPES
from bgagent_contracts.subjects import (
    advisory_stream,
    all_tasks_filter,
    comments_bucket,
    event_type_filter,
    fanout_consumer,
    heartbeats_bucket,
    idempotency_bucket,
    max_deliveries_subject,
    poison_bucket,
    reconciler_consumer,
    runner_consumer,
    tokens_bucket,
    traces_bucket,
)

from .poison import POISON_TTL_S
from .settings import NatsSettings

logger = logging.getLogger(__name__)

DUPLICATE_WINDOW_S = 120.0
RUNNER_MAX_DELIVER = 5
TOKENS_HISTORY = 5
"""Revisions kept per managed API token (creation, revocation): who had it, and since when."""


class ProvisionReport(msgspec.Struct, kw_only=True):
    """What ``admin init`` did: names of assets created, updated, or already right."""

    created: list[str] = msgspec.field(default_factory=list)
    updated: list[str] = msgspec.field(default_factory=list)
    unchanged: list[str] = msgspec.field(default_factory=list)


def stream_config(s: NatsSettings) -> StreamConfig:
    return StreamConfig(
        name=s.stream,
        subjects=[all_tasks_filter(s.prefix)],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=s.max_age_days * 86400.0,
        duplicate_window=DUPLICATE_WINDOW_S,
        allow_direct=True,
        num_replicas=s.replicas,
        discard=DiscardPolicy.OLD,
    )


def runner_consumer_config(s: NatsSettings) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=runner_consumer(s.prefix),
        filter_subjects=[event_type_filter(t, s.prefix) for t in WORK_EVENT_TYPES],
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=s.runner_ack_wait_s,
        max_deliver=RUNNER_MAX_DELIVER,
        max_ack_pending=1000,
    )


def fanout_consumer_config(s: NatsSettings) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=fanout_consumer(s.prefix),
        filter_subject=all_tasks_filter(s.prefix),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=60.0,
        max_ack_pending=1000,
    )


_STREAM_FIELDS = (
    "subjects",
    "retention",
    "storage",
    "max_age",
    "duplicate_window",
    "allow_direct",
    "num_replicas",
)
_CONSUMER_FIELDS = (
    "filter_subject",
    "filter_subjects",
    "ack_policy",
    "ack_wait",
    "max_deliver",
    "max_ack_pending",
)


def _differs(current: object, wanted: object, fields: tuple[str, ...]) -> list[str]:
    """Fields we set that the server holds differently (unset fields take the server's default)."""
    return [f for f in fields if getattr(wanted, f) is not None and getattr(current, f) != getattr(wanted, f)]


async def provision(js: JetStreamContext, s: NatsSettings) -> ProvisionReport:
    """Create what is missing, update what drifted, leave the rest; safe to run any number of times."""
    report = ProvisionReport()
    wanted = stream_config(s)
    try:
        info = await js.stream_info(s.stream)
    except nats.js.errors.NotFoundError:
        await js.add_stream(wanted)
        report.created.append(f"stream {s.stream}")
    else:
        drift = _differs(info.config, wanted, _STREAM_FIELDS)
        if drift:
            await js.update_stream(wanted)
            report.updated.append(f"stream {s.stream} ({', '.join(drift)})")
        else:
            report.unchanged.append(f"stream {s.stream}")

    for cfg in (runner_consumer_config(s), fanout_consumer_config(s)):
        await _ensure_consumer(js, report, s.stream, cfg)
    for bucket, history, ttl in (
        (comments_bucket(s.prefix), 1, None),
        (idempotency_bucket(s.prefix), 1, None),
        (tokens_bucket(s.prefix), TOKENS_HISTORY, None),
        (poison_bucket(s.prefix), 1, POISON_TTL_S),
        (heartbeats_bucket(s.prefix), 1, s.heartbeat_ttl_s),
    ):
        kv = KeyValueConfig(
            bucket=bucket, history=history, ttl=ttl, storage=StorageType.FILE, replicas=s.replicas
        )
        await _ensure_kv(js, report, kv)

    traces = traces_bucket(s.prefix)
    try:
        await js.object_store(traces)
        report.unchanged.append(f"object store {traces}")
    except nats.js.errors.BucketNotFoundError:
        await js.create_object_store(traces, ObjectStoreConfig(storage=StorageType.FILE, replicas=s.replicas))
        report.created.append(f"object store {traces}")
    await _provision_advisories(js, s, report)
    await match_replicas(js, s, report)
    logger.info("provisioned", extra={"assets_created": report.created, "assets_updated": report.updated})
    return report


ADVISORY_MAX_AGE_S = 7 * 86400.0


def advisory_stream_config(s: NatsSettings) -> StreamConfig:
    """Keeps the runner consumer's max-deliveries advisories (JetStream only fires them)."""
    return StreamConfig(
        name=advisory_stream(s.stream),
        subjects=[max_deliveries_subject(s.stream, s.prefix)],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=ADVISORY_MAX_AGE_S,
        num_replicas=s.replicas,
        discard=DiscardPolicy.OLD,
    )


def reconciler_consumer_config(s: NatsSettings) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=reconciler_consumer(s.prefix),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=30.0,
        max_ack_pending=1000,
    )


async def _provision_advisories(js: JetStreamContext, s: NatsSettings, report: ProvisionReport) -> None:
    """The stream that keeps the max-deliveries advisories, with the reconcilers' durable on it."""
    wanted = advisory_stream_config(s)
    assert wanted.name is not None
    try:
        await js.stream_info(wanted.name)
        report.unchanged.append(f"stream {wanted.name}")
    except nats.js.errors.NotFoundError:
        await js.add_stream(wanted)
        report.created.append(f"stream {wanted.name}")
    await _ensure_consumer(js, report, wanted.name, reconciler_consumer_config(s))


async def _ensure_consumer(
    js: JetStreamContext, report: ProvisionReport, stream: str, cfg: ConsumerConfig
) -> None:
    """Create a durable consumer, or update it when a field we set drifted."""
    name = cfg.durable_name
    assert name is not None
    try:
        info = await js.consumer_info(stream, name)
    except nats.js.errors.NotFoundError:
        await js.add_consumer(stream, cfg)
        report.created.append(f"consumer {name}")
        return
    drift = _differs(info.config, cfg, _CONSUMER_FIELDS)
    if drift:
        await js.add_consumer(stream, cfg)
        report.updated.append(f"consumer {name} ({', '.join(drift)})")
    else:
        report.unchanged.append(f"consumer {name}")


async def _ensure_kv(js: JetStreamContext, report: ProvisionReport, cfg: KeyValueConfig) -> None:
    """Create a KV bucket when missing; an existing one is left as it is (``match_replicas`` scales it)."""
    try:
        await js.key_value(cfg.bucket)
        report.unchanged.append(f"kv {cfg.bucket}")
    except nats.js.errors.BucketNotFoundError:
        await js.create_key_value(cfg)
        report.created.append(f"kv {cfg.bucket}")


def replicated_streams(s: NatsSettings) -> list[str]:
    """Every JetStream stream provisioning creates besides the task stream (KV buckets and the object
    store are streams too): each is created with, and kept at, ``s.replicas`` (``BGAGENT_STREAM_REPLICAS``).
    A new asset belongs in this list, and its config takes ``replicas=s.replicas``."""
    p = s.prefix
    kv = (comments_bucket(p), idempotency_bucket(p), tokens_bucket(p), poison_bucket(p), heartbeats_bucket(p))
    return [*(f"KV_{b}" for b in kv), f"OBJ_{traces_bucket(p)}", advisory_stream(s.stream)]


async def match_replicas(js: JetStreamContext, s: NatsSettings, report: ProvisionReport) -> None:
    """Scale existing buckets and streams to ``s.replicas`` (e.g. R1 → R3 once NATS runs as a cluster);
    the task stream is handled with its other settings. A missing one is left to its creator."""
    for name in replicated_streams(s):
        try:
            info = await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            continue
        if info.config.num_replicas == s.replicas:
            continue
        config = info.config
        config.num_replicas = s.replicas
        await js.update_stream(config)
        report.updated.append(f"stream {name} (num_replicas {s.replicas})")
