"""Rebuild the read models from the stream, in one transaction (``bgagent admin rebuild``).

Lock the projector's checkpoint row, TRUNCATE the read models, replay the stream from its
first message up to the last sequence it held when the rebuild started (one ordered
consumer, rows written with COPY in large chunks, task states folded in memory and copied
once at the end), set the checkpoint to the last replayed sequence, commit. A running
projector blocks on the checkpoint lock meanwhile, then notices the checkpoint moved and
resumes from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from bgagent_contracts import TaskState
from bgagent_contracts.fold import fold_recorded
from bgagent_contracts.subjects import all_tasks_filter
from bgagent_eventstore import Delivered, NatsSettings, connect

from . import store
from .errors import RebuildError
from .migrations import migrate
from .projection import Decoded, add_message

logger = logging.getLogger(__name__)

COPY_CHUNK = 10_000
REPLAY_TIMEOUT_S = 10.0


class RebuildReport(msgspec.Struct, frozen=True, kw_only=True):
    events: int
    """Events written to ``task_events``."""
    tasks: int
    poison: int
    last_seq: int
    """The checkpoint the rebuild left (the projector continues after it)."""
    elapsed_s: float

    @property
    def events_per_s(self) -> float:
        return (self.events + self.poison) / self.elapsed_s if self.elapsed_s > 0 else 0.0


def stream_identity(stream: str, created: datetime | None) -> str:
    """A stream's name and creation time: changes when the stream is deleted and created again."""
    return f"{stream}@{created.isoformat() if created else '?'}"


async def rebuild(
    conn: Any,
    nc: Client,
    *,
    stream: str,
    prefix: str,
    name: str = "tasks",
    chunk: int = COPY_CHUNK,
) -> RebuildReport:
    """Replace the read models with a fresh projection of the whole stream (schema must exist)."""
    started = time.perf_counter()
    js = nc.jetstream()
    async with conn.transaction():
        await store.lock_checkpoint(conn, name)
        await store.truncate_read_models(conn)
        try:
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError as exc:
            raise RebuildError(f"stream {stream} does not exist (run `bgagent admin init`)") from exc
        target = int(info.state.last_seq)
        await store.set_stream_id(conn, name, stream_identity(stream, info.created))
        states: dict[str, TaskState] = {}
        events = poison = 0
        last = target
        if int(info.state.messages) > 0:
            events, poison, last = await _replay(conn, nc, stream, prefix, target, states, chunk)
        tasks = await store.copy_tasks(conn, states.values())
        await store.set_checkpoint(conn, name, last)
    report = RebuildReport(
        events=events, tasks=tasks, poison=poison, last_seq=last, elapsed_s=time.perf_counter() - started
    )
    logger.info(
        "rebuilt read models: %d events, %d tasks, %d poison, checkpoint %d in %.2fs",
        events,
        tasks,
        poison,
        last,
        report.elapsed_s,
    )
    return report


class _Replay:
    """Consumes the ordered consumer's callbacks: decode, fold, buffer rows, COPY every ``chunk``."""

    def __init__(self, conn: Any, prefix: str, target: int, chunk: int, states: dict[str, TaskState]) -> None:
        self.conn = conn
        self.prefix = prefix
        self.target = target
        self.chunk = chunk
        self.states = states
        self.out = Decoded()
        self.now = datetime.now(UTC)
        self.events = 0
        self.last = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_msg(self, msg: Msg) -> None:
        if self.done.done():
            return
        try:
            meta = msg.metadata
            seq = meta.sequence.stream
            if seq <= self.last:
                return  # redelivered after an ordered-consumer reset
            self.last = seq
            out = self.out
            if (
                add_message(
                    out, Delivered(seq=seq, subject=msg.subject, data=msg.data), self.prefix, self.now
                )
                is None
            ):
                task_id = out.events[-1][1]
                record = out.by_task.pop(task_id)[0]
                state = fold_recorded((record,), self.states.get(task_id))
                if state is not None:
                    self.states[task_id] = state
            if len(out.events) >= self.chunk:
                await self.flush()
            if seq >= self.target or meta.num_pending == 0:
                self.done.set_result(None)
        except Exception as exc:  # noqa: BLE001 - nats-py would only log it; the rebuild must fail
            self.done.set_exception(exc)

    async def flush(self) -> None:
        self.events += len(self.out.events)
        await store.copy_events(self.conn, self.out.events)
        self.out.events.clear()


async def _replay(
    conn: Any,
    nc: Client,
    stream: str,
    prefix: str,
    target: int,
    states: dict[str, TaskState],
    chunk: int,
) -> tuple[int, int, int]:
    replay = _Replay(conn, prefix, target, chunk, states)
    js = nc.jetstream()
    sub = await js.subscribe(
        all_tasks_filter(prefix),
        stream=stream,
        cb=replay.on_msg,
        ordered_consumer=True,
        idle_heartbeat=2.0,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, inactive_threshold=60.0),
    )
    try:
        seen = -1
        while not replay.done.done():
            if replay.last == seen:
                raise RebuildError(f"replay of {stream} stalled after seq {seen} (target {target})")
            seen = replay.last
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REPLAY_TIMEOUT_S):
                    await asyncio.shield(replay.done)
        replay.done.result()
    finally:
        try:
            await sub.unsubscribe()
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            logger.debug("unsubscribe failed: %s", exc)
    await replay.flush()
    await store.insert_poison(conn, replay.out.poison)
    return replay.events, len(replay.out.poison), replay.last


async def rebuild_from_urls(
    nats_settings: NatsSettings, database_url: str, *, name: str = "tasks"
) -> dict[str, Any]:
    """Connect, bring the schema up to date, rebuild, disconnect: what ``bgagent admin rebuild`` runs.

    Returns the report as a plain dict (``events``, ``tasks``, ``poison``, ``last_seq``, ``elapsed_s``,
    ``events_per_s``) ready to print as JSON.
    """
    nc = await connect(nats_settings.url, name="bgagent-rebuild", auth=nats_settings.auth)
    try:
        conn = await asyncpg.connect(database_url)
        try:
            await migrate(conn)
            report = await rebuild(
                conn, nc, stream=nats_settings.stream, prefix=nats_settings.prefix, name=name
            )
        finally:
            await conn.close()
    finally:
        await nc.drain()
    return {**msgspec.structs.asdict(report), "events_per_s": round(report.events_per_s, 1)}
