"""The event store: per-task optimistic appends and reads over one JetStream stream."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import msgspec
import nats.errors
import nats.js.errors
import stamina
from nats.aio.client import Client
from nats.js.api import Header, PubAck

from bgagent_contracts import Event, MalformedEventError, Recorded, TaskState, decode_recorded, encode_event
from bgagent_contracts import event_type as type_of
from bgagent_contracts.fold import fold_recorded
from bgagent_contracts.subjects import task_filter, task_subject

from .errors import ConcurrencyError, StoreUnavailableError, TaskExistsError
from .telemetry import new_traceparent as new_traceparent
from .telemetry import trace_headers

logger = logging.getLogger(__name__)

EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_LAST_SUBJECT_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
WRONG_LAST_SEQUENCE = 10071
_BATCH = 512
_TRANSIENT: tuple[type[Exception], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,  # JetStream not up yet after a restart
    nats.errors.OutboundBufferLimitError,  # the reconnect buffer is full
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
    StoreUnavailableError,  # from read_direct
)
"""Errors that mean "NATS is not answering right now" (not: the client was closed, or a real rejection)."""


class TaskLog(msgspec.Struct, frozen=True, kw_only=True):
    """What a task's log holds: decodable events, and the last sequence of any message on it."""

    records: tuple[Recorded, ...]
    last_seq: int
    skipped: tuple[int, ...] = ()
    """Sequences of messages on the task's subjects that were not valid events (recorded, skipped)."""

    def state(self) -> TaskState | None:
        return fold_recorded(self.records)


class EventStore(Protocol):
    """The port every service appends and reads through (JetStream, or memory in unit tests)."""

    async def append(self, task_id: str, events: Sequence[Event], *, expected_seq: int) -> list[int]:
        """Append events in order; each is checked against the task's last sequence."""
        ...

    async def read(self, task_id: str, *, after_seq: int = 0) -> TaskLog:
        """Every event of a task after ``after_seq``, in order."""
        ...


class JetStreamEventStore:
    """EventStore over a JetStream stream with subjects ``<prefix>.task.<id>.<type>``."""

    def __init__(
        self, nc: Client, *, stream: str, prefix: str, timeout: float = 5.0, outage_s: float = 0.0
    ) -> None:
        """``outage_s`` > 0: appends and reads retry with backoff for that long while NATS does not
        answer (``NatsSettings.outage_s``; the runner's choice), each publish with the same
        ``Nats-Msg-Id`` and expected sequence. 0: one try, StoreUnavailableError at once (HTTP writers)."""
        self._nc = nc
        self._js = nc.jetstream(timeout=timeout)
        self._stream = stream
        self._prefix = prefix
        self._timeout = timeout
        self._outage_s = outage_s

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def stream(self) -> str:
        return self._stream

    async def append(
        self,
        task_id: str,
        events: Sequence[Event],
        *,
        expected_seq: int,
        traceparent: str | None = None,
    ) -> list[int]:
        seqs: list[int] = []
        expected = expected_seq
        # W3C trace headers through the SDK propagator: the explicit traceparent's span as the parent
        # when given, else the current span (e.g. admission's request span), else a fresh root.
        trace = trace_headers(traceparent)
        for event in events:
            if event.task_id != task_id:
                raise ValueError(f"event {event.event_id} belongs to task {event.task_id}, not {task_id}")
            headers = {
                Header.MSG_ID.value: event.event_id,
                EXPECTED_LAST_SUBJECT_SEQ: str(expected),
                EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: task_filter(task_id, self._prefix),
                **trace,
            }
            subject = task_subject(task_id, type_of(event), self._prefix)
            try:
                ack = await self._publish(subject, encode_event(event), headers)
            except nats.js.errors.APIError as exc:
                if exc.err_code == WRONG_LAST_SEQUENCE:
                    actual = _actual_seq(exc.description)
                    if actual is not None and await self._is_our_retry(actual, event.event_id):
                        # A retry of an append that already landed: the server checks the
                        # expected sequence before Nats-Msg-Id, so recognise it here.
                        seqs.append(actual)
                        expected = actual
                        continue
                    cls = TaskExistsError if expected == 0 and not seqs else ConcurrencyError
                    raise cls(task_id, expected, actual, appended=len(seqs)) from exc
                if isinstance(exc, nats.js.errors.ServiceUnavailableError):
                    raise StoreUnavailableError(f"append to {subject} failed: {exc!r}") from exc
                raise
            except (
                nats.errors.TimeoutError,
                nats.errors.NoRespondersError,
                nats.js.errors.NoStreamResponseError,  # what nats-py raises when no stream answers
                nats.errors.ConnectionClosedError,
                nats.errors.OutboundBufferLimitError,
            ) as exc:
                raise StoreUnavailableError(f"append to {subject} failed: {exc!r}") from exc
            if ack.duplicate:
                logger.info("duplicate append ignored", extra={"task_id": task_id, "seq": ack.seq})
            seqs.append(ack.seq)
            expected = max(expected, ack.seq)
        return seqs

    async def _publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> PubAck:
        """One publish, retried unchanged (same headers, so never duplicated) for ``outage_s``."""
        if self._outage_s <= 0:
            return await self._js.publish(subject, payload, headers=headers, timeout=self._timeout)
        async for attempt in _outage_retries(self._outage_s):
            with attempt:
                if attempt.num > 1:
                    logger.warning("NATS not answering; append to %s, try %d", subject, attempt.num)
                return await self._js.publish(subject, payload, headers=headers, timeout=self._timeout)
        raise AssertionError("unreachable: stamina re-raises the last error")

    async def _is_our_retry(self, seq: int, event_id: str) -> bool:
        try:
            msg = await self._js.get_msg(self._stream, seq=seq, direct=True)
        except nats.js.errors.Error:
            return False
        return bool(msg.headers and msg.headers.get(Header.MSG_ID.value) == event_id)

    async def read(self, task_id: str, *, after_seq: int = 0) -> TaskLog:
        if self._outage_s <= 0:
            return await self._read_once(task_id, after_seq)
        try:
            async for attempt in _outage_retries(self._outage_s):
                with attempt:
                    if attempt.num > 1:
                        logger.warning("NATS not answering; read of task %s, try %d", task_id, attempt.num)
                    return await self._read_once(task_id, after_seq)
        except _TRANSIENT as exc:
            if isinstance(exc, StoreUnavailableError):
                raise
            raise StoreUnavailableError(f"read of task {task_id} failed: {exc!r}") from exc
        raise AssertionError("unreachable: stamina re-raises the last error")

    async def _read_once(self, task_id: str, after_seq: int) -> TaskLog:
        return await read_direct(
            self._nc,
            self._stream,
            task_filter(task_id, self._prefix),
            after_seq=after_seq,
            timeout=self._timeout,
            prefix=self._prefix,
        )

    async def last_stream_seq(self) -> int:
        """The stream's last sequence (0 when empty)."""
        info = await self._js.stream_info(self._stream)
        return int(info.state.last_seq)


