"""The reconciler: no task stays non-terminal without someone working on it (ADR 0006).

Every ``interval_s`` it lists the tasks the read model holds as unfinished, reads the runner
heartbeats (KV with a TTL), the runner consumer's delivered sequence and the max-deliveries
advisories, then re-reads each task's log from the stream and asks the pure
``bgagent_contracts.reconcile.decide_reconcile`` what it needs. The action is appended with the
task's last sequence as the expected one, so two reconcilers (or a runner and a reconciler) never
both act: the loser's append fails and it looks again on the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.kv import KeyValue
from ulid import ULID

from bgagent_contracts import (
    WORK_EVENT_TYPES,
    Actor,
    Event,
    RunnerLost,
    TaskFailed,
    TaskRequeued,
    TaskState,
)
from bgagent_contracts.events import event_type
from bgagent_contracts.reconcile import Action, Decision, Observation, Policy, decide_reconcile
from bgagent_contracts.subjects import advisory_stream, parse_subject, reconciler_consumer, runner_consumer
from bgagent_eventstore import ConcurrencyError, JetStreamEventStore, StoreUnavailableError, TaskLog
from bgagent_eventstore.heartbeats import Beat, read_beats, task_key
from bgagent_eventstore.telemetry import record_reconciler_action

from . import store as read_models

logger = logging.getLogger(__name__)

_NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, TimeoutError)


@dataclass(frozen=True)
class Taken:
    """One action the reconciler appended."""

    task_id: str
    action: Action
    message: str
    code: str | None = None


@dataclass
class _Round:
    """What one round saw once, shared by every task it looks at."""

    now: datetime
    delivered_seq: int
    beats: Mapping[str, Beat]
    exhausted: dict[str, int] = field(default_factory=dict)
    """task id → the seq of a work message JetStream gave up on."""

    @property
    def runners(self) -> list[Beat]:
        return [b for k, b in self.beats.items() if k.startswith("runner.")]


class Reconciler:
    def __init__(
        self,
        nc: Client,
        pool: Any,
        kv: KeyValue,
        *,
        stream: str,
        prefix: str,
        policy: Policy,
        interval_s: float = 5.0,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._pool = pool
        self._kv = kv
        self._stream = stream
        self._prefix = prefix
        self._policy = policy
        self._interval_s = interval_s
        self._store = JetStreamEventStore(nc, stream=stream, prefix=prefix)
        self._advisories: Any = None
        self._pending_acks: list[Any] = []
        self._runner_last_seen: datetime | None = None

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.round()
            except (StoreUnavailableError, OSError, *_NATS_ERRORS) as exc:
                logger.warning("reconcile round failed (will retry): %r", exc)
            except Exception:  # a read model or a bug: keep the loop alive, say so loudly
                logger.exception("reconcile round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval_s)

    async def close(self) -> None:
        """Drop the advisory subscription (a pending fetch would hold a drain up)."""
        if self._advisories is not None:
            with contextlib.suppress(*_NATS_ERRORS):
                await self._advisories.unsubscribe()
            self._advisories = None

    async def round(self, now: datetime | None = None) -> list[Taken]:
        """Look at every unfinished task once; returns what was appended."""
        seen = await self._observe(now or datetime.now(UTC))
        async with self._pool.acquire() as conn:
            candidates = await read_models.unfinished_task_ids(conn)
        ids = dict.fromkeys([*candidates, *seen.exhausted])
        taken: list[Taken] = []
        for task_id in ids:
            action = await self._reconcile(task_id, seen)
            if action is not None:
                taken.append(action)
        await self._ack_advisories()
        return taken

    async def _observe(self, now: datetime) -> _Round:
        info = await self._js.consumer_info(self._stream, runner_consumer(self._prefix))
        delivered = int(info.delivered.stream_seq or 0) if info.delivered else 0
        seen = _Round(now=now, delivered_seq=delivered, beats=await read_beats(self._kv))
        if seen.runners:
            self._runner_last_seen = now
        seen.exhausted = await self._fetch_advisories()
        return seen

    async def _reconcile(self, task_id: str, seen: _Round) -> Taken | None:
        log = await self._store.read(task_id)
        state = log.state()
        if state is None or state.terminal:
            return None
        decision = decide_reconcile(self._observation(log, state, seen), self._policy)
        if decision is None:
            return None
        events = [_event(decision, state, seen.now)]
        try:
            await self._store.append(task_id, events, expected_seq=log.last_seq)
        except ConcurrencyError:
            logger.info("task %s moved while reconciling; looking again next round", task_id)
            return None
        record_reconciler_action(decision.action.value)
        logger.warning("reconciler: task %s %s: %s", task_id, event_type(events[0]), decision.message)
        return Taken(task_id, decision.action, decision.message, decision.code)

    def _observation(self, log: TaskLog, state: TaskState, seen: _Round) -> Observation:
        work_seq = max((r.seq for r in log.records if event_type(r.event) in WORK_EVENT_TYPES), default=0)
        beat = seen.beats.get(task_key(state.task_id))
        return Observation(
            state=state,
            now=seen.now,
            held=beat is not None and (beat.attempt == state.attempt or state.attempt == 0),
            queued=work_seq > seen.delivered_seq,
            exhausted=seen.exhausted.get(state.task_id) == work_seq,
            live_runners=len(seen.runners),
            runner_seen_at=self._runner_last_seen,
        )

    # --- max-deliveries advisories ------------------------------------------------------------

    async def _fetch_advisories(self) -> dict[str, int]:
        """task id → the seq of its work message that JetStream will not deliver again."""
        if self._advisories is None:
            self._advisories = await self._js.pull_subscribe_bind(
                durable=reconciler_consumer(self._prefix), stream=advisory_stream(self._stream)
            )
        try:
            msgs = await self._advisories.fetch(100, timeout=0.2)
        except (TimeoutError, nats.errors.TimeoutError):
            return {}
        self._pending_acks = msgs
        dropped: dict[str, int] = {}
        for msg in msgs:
            seq = _advisory_seq(msg.data)
            if seq is None:
                continue
            try:
                stored = await self._js.get_msg(self._stream, seq=seq, direct=True)
                task_id, _ = parse_subject(stored.subject or "", self._prefix)
            except (ValueError, *_NATS_ERRORS):
                continue
            dropped[task_id] = max(dropped.get(task_id, 0), seq)
        return dropped

    async def _ack_advisories(self) -> None:
        for msg in self._pending_acks:
            try:
                await msg.ack()
            except _NATS_ERRORS as exc:
                logger.warning("could not ack an advisory: %r", exc)
        self._pending_acks = []


def _advisory_seq(data: bytes) -> int | None:
    try:
        seq = json.loads(data).get("stream_seq")
    except (ValueError, AttributeError):
        return None
    return seq if isinstance(seq, int) and seq > 0 else None


def _event(decision: Decision, state: TaskState, now: datetime) -> Event:
    common: dict[str, Any] = {
        "task_id": state.task_id,
        "event_id": str(ULID()),
        "ts": now,
        "actor": Actor.RECONCILER,
    }
    if decision.action is Action.MARK_LOST:
        return RunnerLost(**common, attempt=state.attempt, runner_id=state.runner_id, detail=decision.message)
    if decision.action is Action.REQUEUE:
        return TaskRequeued(**common, attempt=state.attempt, reason=decision.message)
    assert decision.code is not None
    return TaskFailed(**common, code=decision.code, message=decision.message)
