"""``GET /v1/tasks/{task_id}/events/stream``: one task's events as Server-Sent Events.

Catch-up from the read model (``task_events`` in Postgres, paged), then live from JetStream with
``follow()`` on the task's subject from the last seq sent (ADR 0005). Every message carries
``id: <seq>``; the cursor only moves forward, so the hand-off between the two phases (and a
re-subscription inside ``follow()``) yields each seq once. Comment lines (``: ping``) keep an idle
connection open; the stream ends after the terminal event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage
from nats.aio.client import Client

from bgagent_contracts import TERMINAL_EVENT_TYPES, MalformedEventError, Recorded, decode_recorded
from bgagent_contracts.subjects import task_filter
from bgagent_contracts.views import event_view
from bgagent_eventstore import Delivered, follow
from bgagent_web import Unavailable

from . import store

logger = logging.getLogger(__name__)

CATCH_UP_PAGE = 500
LIVE_QUEUE = 256
"""Messages ``follow()`` may run ahead of a slow client (then it waits: back-pressure)."""

_encoder = msgspec.json.Encoder()


def message(record: Recorded) -> ServerSentEventMessage:
    """``id: <seq>``, ``event: <type>``, ``data: <event_view JSON>`` (the shape of GET …/events items)."""
    view = event_view(record)
    return ServerSentEventMessage(data=_encoder.encode(view).decode(), event=view["type"], id=record.seq)


def _ends(record: Recorded) -> bool:
    return event_view(record)["type"] in TERMINAL_EVENT_TYPES


class EventStreams:
    """Serves the SSE streams of one process; ``active`` counts the open ones."""

    def __init__(
        self,
        *,
        pool: Any,
        nc: Client | None,
        stream: str,
        prefix: str,
        ping_s: float = 15.0,
        max_streams: int = 1000,
        page_size: int = CATCH_UP_PAGE,
    ) -> None:
        self._pool = pool
        self._nc = nc
        self._stream = stream
        self._prefix = prefix
        self._ping_s = ping_s
        self._max = max_streams
        self._page = page_size
        self.active = 0

    def admit(self) -> None:
        """503 when this process already serves ``max_streams`` streams (or cannot follow NATS)."""
        if self._nc is None:
            raise Unavailable("live event streams are not available on this server")
        if self.active >= self._max:
            raise Unavailable(
                f"too many open event streams ({self.active}); retry shortly or use GET …/events"
            )

    def response(self, task_id: str, after: int, *, terminal: bool) -> ServerSentEvent:
        return ServerSentEvent(
            self.messages(task_id, after, terminal=terminal), headers={"X-Accel-Buffering": "no"}
        )

    async def messages(
        self, task_id: str, after: int, *, terminal: bool
    ) -> AsyncIterator[ServerSentEventMessage]:
        """Events with seq > ``after`` until the terminal one. ``terminal``: the task had already
        ended when the request was checked, so its whole history is in the read model."""
        self.active += 1
        try:
            cursor = after
            while True:
                try:
                    async with self._pool.acquire() as conn:
                        page = await store.task_events(
                            conn, task_id, prefix=self._prefix, after=cursor, limit=self._page
                        )
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                    # Headers are out: end the stream; the client resumes with Last-Event-ID.
                    logger.warning("event stream of %s: reading the read model failed: %r", task_id, exc)
                    return
                for record in page.records:
                    cursor = record.seq
                    yield message(record)
                    if _ends(record):
                        return
                if not page.has_more:
                    break
            if terminal:
                return
            async for item in self._live(task_id, cursor):
                yield item
        finally:
            self.active -= 1

    async def _live(self, task_id: str, cursor: int) -> AsyncIterator[ServerSentEventMessage]:
        assert self._nc is not None
        queue: asyncio.Queue[Delivered | None] = asyncio.Queue(LIVE_QUEUE)
        pump = asyncio.create_task(self._pump(task_id, cursor, queue), name=f"sse-{task_id}")
        try:
            while True:
                try:
                    async with asyncio.timeout(self._ping_s):
                        delivered = await queue.get()
                except TimeoutError:
                    yield ServerSentEventMessage(data=None, comment="ping")
                    continue
                if delivered is None:
                    return  # follow() failed (logged): the client resumes with Last-Event-ID
                if delivered.seq <= cursor:
                    continue
                cursor = delivered.seq
                try:
                    record = decode_recorded(delivered.seq, delivered.subject, delivered.data, self._prefix)
                except MalformedEventError as exc:
                    logger.warning(
                        "event stream of %s: skipping malformed message #%d: %s", task_id, cursor, exc
                    )
                    yield ServerSentEventMessage(data=None, comment=f"skipped malformed message #{cursor}")
                    continue
                yield message(record)
                if _ends(record):
                    return
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump

    async def _pump(self, task_id: str, cursor: int, queue: asyncio.Queue[Delivered | None]) -> None:
        assert self._nc is not None
        try:
            async for delivered in follow(
                self._nc,
                stream=self._stream,
                subject_filter=task_filter(task_id, self._prefix),
                after_seq=cursor,
            ):
                await queue.put(delivered)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported to the client as the end of the stream
            logger.warning("event stream of %s: following NATS failed: %r", task_id, exc)
        await queue.put(None)
