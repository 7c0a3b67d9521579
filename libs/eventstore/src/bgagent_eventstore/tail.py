"""Follow a subject filter of the stream live from a cursor, with no gap and no duplicate.

nats-py's ordered consumer does not always recover after missed heartbeats or
a server restart, so the follower keeps its own last sequence and
re-subscribes from it whenever the subscription goes quiet while the stream
has moved on (or after a reconnect).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from .store import read_direct

logger = logging.getLogger(__name__)


class Delivered(msgspec.Struct, frozen=True, kw_only=True):
    """A raw stored message: decode it with ``bgagent_contracts.decode_event``."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    num_pending: int = 0
    """Messages on the filter still behind this one when it was delivered (0 when unknown)."""
    stored_at: float = 0.0
    """When the stream stored it (epoch seconds; 0 when unknown): for lag metrics."""


async def follow(
    nc: Client,
    *,
    stream: str,
    subject_filter: str,
    after_seq: int = 0,
    idle_check_s: float = 2.0,
) -> AsyncIterator[Delivered]:
    """Yield every message on ``subject_filter`` with seq > ``after_seq``, forever, in order."""
    js = nc.jetstream()
    last = after_seq
    retry_s = 0.1
    while True:
        config = ConsumerConfig(
            # Named, so it is created on $JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>: a reader's
            # NATS permissions allow that form only, and deny the durables' names (the unnamed form
            # would let a reader update a durable by naming it in the request body). A fresh name per
            # subscription: nats-py's own reset re-creates under the same name, which the server
            # refuses while the old consumer lingers; the stall check below then re-subscribes.
            name=f"follow_{secrets.token_hex(8)}",
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=last + 1,
            inactive_threshold=60.0,
        )
        # A callback feeding a local queue: nats-py's next_msg() costs a task and a wait_for per
        # message, which halves replay throughput.
        queue: asyncio.Queue[Msg] = asyncio.Queue()

        async def on_msg(msg: Msg, _queue: asyncio.Queue[Msg] = queue) -> None:
            _queue.put_nowait(msg)

        try:
            sub = await js.subscribe(
                subject_filter,
                stream=stream,
                ordered_consumer=True,
                idle_heartbeat=1.0,
                config=config,
                cb=on_msg,
            )
        except _UNAVAILABLE as exc:
            # e.g. the stream electing a new leader after a cluster node died: keep the cursor, try again
            if nc.is_closed:
                raise
            logger.warning("cannot follow %s after seq %d yet (%r); retrying", subject_filter, last, exc)
            await asyncio.sleep(retry_s)
            retry_s = min(retry_s * 2, 2.0)
            continue
        retry_s = 0.1
        try:
            while True:
                try:
                    msg = queue.get_nowait()
                except asyncio.QueueEmpty:
                    try:
                        async with asyncio.timeout(idle_check_s):
                            msg = await queue.get()
                    except TimeoutError:
                        if await _stalled(nc, stream, subject_filter, last):
                            logger.warning("follower stalled after seq %d; re-subscribing", last)
                            break
                        continue
                seq = msg.metadata.sequence.stream
                if seq <= last:
                    continue  # a re-delivered message after a consumer reset
                last = seq
                meta = msg.metadata
                yield Delivered(
                    seq=seq,
                    subject=msg.subject,
                    data=msg.data,
                    headers=dict(msg.headers or {}),
                    num_pending=meta.num_pending,
                    stored_at=meta.timestamp.timestamp(),
                )
        finally:
            try:
                await sub.unsubscribe()
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                logger.debug("unsubscribe failed: %s", exc)


_UNAVAILABLE: tuple[type[Exception], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
)
"""Subscribing failed because JetStream does not answer right now (a restart, a leader election)."""


async def _stalled(nc: Client, stream: str, subject_filter: str, last: int) -> bool:
    """True when the stream holds a message we should have received by now."""
    if nc.is_closed:
        raise nats.errors.ConnectionClosedError
    if not nc.is_connected:
        return False
    try:
        log = await read_direct(nc, stream, subject_filter, after_seq=last, timeout=2.0)
    except Exception as exc:  # noqa: BLE001 - a failed probe just means "try again later"
        logger.debug("stall probe failed: %s", exc)
        return False
    return log.last_seq > last
