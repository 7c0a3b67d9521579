"""JetStream-only behaviour: provisioning, malformed messages, live follow, headers, server version."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, RetentionPolicy, StorageType

from bgagent_contracts import MalformedEventError, decode_event, encode_event
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
    task_filter,
    task_subject,
    tokens_bucket,
    traces_bucket,
)
from bgagent_eventstore import (
    Delivered,
    JetStreamEventStore,
    NatsSettings,
    ServerTooOldError,
    StoreUnavailableError,
    connect,
    follow,
    provision,
)

pytestmark = pytest.mark.integration


async def _next(agen: AsyncIterator[Delivered], timeout: float = 5.0) -> Delivered:
    async with asyncio.timeout(timeout):
        return await anext(agen)


# --- provisioning ------------------------------------------------------------------------------------


async def test_provision_is_idempotent(nc: Client, provisioned: NatsSettings) -> None:
    js = nc.jetstream()
    s = provisioned
    stream_before = (await js.stream_info(s.stream)).config
    consumers_before = [
        (await js.consumer_info(s.stream, name)).config
        for name in (runner_consumer(s.prefix), fanout_consumer(s.prefix))
    ]

    report = await provision(js, s)

    assert (report.created, report.updated) == ([], [])
    assert sorted(report.unchanged) == sorted(
        [
            f"stream {s.stream}",
            f"consumer {runner_consumer(s.prefix)}",
            f"consumer {fanout_consumer(s.prefix)}",
            f"kv {comments_bucket(s.prefix)}",
            f"kv {idempotency_bucket(s.prefix)}",
            f"kv {poison_bucket(s.prefix)}",
            f"kv {tokens_bucket(s.prefix)}",
            f"object store {traces_bucket(s.prefix)}",
            f"kv {heartbeats_bucket(s.prefix)}",
            f"stream {advisory_stream(s.stream)}",
            f"consumer {reconciler_consumer(s.prefix)}",
        ]
    )
    assert (await js.stream_info(s.stream)).config == stream_before
    consumers_after = [
        (await js.consumer_info(s.stream, name)).config
        for name in (runner_consumer(s.prefix), fanout_consumer(s.prefix))
    ]
    assert consumers_after == consumers_before


async def test_provisioned_assets_match_the_design(nc: Client, provisioned: NatsSettings) -> None:
    js = nc.jetstream()
    s = provisioned
    config = (await js.stream_info(s.stream)).config
    assert config.subjects == [all_tasks_filter(s.prefix)]
    assert (config.retention, config.storage) == (RetentionPolicy.LIMITS, StorageType.FILE)
    assert config.allow_direct is True
    assert config.duplicate_window is not None
    assert config.duplicate_window >= 120
    assert config.max_age == pytest.approx(90 * 86400)
    runner = (await js.consumer_info(s.stream, runner_consumer(s.prefix))).config
    assert runner.filter_subjects == [
        event_type_filter("task_submitted", s.prefix),
        event_type_filter("task_requeued", s.prefix),
    ]
    assert runner.ack_policy == AckPolicy.EXPLICIT
    assert runner.max_deliver == 5
    assert runner.ack_wait == pytest.approx(s.runner_ack_wait_s)
    # runner liveness: a KV bucket whose TTL drops a silent runner's keys
    heartbeats = await (await js.key_value(heartbeats_bucket(s.prefix))).status()
    assert heartbeats.ttl == pytest.approx(s.heartbeat_ttl_s)
    # JetStream only fires max-deliveries advisories: a stream keeps them for the reconcilers
    advisories = (await js.stream_info(advisory_stream(s.stream))).config
    assert advisories.subjects == [max_deliveries_subject(s.stream, s.prefix)]
    await js.consumer_info(advisory_stream(s.stream), reconciler_consumer(s.prefix))
    fanout = (await js.consumer_info(s.stream, fanout_consumer(s.prefix))).config
    assert fanout.filter_subject == all_tasks_filter(s.prefix)
    await js.key_value(comments_bucket(s.prefix))
    await js.key_value(idempotency_bucket(s.prefix))
    await js.object_store(traces_bucket(s.prefix))
    tokens = await (await js.key_value(tokens_bucket(s.prefix))).status()
    assert tokens.history == 5  # a token's creation and revocation are both kept


async def test_provision_updates_a_drifted_stream(nc: Client, provisioned: NatsSettings) -> None:
    js = nc.jetstream()
    changed = msgspec.structs.replace(provisioned, max_age_days=7.0)
    report = await provision(js, changed)
    assert report.created == []
    assert report.updated == [f"stream {provisioned.stream} (max_age)"]
    assert (await js.stream_info(provisioned.stream)).config.max_age == pytest.approx(7 * 86400)


# --- malformed messages --------------------------------------------------------------------------


async def test_a_malformed_message_is_skipped_by_read_and_counted_in_last_seq(
    nc: Client, event_store: JetStreamEventStore, ev: Any
) -> None:
    task = ev.new_id()
    js = nc.jetstream()
    [s1] = await event_store.append(task, [ev.submitted(task)], expected_seq=0)
    garbage = await js.publish(task_subject(task, "milestone", event_store.prefix), b"{not json")
    unknown = await js.publish(
        task_subject(task, "task_exploded", event_store.prefix),
        json.dumps({"type": "task_exploded"}).encode(),
    )

    log = await event_store.read(task)
    assert [r.seq for r in log.records] == [s1]
    assert log.skipped == (garbage.seq, unknown.seq)
    assert log.last_seq == unknown.seq
    # last_seq is the task's real last subject sequence: appending from it succeeds
    [s4] = await event_store.append(task, [ev.milestone(task, "after")], expected_seq=log.last_seq)
    after = await event_store.read(task, after_seq=s1)
    assert [r.seq for r in after.records] == [s4]
    assert after.skipped == (garbage.seq, unknown.seq)


async def test_follow_delivers_past_a_malformed_message(
    nc: Client, event_store: JetStreamEventStore, ev: Any
) -> None:
    task = ev.new_id()
    [s1] = await event_store.append(task, [ev.submitted(task)], expected_seq=0)
    bad = await nc.jetstream().publish(task_subject(task, "milestone", event_store.prefix), b"\x00\x01")
    good = ev.milestone(task, "valid")
    [s3] = await event_store.append(task, [good], expected_seq=bad.seq)

    agen = follow(
        nc, stream=event_store.stream, subject_filter=task_filter(task, event_store.prefix), after_seq=s1
    )
    try:
        first = await _next(agen)
        assert first.seq == bad.seq
        with pytest.raises(MalformedEventError):
            decode_event(first.data)
        second = await _next(agen)
        assert second.seq == s3
        assert decode_event(second.data) == good
    finally:
        await agen.aclose()


# --- follow --------------------------------------------------------------------------------------


async def test_follow_from_a_cursor_then_live_without_gap_or_duplicate(
    nc: Client, event_store: JetStreamEventStore, ev: Any
) -> None:
    task, other = ev.new_id(), ev.new_id()
    history = [ev.submitted(task), ev.milestone(task, "h1"), ev.milestone(task, "h2")]
    seqs = await event_store.append(task, history, expected_seq=0)
    await event_store.append(other, [ev.submitted(other)], expected_seq=0)  # not on our filter

    agen = follow(
        nc, stream=event_store.stream, subject_filter=task_filter(task, event_store.prefix), after_seq=seqs[0]
    )
    try:
        got = [await _next(agen), await _next(agen)]
        assert [d.seq for d in got] == seqs[1:]

        live = [ev.milestone(task, "l1"), ev.milestone(task, "l2")]
        live_seqs = await event_store.append(task, live, expected_seq=seqs[-1])
        got += [await _next(agen), await _next(agen)]
        marker = ev.milestone(task, "marker")
        [marker_seq] = await event_store.append(task, [marker], expected_seq=live_seqs[-1])
        got.append(await _next(agen))  # the very next delivery is the marker: no duplicate before it

        assert [d.seq for d in got] == [*seqs[1:], *live_seqs, marker_seq]
        assert [decode_event(d.data) for d in got] == [*history[1:], *live, marker]
        assert all(d.subject.startswith(f"{event_store.prefix}.task.{task}.") for d in got)
    finally:
        await agen.aclose()


async def test_follow_of_every_task_from_zero(nc: Client, event_store: JetStreamEventStore, ev: Any) -> None:
    one, two = ev.new_id(), ev.new_id()
    [a] = await event_store.append(one, [ev.submitted(one)], expected_seq=0)
    [b] = await event_store.append(two, [ev.submitted(two)], expected_seq=0)
    agen = follow(nc, stream=event_store.stream, subject_filter=all_tasks_filter(event_store.prefix))
    try:
        assert [(await _next(agen)).seq, (await _next(agen)).seq] == [a, b]
        [c] = await event_store.append(one, [ev.milestone(one, "x")], expected_seq=a)
        assert (await _next(agen)).seq == c
    finally:
        await agen.aclose()


# --- headers, batching, failures ------------------------------------------------------------------


async def test_every_message_carries_its_msg_id_and_traceparent(
    nc: Client, event_store: JetStreamEventStore, ev: Any
) -> None:
    task = ev.new_id()
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    events = [ev.submitted(task), ev.milestone(task, "m")]
    seqs = await event_store.append(task, events, expected_seq=0, traceparent=parent)
    [auto] = await event_store.append(task, [ev.milestone(task, "n")], expected_seq=seqs[-1])
    js = nc.jetstream()
    for seq, event in zip(seqs, events, strict=True):
        msg = await js.get_msg(event_store.stream, seq=seq, direct=True)
        assert msg.headers is not None
        assert msg.headers["Nats-Msg-Id"] == event.event_id
        assert msg.headers["traceparent"] == parent
        assert msg.data == encode_event(event)
    generated = (await js.get_msg(event_store.stream, seq=auto, direct=True)).headers or {}
    assert generated["traceparent"].startswith("00-")
    assert len(generated["traceparent"].split("-")) == 4
    assert await event_store.last_stream_seq() == auto


async def test_read_pages_through_long_logs(nc: Client, event_store: JetStreamEventStore, ev: Any) -> None:
    """More events than one direct-get batch (512), interleaved with another task's events."""
    task, other = ev.new_id(), ev.new_id()
    [last] = await event_store.append(task, [ev.submitted(task)], expected_seq=0)
    [other_last] = await event_store.append(other, [ev.submitted(other)], expected_seq=0)
    expected = 1
    for chunk in range(6):
        seqs = await event_store.append(
            task, [ev.milestone(task, f"m{chunk}-{i}") for i in range(100)], expected_seq=last
        )
        last = seqs[-1]
        expected += len(seqs)
        [other_last] = await event_store.append(
            other, [ev.milestone(other, "noise")], expected_seq=other_last
        )
    log = await event_store.read(task)
    assert len(log.records) == expected == 601
    seqs = [r.seq for r in log.records]
    assert seqs == sorted(set(seqs))
    assert log.last_seq == last
    assert all(r.event.task_id == task for r in log.records)


