"""NATS goes away mid-task and comes back: the runner keeps its attempt and duplicates nothing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from ulid import ULID

from bgagent_contracts import AgentTurn, Status, TaskCompleted, TaskStarted, TaskSubmitted
from bgagent_contracts.subjects import runner_consumer
from bgagent_eventstore import JetStreamEventStore, NatsSettings, connect, provision
from bgagent_runner import Runner
from bgagent_testing.model_server import ModelServer
from bgagent_testing.servers import RestartableNats

pytestmark = [pytest.mark.integration, pytest.mark.faults]

OUTAGE_S = 20.0


@pytest.fixture
async def private_nc(restartable_nats: RestartableNats) -> AsyncIterator[Client]:
    nc = await connect(restartable_nats.url, name="pytest-runner-outage")
    try:
        yield nc
    finally:
        with contextlib.suppress(OSError):
            await nc.close()


def bash(command: str) -> dict[str, Any]:
    return {"name": "bash", "input": {"command": command}}


async def test_a_task_survives_a_nats_outage_in_its_first_attempt(
    kit: Any,
    model_server: ModelServer,
    origin: Path,
    restartable_nats: RestartableNats,
    private_nc: Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    nats = NatsSettings(url=restartable_nats.url, stream="OUTAGE", prefix="og", outage_s=60.0)
    await provision(private_nc.jetstream(), nats)
    store = JetStreamEventStore(private_nc, stream=nats.stream, prefix=nats.prefix, outage_s=30.0)
    tag = f"outage-{ULID()}"
    model_server.add_script(
        tag,
        [
            {"text": "Looking around.", "tool_uses": [bash("ls")]},
            {"text": "Writing notes.", "tool_uses": [bash("echo survived > NOTES.txt")]},
            {"text": "Added NOTES.txt."},
        ],
    )
    settings = kit.make_settings(nats, model_server.url, Path(kit.settings.work_dir), shutdown_grace_s=5.0)
    runner = Runner(settings, nc=private_nc)
    running = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(runner.ready.wait(), timeout=10)
        task_id = await _submit(store, str(origin), f"{tag}: take notes")

        deadline = time.monotonic() + 20
        while not model_server.requests(tag):  # the agent loop is running: the first model call was made
            assert time.monotonic() < deadline, "the runner never called the model"
            await asyncio.sleep(0.02)
        restartable_nats.stop()
        await asyncio.sleep(OUTAGE_S)  # the outage itself, not an assertion
        assert not running.done()
        restartable_nats.start()

        deadline = time.monotonic() + 30
        while True:
            state = (await store.read(task_id)).state()
            assert state is not None
            if state.terminal:
                break
            assert time.monotonic() < deadline, f"task still {state.status} 30 s after NATS came back"
            await asyncio.sleep(0.1)
    finally:
        runner.stop()
        await asyncio.wait_for(running, timeout=20)

    assert state.status is Status.COMPLETED, (state.error_code, state.error_message)
    assert any("NATS not answering" in r.getMessage() for r in caplog.records), "no append waited"
    records = (await store.read(task_id)).records
    events = [r.event for r in records]
    ids = [e.event_id for e in events]
    assert len(ids) == len(set(ids)), "an event was appended twice"
    assert sum(isinstance(e, TaskStarted) for e in events) == 1, "a second attempt started"
    assert all(getattr(e, "attempt", 1) == 1 for e in events)
    assert sum(isinstance(e, AgentTurn) for e in events) == 3
    assert isinstance(events[-1], TaskCompleted)
    assert len(model_server.requests(tag)) == 3  # the agent was not run again
    info = await private_nc.jetstream().consumer_info(nats.stream, runner_consumer(nats.prefix))
    assert info.delivered.consumer_seq == 1, "the submission was redelivered"
    assert info.num_ack_pending == 0
    assert kit.git(origin, "show", f"bgagent/{task_id}:NOTES.txt") == "survived"


async def _submit(store: JetStreamEventStore, repo: str, description: str) -> str:
    task_id = str(ULID())
    event = TaskSubmitted(
        task_id=task_id,
        event_id=str(ULID()),
        ts=datetime.now(UTC),
        actor="admission",
        user_id="alice",
        repo=repo,
        description=description,
    )
    await store.append(task_id, [event], expected_seq=0)
    return task_id


async def test_a_runner_stopped_while_nats_is_down_still_stops(
    kit: Any,
    model_server: ModelServer,
    origin: Path,
    restartable_nats: RestartableNats,
    private_nc: Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    nats = NatsSettings(url=restartable_nats.url, stream="OUTAGE", prefix="og", outage_s=60.0)
    await provision(private_nc.jetstream(), nats)
    store = JetStreamEventStore(private_nc, stream=nats.stream, prefix=nats.prefix)
    tag = f"outage-stop-{ULID()}"
    model_server.add_script(tag, [{"text": "Looking.", "tool_uses": [bash("ls")]}, {"text": "Done."}])
    settings = kit.make_settings(nats, model_server.url, Path(kit.settings.work_dir), shutdown_grace_s=0.5)
    runner = Runner(settings, nc=private_nc)
    running = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(runner.ready.wait(), timeout=10)
        await _submit(store, str(origin), f"{tag}: look")
        deadline = time.monotonic() + 20
        while not model_server.requests(tag):
            assert time.monotonic() < deadline, "the runner never called the model"
            await asyncio.sleep(0.02)
        restartable_nats.stop()
        deadline = time.monotonic() + 20
        while not any("NATS not answering" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "no append waited for NATS"
            await asyncio.sleep(0.05)
    finally:
        runner.stop()
        started = time.monotonic()
        await asyncio.wait_for(running, timeout=20)
    # Bounded, not instant: the grace (0.5 s), then best-effort clean-up calls to NATS (heartbeat keys)
    # that each give up after their 5 s timeout while the server is down.
    assert time.monotonic() - started < 18
