"""A nats-server that goes away and comes back: clients reconnect, followers resume with no gap."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from nats.aio.client import Client

from bgagent_contracts import decode_event
from bgagent_contracts.subjects import task_filter
from bgagent_eventstore import JetStreamEventStore, NatsSettings, connect, follow, provision
from bgagent_testing.servers import RestartableNats

pytestmark = pytest.mark.integration


async def wait_until(pred: Callable[[], bool | Awaitable[bool]], timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = pred()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


@pytest.fixture
async def client(restartable_nats: RestartableNats) -> AsyncIterator[Client]:
    nc = await connect(restartable_nats.url, name="pytest-restart")
    try:
        yield nc
    finally:
        await nc.close()


async def test_connect_keeps_reconnecting_after_the_first_connection(
    restartable_nats: RestartableNats, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bgagent_eventstore.connect")
    restartable_nats.stop()
    await wait_until(lambda: not client.is_connected)
    # more failed attempts than the initial connect is allowed: an old client would have given up
    await wait_until(lambda: sum("nats error" in r.getMessage() for r in caplog.records) >= 5)
    assert not client.is_closed
    restartable_nats.start()
    await wait_until(lambda: client.is_connected)
    await client.flush(timeout=2)


async def test_follow_resumes_after_a_server_restart_without_gap_or_duplicate(
    restartable_nats: RestartableNats, client: Client, ev: Any
) -> None:
    settings = NatsSettings(url=restartable_nats.url, stream="RESTART", prefix="rs")
    await provision(client.jetstream(), settings)
    store = JetStreamEventStore(client, stream=settings.stream, prefix=settings.prefix, timeout=2.0)
    task = ev.new_id()
    seqs = await store.append(task, [ev.submitted(task), ev.milestone(task, "before")], expected_seq=0)

    agen = follow(
        client,
        stream=settings.stream,
        subject_filter=task_filter(task, settings.prefix),
        idle_check_s=0.3,
    )
    try:
        got = []
        async with asyncio.timeout(5):
            got += [await anext(agen), await anext(agen)]

        restartable_nats.stop()
        await wait_until(lambda: not client.is_connected)
        restartable_nats.start()
        await wait_until(lambda: client.is_connected)

        async def appended() -> list[int]:
            for _ in range(50):
                try:
                    return await store.append(
                        task,
                        [ev.milestone(task, "after-1"), ev.milestone(task, "after-2")],
                        expected_seq=seqs[-1],
                    )
                except Exception:  # JetStream may need a moment after the restart
                    await asyncio.sleep(0.1)
            raise AssertionError("could not append after the restart")

        after = await appended()
        async with asyncio.timeout(10):
            got += [await anext(agen), await anext(agen)]
        assert [d.seq for d in got] == [*seqs, *after]
        assert [decode_event(d.data).name for d in got[1:]] == ["before", "after-1", "after-2"]
    finally:
        await agen.aclose()