async def test_a_missing_stream_is_reported_as_unavailable(nc: Client, ev: Any) -> None:
    store = JetStreamEventStore(nc, stream="NO_SUCH_STREAM", prefix="nosuch", timeout=0.5)
    task = ev.new_id()
    with pytest.raises(StoreUnavailableError):
        await store.append(task, [ev.submitted(task)], expected_seq=0)
    with pytest.raises(StoreUnavailableError):
        await store.read(task)


def _server_version(host: str, port: int) -> tuple[int, int] | None:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.settimeout(0.5)
            line = sock.recv(4096).decode(errors="replace")
    except OSError:
        return None
    if not line.startswith("INFO "):
        return None
    version = json.loads(line[5:].strip())["version"]
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


async def test_connect_refuses_a_server_older_than_2_11() -> None:
    version = _server_version("127.0.0.1", 4222)
    if version is None:
        pytest.skip("no nats-server answers on 127.0.0.1:4222 (Debian's 2.9 is not running)")
    if version >= (2, 11):
        pytest.skip(f"the nats-server on 127.0.0.1:4222 is {version}, not an old one")
    with pytest.raises(ServerTooOldError, match=r"needs >= 2\.11"):
        await connect("nats://127.0.0.1:4222", name="pytest-old-server")


async def test_connect_to_nothing_is_unavailable() -> None:
    from bgagent_testing.servers import free_port

    with pytest.raises(StoreUnavailableError, match="cannot reach NATS"):
        await connect(f"nats://127.0.0.1:{free_port()}", name="pytest", connect_timeout=0.5)