def _outage_retries(budget_s: float) -> Any:
    """stamina's retry iterator for NATS outages (its type is private)."""
    return stamina.retry_context(
        on=_TRANSIENT, attempts=None, timeout=budget_s, wait_initial=0.2, wait_max=5.0, wait_jitter=0.5
    )


def _actual_seq(description: str | None) -> int | None:
    if not description:
        return None
    tail = description.rsplit(":", 1)[-1].strip()
    return int(tail) if tail.isdigit() else None


def _prefix_of(subject_filter: str) -> str:
    """The subject prefix of a task filter (``<prefix>.task.<id|*>.<type|*>``)."""
    return subject_filter.rsplit(".task.", 1)[0]


async def read_direct(
    nc: Client,
    stream: str,
    subject_filter: str,
    *,
    after_seq: int = 0,
    timeout: float = 5.0,
    prefix: str | None = None,
) -> TaskLog:
    """Batched direct get (``next_by_subj``) until the server says there is nothing more.

    Messages that are not valid events of the subject they are stored on (see
    ``bgagent_contracts.decode_recorded``) are skipped and listed in ``TaskLog.skipped``.
    """
    subject_prefix = prefix if prefix is not None else _prefix_of(subject_filter)
    records: list[Recorded] = []
    skipped: list[int] = []
    last_seq = after_seq
    start = after_seq + 1
    api = f"$JS.API.DIRECT.GET.{stream}"
    while True:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        more = False
        try:
            request = json.dumps({"seq": start, "batch": _BATCH, "next_by_subj": subject_filter}).encode()
            await nc.publish(api, request, reply=inbox)
            while True:
                try:
                    msg = await sub.next_msg(timeout=timeout)
                except nats.errors.TimeoutError as exc:
                    raise StoreUnavailableError(
                        f"direct get on {stream} timed out (is allow_direct on?)"
                    ) from exc
                headers = msg.headers or {}
                status = headers.get("Status")
                if status == "404":
                    break
                if status == "204":
                    more = int(headers.get("Nats-Num-Pending", "0")) > 0
                    break
                if status is not None:
                    raise StoreUnavailableError(f"direct get on {stream}: status {status} {headers}")
                seq = int(headers["Nats-Sequence"])
                last_seq = max(last_seq, seq)
                subject = headers.get("Nats-Subject", "")
                try:
                    records.append(decode_recorded(seq, subject, msg.data, subject_prefix))
                except MalformedEventError as exc:
                    logger.warning("skipping malformed message seq=%d subject=%.200s: %s", seq, subject, exc)
                    skipped.append(seq)
        finally:
            await sub.unsubscribe()
        if not more:
            break
        start = last_seq + 1
    return TaskLog(records=tuple(records), last_seq=last_seq, skipped=tuple(skipped))
