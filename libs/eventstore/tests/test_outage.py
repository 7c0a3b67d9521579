"""Appends and reads that ride out a NATS outage: retried unchanged, never duplicated, still cancellable."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from nats.aio.client import Client

from bgagent_eventstore import JetStreamEventStore, NatsSettings, StoreUnavailableError, connect, provision
from bgagent_testing.servers import RestartableNats

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture
async def client(restartable_nats: RestartableNats) -> AsyncIterator[Client]:
    nc = await connect(restartable_nats.url, name="pytest-outage")
    try:
        yield nc
    finally:
        with contextlib.suppress(OSError):  # nats-py: closing while reconnecting to a stopped server
            await nc.close()


def retries(caplog: pytest.LogCaptureFixture, what: str) -> int:
    """How many times the store said it is retrying an ``append`` or a ``read`` (it logs each)."""
    return sum(f"NATS not answering; {what}" in r.getMessage() for r in caplog.records)


async def wait_until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


async def _store(client: Client, restartable_nats: RestartableNats, outage_s: float) -> JetStreamEventStore:
    settings = NatsSettings(url=restartable_nats.url, stream="OUTAGE", prefix="og")
    await provision(client.jetstream(), settings)
    return JetStreamEventStore(
        client, stream=settings.stream, prefix=settings.prefix, timeout=1.0, outage_s=outage_s
    )


async def test_an_append_retried_across_a_restart_lands_once(
    restartable_nats: RestartableNats, client: Client, ev: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = await _store(client, restartable_nats, outage_s=30.0)
    task = ev.new_id()
    first = await store.append(task, [ev.submitted(task)], expected_seq=0)
    events = [ev.milestone(task, "during-1"), ev.milestone(task, "during-2")]

    restartable_nats.stop()
    await wait_until(lambda: not client.is_connected)
    pending = asyncio.create_task(store.append(task, events, expected_seq=first[-1]))
    # Let it fail at least one publish (1 s timeout) and retry while the server is down.
    await wait_until(lambda: retries(caplog, "append") >= 1)
    assert not pending.done()
    restartable_nats.start()

    async with asyncio.timeout(20):
        seqs = await pending
    log = await store.read(task)
    assert [r.seq for r in log.records] == [*first, *seqs]
    ids = [r.event.event_id for r in log.records]
    assert ids[1:] == [e.event_id for e in events]
    assert len(set(ids)) == len(ids)
    assert (await store.last_stream_seq()) == seqs[-1]  # nothing else landed on the stream


async def test_a_read_waits_for_the_server_to_come_back(
    restartable_nats: RestartableNats, client: Client, ev: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = await _store(client, restartable_nats, outage_s=30.0)
    task = ev.new_id()
    seqs = await store.append(task, [ev.submitted(task)], expected_seq=0)
    restartable_nats.stop()
    await wait_until(lambda: not client.is_connected)
    pending = asyncio.create_task(store.read(task))
    await wait_until(lambda: retries(caplog, "read") >= 1)
    restartable_nats.start()
    async with asyncio.timeout(20):
        log = await pending
    assert [r.seq for r in log.records] == seqs


async def test_an_outage_longer_than_the_budget_is_store_unavailable(
    restartable_nats: RestartableNats, client: Client, ev: Any
) -> None:
    store = await _store(client, restartable_nats, outage_s=1.5)
    task = ev.new_id()
    restartable_nats.stop()
    await wait_until(lambda: not client.is_connected)
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError):
        await store.append(task, [ev.submitted(task)], expected_seq=0)
    with pytest.raises(StoreUnavailableError):
        await store.read(task)
    assert time.monotonic() - started < 15


async def test_a_retrying_append_stops_when_cancelled(
    restartable_nats: RestartableNats, client: Client, ev: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = await _store(client, restartable_nats, outage_s=60.0)
    task = ev.new_id()
    restartable_nats.stop()
    await wait_until(lambda: not client.is_connected)
    pending = asyncio.create_task(store.append(task, [ev.submitted(task)], expected_seq=0))
    await wait_until(lambda: retries(caplog, "append") >= 1)
    pending.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await pending
    assert time.monotonic() - started < 2
