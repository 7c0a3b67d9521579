"""The fanout loop: pull batches from the durable consumer in stream order, fold, upsert, ack.

Per batch:
1. decode each message and fold it into the in-memory state of its task (a task first seen
   mid-log is loaded from the event store up to that message's sequence); a malformed
   message (``decode_recorded`` refuses it) is recorded in the poison bucket, counted, and
   acked with the batch: it is never retried;
2. for every task the batch touched whose target is routable, render the body and, if it
   differs from the last body this process sent, upsert the comment (one edit per task per
   batch: a burst of events coalesces), tasks in parallel up to ``concurrency``;
   (a batch is gathered for up to ``linger_s`` after its first message, so bursts coalesce);
3. ack the whole batch only after its edits succeeded; while GitHub makes us wait, every
   message gets ``in_progress`` so the server does not redeliver it.
If the batch fails for another reason (NATS, KV), the touched tasks are forgotten (so they
are re-read from the log) and the messages are nak'ed for redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TypeVar

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from bgagent_contracts import (
    MalformedEventError,
    Recorded,
    TaskState,
    TaskSubmitted,
    decode_recorded,
    fold_recorded,
)
from bgagent_contracts.subjects import fanout_consumer
from bgagent_eventstore import EventStore, record_poison

from . import observe
from .comments import CommentKeeper
from .errors import GitHubError, GitHubStoppedError
from .render import render_comment, target_of

logger = logging.getLogger(__name__)

IN_PROGRESS_EVERY_S = 10.0
NAK_DELAY_S = 1.0


_V = TypeVar("_V")


class _LRU(OrderedDict[str, _V]):
    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def remember(self, key: str, value: _V) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)


class Fanout:
    """One ordered fanout consumer (run exactly one per deployment)."""

    def __init__(
        self,
        nc: Client,
        *,
        stream: str,
        prefix: str,
        store: EventStore,
        keeper: CommentKeeper,
        batch_max: int = 100,
        fetch_timeout_s: float = 0.5,
        concurrency: int = 4,
        linger_s: float = 0.2,
        cache_size: int = 10_000,
    ) -> None:
        self._js: JetStreamContext = nc.jetstream()
        self._stream = stream
        self._prefix = prefix
        self._store = store
        self._keeper = keeper
        self._batch_max = batch_max
        self._fetch_timeout_s = fetch_timeout_s
        self._linger_s = linger_s
        self._limit = asyncio.Semaphore(max(1, concurrency))
        self._states: _LRU[TaskState] = _LRU(cache_size)
        self._sent: _LRU[str] = _LRU(cache_size)
        self._skipped: _LRU[bool] = _LRU(cache_size)
        self._bound = asyncio.Event()
        self.malformed = 0
        """Messages on task subjects that were not valid events (logged, acked, skipped)."""
        self.processed = 0
        self.batches = 0
        self.last_acked_seq = 0

    async def bound(self) -> None:
        """Wait until the consumer is bound (the service is ready)."""
        await self._bound.wait()

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until ``stopping`` is set."""
        psub = await self._js.pull_subscribe_bind(durable=fanout_consumer(self._prefix), stream=self._stream)
        self._bound.set()
        logger.info("fanout bound to %s on %s", fanout_consumer(self._prefix), self._stream)
        try:
            while not stopping.is_set():
                try:
                    msgs = await psub.fetch(batch=self._batch_max, timeout=self._fetch_timeout_s)
                except TimeoutError:  # nats.errors.TimeoutError, or asyncio's from deep inside fetch
                    continue
                except nats.errors.Error as exc:
                    logger.warning("fetch failed (%r); retrying", exc)
                    await _pause(stopping, 0.5)
                    continue
                if msgs:
                    await self.handle_batch(await self._linger(psub, msgs))
        finally:
            with contextlib.suppress(Exception):  # best-effort: the connection may be closing
                await psub.unsubscribe()

    async def _linger(self, psub: JetStreamContext.PullSubscription, msgs: list[Msg]) -> list[Msg]:
        """Gather more of a burst (up to batch_max, for at most linger_s) so it becomes one edit."""
        deadline = time.monotonic() + self._linger_s
        while len(msgs) < self._batch_max:
            left = deadline - time.monotonic()
            if left < 0.01:
                break
            try:
                msgs.extend(await psub.fetch(batch=self._batch_max - len(msgs), timeout=left))
            except (TimeoutError, nats.errors.Error):
                break
        return msgs

    @observe.batch_span
    async def handle_batch(self, msgs: Sequence[Msg]) -> None:
        touched: list[str] = []
        keepalive = asyncio.create_task(_keep_in_progress(msgs))
        try:
            for msg in msgs:
                task_id = await self._absorb(msg)
                if task_id is not None and task_id not in touched:
                    touched.append(task_id)
            await self._sync_all(touched)
        except GitHubStoppedError:
            self._forget(touched)
            logger.info("stopping mid-batch; %d message(s) nak'ed for the next instance", len(msgs))
            await _nak_all(msgs, delay=None)
            return
        except Exception:
            self._forget(touched)
            logger.exception("batch of %d message(s) failed; nak for redelivery", len(msgs))
            await _nak_all(msgs, delay=NAK_DELAY_S)
            return
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
        try:
            for msg in msgs:
                await msg.ack()
        except nats.errors.Error as exc:
            # The edits are done; a redelivery only re-renders (PATCH is idempotent).
            logger.warning("ack of a batch failed (%r); it will be redelivered", exc)
            return
        self.batches += 1
        self.processed += len(msgs)
        self.last_acked_seq = max(self.last_acked_seq, msgs[-1].metadata.sequence.stream)

    async def _sync_all(self, task_ids: Sequence[str]) -> None:
        """Upsert every touched task's comment; the first failure cancels the rest."""
        try:
            async with asyncio.TaskGroup() as group:
                for task_id in task_ids:
                    group.create_task(self._sync(task_id))
        except BaseExceptionGroup as failed:
            first: BaseException = failed.exceptions[0]
            for exc in failed.exceptions:
                if isinstance(exc, GitHubStoppedError):
                    first = exc
            raise first from None

    def _forget(self, task_ids: Sequence[str]) -> None:
        for task_id in task_ids:
            self._states.pop(task_id, None)

    async def _absorb(self, msg: Msg) -> str | None:
        """Fold one message into its task's state; the task id, or None if it was skipped."""
        seq = msg.metadata.sequence.stream
        try:
            record = decode_recorded(seq, msg.subject, msg.data, self._prefix)
        except MalformedEventError as exc:
            self.malformed += 1
            await record_poison(
                self._js,
                self._prefix,
                reader="fanout",
                seq=seq,
                subject=msg.subject,
                reason=str(exc),
                size_bytes=len(msg.data),
            )
            return None
        task_id = record.event.task_id
        state = self._states.get(task_id)
        if state is None:
            state = await self._load(task_id, record)
        elif seq <= state.last_seq:
            return task_id  # a redelivery we already folded
        else:
            state = fold_recorded([record], state)
        if state is None:
            logger.warning("task %s has no task_submitted before seq %s; skipped", task_id, seq)
            return None
        self._states.remember(task_id, state)
        return task_id

    async def _load(self, task_id: str, record: Recorded) -> TaskState | None:
        """State of a task first seen at ``record``: fold its log up to that sequence."""
        if isinstance(record.event, TaskSubmitted):
            return fold_recorded([record])
        log = await self._store.read(task_id)
        upto = [r for r in log.records if r.seq < record.seq]
        return fold_recorded([*upto, record])

    @observe.sync_span
    async def _sync(self, task_id: str) -> None:
        state = self._states.get(task_id)
        if state is None or task_id in self._skipped:
            return
        target = target_of(state)
        if target is None:
            return
        body = render_comment(state)
        if self._sent.get(task_id) == body:
            return
        repo, number = target
        async with self._limit:
            try:
                comment_id = await self._keeper.upsert(task_id, repo, number, body)
            except GitHubError as exc:
                logger.warning("task %s: cannot comment on %s#%s (%s); skipped", task_id, repo, number, exc)
                self._skipped.remember(task_id, True)
                return
        self._sent.remember(task_id, body)
        logger.debug("task %s: comment %s shows %s", task_id, comment_id, state.status.value)


async def _nak_all(msgs: Sequence[Msg], *, delay: float | None) -> None:
    for msg in msgs:
        with contextlib.suppress(Exception):  # best effort: ack_wait redelivers anyway
            await msg.nak(delay=delay)


async def _keep_in_progress(msgs: Sequence[Msg]) -> None:
    """Tell the server we are still working on these messages (resets ack_wait)."""
    while True:
        await asyncio.sleep(IN_PROGRESS_EVERY_S)
        for msg in msgs:
            with contextlib.suppress(Exception):
                await msg.in_progress()


async def _pause(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
