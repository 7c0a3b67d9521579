"""The incremental projector: stream → Postgres read models, exactly once, in batches.

Loop: read the checkpoint, follow the stream's all-tasks filter from it, gather a batch
(up to ``batch_max`` messages, or until ``quiet_s`` passes without a new one), then in ONE
transaction: lock the checkpoint row, check it is still the value we started from (if not,
a rebuild ran: drop the batch and start over from the stored checkpoint), write events,
task rows, poison rows and the new checkpoint, and NOTIFY readers on commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import nats.errors
import nats.js.errors
import stamina
from nats.aio.client import Client

from bgagent_contracts import TaskState
from bgagent_contracts.subjects import all_tasks_filter
from bgagent_eventstore import Delivered, follow

from . import observe, store
from .projection import decode_batch, fold_tasks
from .rebuild import rebuild, stream_identity

logger = logging.getLogger(__name__)

_RETRYABLE = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
    nats.errors.Error,  # e.g. stream_info while NATS restarts
    nats.js.errors.Error,
)


class _FeedFailed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Restart(Exception):
    """The stored checkpoint moved under us (a rebuild): start over from it."""


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel until done: on 3.11 a cancellation can be lost inside ``wait_for`` (nats-py ``next_msg``)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()


class Projector:
    def __init__(
        self,
        pool: Any,
        nc: Client,
        *,
        stream: str,
        prefix: str,
        name: str = "tasks",
        batch_max: int = 1000,
        quiet_s: float = 0.01,
        max_gather_s: float = 0.1,
        cache_size: int = 10_000,
        retry_max_s: float = 5.0,
    ) -> None:
        self._pool = pool
        self._retry_max_s = retry_max_s
        self._nc = nc
        self._stream = stream
        self._prefix = prefix
        self._name = name
        self._batch_max = batch_max
        self._quiet_s = quiet_s
        self._max_gather_s = max_gather_s
        self._cache_size = cache_size
        self._cache: OrderedDict[str, TaskState] = OrderedDict()
        self._checkpoint = 0
        self._started = asyncio.Event()
        self.batches = 0
        """Committed batches (for tests and metrics)."""

    @property
    def checkpoint(self) -> int:
        """The last sequence this projector committed (or found stored)."""
        return self._checkpoint

    async def started(self) -> None:
        """Wait until the projector has read its checkpoint and subscribed."""
        await self._started.wait()

    async def run(self) -> None:
        """Project forever; database (or NATS) outages restart from the stored checkpoint with a backoff.

        The checkpoint is committed with the batch, so a batch cut off mid-commit is projected again in
        full and nothing is applied twice; stamina retries without limit (``retry_max_s`` caps the wait).
        """
        while True:
            async for attempt in stamina.retry_context(
                on=self._retryable,
                attempts=None,
                timeout=None,
                wait_initial=0.2,
                wait_max=self._retry_max_s,
                wait_jitter=0.2,
            ):
                with attempt:
                    await self._run_from_checkpoint()  # returns after a rebuild moved the checkpoint

    def _retryable(self, exc: Exception) -> bool:
        if isinstance(exc, _RETRYABLE):
            logger.warning("projector %s failed (%r); restarting from its checkpoint", self._name, exc)
            return True
        return False

    async def _run_from_checkpoint(self) -> None:
        async with self._pool.acquire() as conn:
            checkpoint = await store.ensure_checkpoint(conn, self._name)
            checkpoint = await self._check_stream(conn, checkpoint)
        self._cache.clear()
        self._checkpoint = checkpoint
        logger.info("projector %s following %s from seq %d", self._name, self._stream, checkpoint)
        queue: asyncio.Queue[Delivered | _FeedFailed] = asyncio.Queue(maxsize=self._batch_max * 4)
        feeder = asyncio.create_task(self._feed(queue, checkpoint), name=f"projector-feed-{self._name}")
        self._started.set()
        try:
            while True:
                batch = await self._gather(queue)
                with observe.batch_span(batch):
                    checkpoint = await self._commit(batch, checkpoint)
        except _Restart:
            logger.info("projector %s: checkpoint moved (rebuild?); restarting from it", self._name)
        finally:
            await _stop(feeder)

    async def _check_stream(self, conn: Any, checkpoint: int) -> int:
        """Rebuild when the checkpoint belongs to another incarnation of the stream."""
        info = await self._nc.jetstream().stream_info(self._stream)
        identity = stream_identity(self._stream, info.created)
        stored = await store.read_stream_id(conn, self._name)
        if stored is None and checkpoint <= int(info.state.last_seq):
            await store.set_stream_id(conn, self._name, identity)
            return checkpoint
        if stored == identity and checkpoint <= int(info.state.last_seq):
            return checkpoint
        logger.warning(
            "projector %s: checkpoint %d was taken on %s but the stream is now %s (last seq %d); rebuilding",
            self._name,
            checkpoint,
            stored,
            identity,
            info.state.last_seq,
        )
        report = await rebuild(conn, self._nc, stream=self._stream, prefix=self._prefix, name=self._name)
        return report.last_seq

    async def _feed(self, queue: asyncio.Queue[Delivered | _FeedFailed], after: int) -> None:
        try:
            async for msg in follow(
                self._nc, stream=self._stream, subject_filter=all_tasks_filter(self._prefix), after_seq=after
            ):
                await queue.put(msg)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer loop, which raises it
            await queue.put(_FeedFailed(exc))

    async def _gather(self, queue: asyncio.Queue[Delivered | _FeedFailed]) -> list[Delivered]:
        first = await queue.get()
        if isinstance(first, _FeedFailed):
            raise first.exc
        batch = [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_gather_s
        while len(batch) < self._batch_max:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                wait = min(self._quiet_s, deadline - loop.time())
                if wait <= 0:
                    break
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
                    async with asyncio.timeout(wait):
                        item = await queue.get()
                except TimeoutError:
                    break
            if isinstance(item, _FeedFailed):
                queue.put_nowait(item)  # room: we just took one; raised on the next gather
                break
            batch.append(item)
        return batch

    async def _commit(self, batch: Sequence[Delivered], expected: int) -> int:
        try:
            return await self._apply(batch, expected)
        except asyncpg.DataError as exc:
            if len(batch) == 1:
                return await self._apply(batch, expected, poison_reason=f"rejected by Postgres: {exc}")
            logger.warning("batch ending at seq %d rejected (%s); applying one by one", batch[-1].seq, exc)
            for msg in batch:
                expected = await self._commit([msg], expected)
            return expected

    async def _apply(
        self, batch: Sequence[Delivered], expected: int, poison_reason: str | None = None
    ) -> int:
        now = datetime.now(UTC)
        fresh = [m for m in batch if m.seq > expected]
        if poison_reason is not None:
            decoded = decode_batch([], self._prefix, now)
            decoded.poison.extend((m.seq, m.subject, poison_reason[:2000], m.data, now) for m in fresh)
        else:
            decoded = decode_batch(fresh, self._prefix, now)
        async with self._pool.acquire() as conn, conn.transaction():
            current = await store.lock_checkpoint(conn, self._name)
            if current != expected:
                raise _Restart
            missing = [t for t in decoded.by_task if t not in self._cache]
            base = {t: self._cache[t] for t in decoded.by_task if t in self._cache}
            base.update(await store.load_states(conn, missing))
            changed = fold_tasks(decoded.by_task, base)
            await store.copy_events(conn, decoded.events)
            await store.upsert_tasks(conn, changed.values())
            await store.insert_poison(conn, decoded.poison)
            last = batch[-1].seq
            await store.set_checkpoint(conn, self._name, last)
        for seq, subject, reason, _raw, _at in decoded.poison:
            logger.warning("poison message seq=%d subject=%s recorded and skipped: %s", seq, subject, reason)
        observe.count_outcomes(base, changed)
        self._remember(changed)
        self._checkpoint = last
        self.batches += 1
        logger.debug("projected %d message(s) up to seq %d", len(fresh), last)
        return last

    def _remember(self, states: dict[str, TaskState]) -> None:
        for task_id, state in states.items():
            self._cache[task_id] = state
            self._cache.move_to_end(task_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
