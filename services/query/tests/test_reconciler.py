"""The reconciler on real NATS JetStream and Postgres: heartbeats, the runner consumer, advisories.

Runners are played by the test through the real work consumer (a fetch that is never acked is a
runner that took the task and died). Time moves by passing ``now`` to ``round()``: the policy's
waits are compared with event timestamps, while heartbeats, deliveries and advisories are real.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from nats.aio.client import Client
from ulid import ULID

from bgagent_contracts import (
    Event,
    RunnerLost,
    Status,
    TaskFailed,
    TaskRequeued,
    TaskStarted,
    TaskSubmitted,
    WorkspaceReady,
)
from bgagent_contracts.reconcile import RUNNER_LOST, STRANDED, Action, Policy
from bgagent_contracts.subjects import runner_consumer
from bgagent_eventstore import JetStreamEventStore, NatsSettings
from bgagent_eventstore.heartbeats import Heartbeats, bucket
from bgagent_query.reconciler import Reconciler

pytestmark = pytest.mark.integration

POLICY = Policy(grace_s=15, redelivery_s=45, max_attempts=5, stranded_after_s=600)


class World:
    """One provisioned stream, its read model (a projector), and a clock the test moves."""

    def __init__(self, nc: Client, settings: NatsSettings, pool: Any, store: JetStreamEventStore) -> None:
        self.nc = nc
        self.settings = settings
        self.pool = pool
        self.store = store
        self.t0 = datetime.now(UTC)

    def at(self, seconds: float) -> datetime:
        return self.t0 + timedelta(seconds=seconds)

    async def reconciler(self, policy: Policy = POLICY) -> Reconciler:
        kv = await bucket(self.nc.jetstream(), self.settings.prefix)
        return Reconciler(
            self.nc, self.pool, kv, stream=self.settings.stream, prefix=self.settings.prefix, policy=policy
        )

    async def submit(self) -> str:
        task_id = str(ULID())
        event = TaskSubmitted(
            task_id=task_id, event_id=str(ULID()), ts=self.at(0), actor="admission", user_id="u", repo="a/b"
        )
        await self.store.append(task_id, [event], expected_seq=0)
        return task_id

    async def start(self, task_id: str, attempt: int, at: float) -> None:
        log = await self.store.read(task_id)
        head = {"task_id": task_id, "actor": "runner", "attempt": attempt}
        events: list[Event] = [
            TaskStarted(**head, event_id=str(ULID()), ts=self.at(at), runner_id=f"r{attempt}"),  # type: ignore[arg-type]
            WorkspaceReady(**head, event_id=str(ULID()), ts=self.at(at), branch="b"),  # type: ignore[arg-type]
        ]
        await self.store.append(task_id, events, expected_seq=log.last_seq)

    async def take_work(self) -> list[str]:
        """A runner fetches what the work consumer delivers and dies holding it (no ack)."""
        js = self.nc.jetstream()
        sub = await js.pull_subscribe_bind(
            durable=runner_consumer(self.settings.prefix), stream=self.settings.stream
        )
        try:
            msgs = await sub.fetch(10, timeout=1)
        except TimeoutError:
            return []
        finally:
            await sub.unsubscribe()
        return [m.subject for m in msgs]

    async def types(self, task_id: str) -> list[str]:
        return [type(r.event).__name__ for r in (await self.store.read(task_id)).records]

    async def projected(self, task_id: str) -> None:
        async def there() -> bool:
            async with self.pool.acquire() as conn:
                return bool(await conn.fetchval("SELECT 1 FROM tasks WHERE task_id = $1", task_id))

        deadline = asyncio.get_running_loop().time() + 10
        while not await there():
            assert asyncio.get_running_loop().time() < deadline, "the task never reached the read model"
            await asyncio.sleep(0.02)


@pytest.fixture
async def world(nc: Client, provisioned: NatsSettings, pool: Any, projectors: Any) -> World:
    await projectors.start()
    return World(
        nc, provisioned, pool, JetStreamEventStore(nc, stream=provisioned.stream, prefix=provisioned.prefix)
    )


async def test_a_task_whose_runner_died_is_marked_lost_then_requeued_to_the_runners(world: World) -> None:
    task_id = await world.submit()
    assert await world.take_work() == [f"{world.settings.prefix}.task.{task_id}.task_submitted"]
    await world.start(task_id, 1, at=1)
    await world.projected(task_id)
    rec = await world.reconciler()

    assert await rec.round(world.at(1 + 14)) == []  # within the grace: a claim may just have landed
    (lost,) = await rec.round(world.at(1 + 16))
    assert (lost.task_id, lost.action) == (task_id, Action.MARK_LOST)
    state = (await world.store.read(task_id)).state()
    assert state is not None
    assert state.status is Status.RUNNING
    assert state.current_step is not None
    assert "runner r1 was lost" in state.current_step
    assert "waiting for a runner" in state.current_step

    assert await rec.round(world.at(17 + 30)) == []  # the consumer may still redeliver it
    (requeued,) = await rec.round(world.at(17 + 45))
    assert requeued.action is Action.REQUEUE
    # the new work message reaches the runners through the same durable consumer
    assert await world.take_work() == [f"{world.settings.prefix}.task.{task_id}.task_requeued"]
    assert await world.types(task_id) == [
        "TaskSubmitted",
        "TaskStarted",
        "WorkspaceReady",
        "RunnerLost",
        "TaskRequeued",
    ]


async def test_a_requeue_nobody_claims_ends_stranded_with_a_reason(world: World) -> None:
    task_id = await world.submit()
    await world.take_work()
    await world.start(task_id, 1, at=1)
    await world.projected(task_id)
    rec = await world.reconciler()
    await rec.round(world.at(20))  # lost
    await rec.round(world.at(20 + 45))  # requeued
    await world.take_work()  # delivered to a runner that dies before claiming
    assert await rec.round(world.at(65 + 44)) == []
    (stranded,) = await rec.round(world.at(65 + 46))
    assert (stranded.action, stranded.code) == (Action.FAIL, STRANDED)
    state = (await world.store.read(task_id)).state()
    assert state is not None
    assert (state.status, state.error_code) == (Status.FAILED, STRANDED)
    assert state.error_message is not None
    assert "resubmit" in state.error_message


async def test_a_live_heartbeat_keeps_a_quiet_task_alone(world: World) -> None:
    task_id = await world.submit()
    await world.take_work()
    await world.start(task_id, 1, at=1)
    await world.projected(task_id)
    beats = Heartbeats(await bucket(world.nc.jetstream(), world.settings.prefix), "r1")
    await beats.hold(task_id, 1)
    rec = await world.reconciler()
    assert await rec.round(world.at(10_000)) == []
    await beats.release(task_id)
    (lost,) = await rec.round(world.at(10_000))
    assert lost.action is Action.MARK_LOST


async def test_two_reconcilers_at_once_act_once(world: World) -> None:
    task_id = await world.submit()
    await world.take_work()
    await world.start(task_id, 1, at=1)
    await world.projected(task_id)
    first, second = await world.reconciler(), await world.reconciler()
    for _ in range(3):
        await asyncio.gather(first.round(world.at(20)), second.round(world.at(20)))
    assert (await world.types(task_id)).count("RunnerLost") == 1


async def test_a_queued_task_with_no_runner_alive_is_stranded_after_the_limit(world: World) -> None:
    task_id = await world.submit()  # never delivered: no runner is fetching
    await world.projected(task_id)
    rec = await world.reconciler(Policy(grace_s=15, redelivery_s=45, stranded_after_s=60))
    assert await rec.round(world.at(59)) == []
    (stranded,) = await rec.round(world.at(61))
    assert (stranded.action, stranded.code) == (Action.FAIL, STRANDED)
    assert "no runner was alive" in stranded.message


async def test_a_queued_task_waits_while_a_runner_is_alive(world: World) -> None:
    task_id = await world.submit()
    await world.projected(task_id)
    beats = Heartbeats(await bucket(world.nc.jetstream(), world.settings.prefix), "r-busy")
    await beats.beat()  # alive, its slots full
    rec = await world.reconciler(Policy(stranded_after_s=60))
    assert await rec.round(world.at(10_000)) == []


@pytest.mark.faults
async def test_the_max_deliveries_advisory_ends_an_exhausted_task_runner_lost_at_once(world: World) -> None:
    task_id = await world.submit()
    for attempt in range(1, 6):
        await world.start(task_id, attempt, at=attempt)
    await world.projected(task_id)
    js = world.nc.jetstream()
    sub = await js.pull_subscribe_bind(
        durable=runner_consumer(world.settings.prefix), stream=world.settings.stream
    )
    try:
        for _ in range(5):  # five deliveries handed back: JetStream drops the message after the fifth
            (msg,) = await sub.fetch(1, timeout=5)
            await msg.nak()
        # JetStream notices the limit when it next looks for work for a runner: a live one pulls
        with contextlib.suppress(TimeoutError):
            assert await sub.fetch(1, timeout=0.5) == []
    finally:
        await sub.unsubscribe()
    rec = await world.reconciler()
    deadline = asyncio.get_running_loop().time() + 10
    taken: list[Any] = []
    while not taken:  # the advisory arrives asynchronously; no grace applies once it has
        assert asyncio.get_running_loop().time() < deadline, "no advisory reached the reconciler"
        taken = await rec.round(world.at(6))
    assert [(t.action, t.code) for t in taken] == [(Action.FAIL, RUNNER_LOST)]
    log = await world.store.read(task_id)
    failed = log.records[-1].event
    assert isinstance(failed, TaskFailed)
    assert failed.actor == "reconciler"
    assert "r5" in failed.message
    assert not any(isinstance(r.event, (RunnerLost, TaskRequeued)) for r in log.records)
