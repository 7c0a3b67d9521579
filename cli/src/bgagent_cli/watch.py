"""``bgagent watch``: a task's events from a cursor, then live, until it ends.

Two transports print the same lines: ``sse`` reads query's ``GET /v1/tasks/{id}/events/stream``
with the API token (what remote users have); ``nats`` replays the task's subject from NATS and
follows it (operators and trusted deployments, with NATS credentials). ``auto`` picks SSE when
a query URL and a token are known and NATS was not configured explicitly (no ``NATS_URL`` and no
NATS credentials in the environment), NATS otherwise.
"""

from __future__ import annotations

import asyncio
import enum
import json
import os
import time
from collections.abc import Mapping
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from bgagent_contracts import (
    TERMINAL_EVENT_TYPES,
    MalformedEventError,
    Status,
    TaskState,
    decode_recorded,
    evolve,
)
from bgagent_contracts.subjects import is_task_id, task_filter
from bgagent_contracts.views import event_view
from bgagent_eventstore import StoreError, connect, follow, read_direct
from bgagent_eventstore.nats_auth import OPERATOR

from .client import error_from
from .config import CliConfig
from .errors import ApiCallError, CliError, NotConfiguredError
from .render import Printer

EXIT_COMPLETED = 0
EXIT_NOT_COMPLETED = 1


def exit_code_for(status: Status) -> int:
    """0 for COMPLETED, 1 for any other terminal state."""
    return EXIT_COMPLETED if status is Status.COMPLETED else EXIT_NOT_COMPLETED


class Transport(enum.StrEnum):
    auto = "auto"
    sse = "sse"
    nats = "nats"


_NATS_ENV = ("NATS_URL", "NATS_USER", "NATS_PASSWORD", "NATS_PASSWORD_FILE", "NATS_CREDS")


def choose_transport(
    config: CliConfig, requested: Transport, env: Mapping[str, str] | None = None
) -> Transport:
    """``auto``: SSE with a query URL and a token unless NATS is configured explicitly; else NATS."""
    if requested is not Transport.auto:
        return requested
    e = os.environ if env is None else env
    nats_explicit = any(e.get(name) for name in _NATS_ENV)
    if config.query_url and config.token and not nats_explicit:
        return Transport.sse
    return Transport.nats


async def watch(
    config: CliConfig,
    task_id: str,
    printer: Printer,
    *,
    after: int = 0,
    transport: Transport = Transport.auto,
    min_seq: int = 0,
) -> int:
    """Print every event after ``after`` until the task is terminal; returns the exit code.

    ``min_seq`` (SSE): the seq admission returned for the task's submission, so a task submitted a
    moment ago is found even before query has projected it.
    """
    if not is_task_id(task_id):
        raise CliError(f"{task_id!r} is not a task id (26-character ULID)", hint="see 'bgagent list'")
    if choose_transport(config, transport) is Transport.sse:
        return await watch_sse(config, task_id, printer, after=after, min_seq=min_seq)
    return await watch_nats(config, task_id, printer, after=after)


async def watch_nats(config: CliConfig, task_id: str, printer: Printer, *, after: int = 0) -> int:
    """The NATS transport: replay the task's subject with direct gets, then ``follow()`` it."""
    if not config.nats_url:
        raise CliError(
            "watch needs NATS", hint="set NATS_URL, or start the local stack with 'bgagent dev up'"
        )
    try:
        nc = await connect(config.nats_url, name="bgagent-cli-watch", auth=config.nats_auth_as(OPERATOR))
    except StoreError as exc:
        raise CliError(str(exc), hint="check NATS_URL; 'bgagent dev up' starts a local NATS") from exc
    subject_filter = task_filter(task_id, config.prefix)
    try:
        log = await read_direct(nc, config.stream, subject_filter, prefix=config.prefix)
        for seq in log.skipped:
            if seq > after:
                printer.note(f"warning: skipping malformed message #{seq} (not a valid event)")
        state: TaskState | None = None
        for record in log.records:
            state = evolve(state, record.event)
            if record.seq > after:
                printer.event(event_view(record))
        if state is None:
            raise CliError(
                f"task {task_id} not found in stream {config.stream}", hint="check the id and NATS_URL"
            )
        if state.terminal:
            return exit_code_for(state.status)
        async for delivered in follow(
            nc, stream=config.stream, subject_filter=subject_filter, after_seq=log.last_seq
        ):
            try:
                record = decode_recorded(delivered.seq, delivered.subject, delivered.data, config.prefix)
            except MalformedEventError as exc:
                printer.note(f"warning: skipping malformed message #{delivered.seq}: {exc}")
                continue
            state = evolve(state, record.event)
            if delivered.seq > after:
                printer.event(event_view(record))
            if state is not None and state.terminal:
                return exit_code_for(state.status)
        raise CliError("the event stream ended unexpectedly")  # follow() never ends on its own
    finally:
        await nc.close()


RECONNECT_FOR_S = 60.0
"""How long the SSE transport keeps trying to reconnect without getting through before it gives up."""
NOT_FOUND_GRACE_S = 3.0
"""A task just submitted may not be projected yet: 404 is retried this long before it is an error."""
READ_TIMEOUT_S = 60.0
"""No byte for this long (query pings every 15 s by default) means a dead connection: reconnect."""


async def watch_sse(
    config: CliConfig,
    task_id: str,
    printer: Printer,
    *,
    after: int = 0,
    min_seq: int = 0,
    reconnect_for_s: float = RECONNECT_FOR_S,
) -> int:
    """The SSE transport: query's event stream with the bearer token, resumed with ``Last-Event-ID``
    from the last seq printed after a dropped connection (no gap, no duplicate)."""
    if not config.query_url:
        raise NotConfiguredError(
            "no query API URL", hint="set BGAGENT_QUERY_URL, or start the local stack with 'bgagent dev up'"
        )
    if not config.token:
        raise NotConfiguredError(
            "no API token", hint="set BGAGENT_TOKEN, or start the local stack with 'bgagent dev up'"
        )
    stream = _SseStream(config, task_id, printer, after=after, min_seq=min_seq)
    failing_since: float | None = None
    delay = 0.1
    not_found_until = time.monotonic() + NOT_FOUND_GRACE_S
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=READ_TIMEOUT_S)) as client:
        while True:
            before = stream.cursor
            try:
                code = await stream.connect(client)
                if code is not None:
                    return code
                reason = "the server closed the event stream"
            except ApiCallError as exc:
                if exc.status == 404 and stream.cursor == after and time.monotonic() < not_found_until:
                    await asyncio.sleep(0.05)  # submitted a moment ago: query has not projected it yet
                    continue
                if exc.status != 503:
                    raise
                reason = exc.message
            except httpx.HTTPError as exc:  # includes httpx_sse.SSEError (not an event stream)
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if stream.connected:
                failing_since = None  # the server answered: only failures to get through count
            if stream.cursor > before:
                delay = 0.1  # it made progress before it dropped: reconnect at once
            now = time.monotonic()
            failing_since = now if failing_since is None else failing_since
            if now - failing_since > reconnect_for_s:
                raise CliError(
                    f"lost the event stream of {task_id} ({reason}) and could not reconnect",
                    hint=f"resume with 'bgagent watch {task_id} --after {stream.cursor}'",
                )
            printer.note(f"reconnecting after seq {stream.cursor}: {reason}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


class _SseStream:
    """One task's event stream; ``cursor`` is the last seq printed (sent as ``Last-Event-ID``)."""

    def __init__(
        self, config: CliConfig, task_id: str, printer: Printer, *, after: int, min_seq: int
    ) -> None:
        assert config.query_url is not None
        self._config = config
        self._task_id = task_id
        self._printer = printer
        self._url = f"{config.query_url.rstrip('/')}/v1/tasks/{task_id}/events/stream"
        self._min_seq = min_seq
        self.cursor = after
        self.connected = False
        """Whether the last connect() got the event stream (200) before it ended."""

    async def connect(self, client: httpx.AsyncClient) -> int | None:
        """Print events until the terminal one (its exit code) or until the server closes (None)."""
        self.connected = False
        start = self.cursor
        headers = {"Authorization": f"Bearer {self._config.token}", "Last-Event-ID": str(self.cursor)}
        params = {"min_seq": str(self._min_seq)} if self._min_seq else {}
        async with aconnect_sse(client, "GET", self._url, headers=headers, params=params) as source:
            response = source.response
            if response.status_code >= 400:
                raise error_from(response, _json(await response.aread()))
            self.connected = True
            async for sse in source.aiter_sse():
                if not sse.data:
                    continue
                view: dict[str, Any] = json.loads(sse.data)
                seq = int(view["seq"])
                if seq <= self.cursor:
                    continue  # never print a seq twice
                self.cursor = seq
                self._printer.event(view)
                if view["type"] in TERMINAL_EVENT_TYPES:
                    return EXIT_COMPLETED if view["type"] == "task_completed" else EXIT_NOT_COMPLETED
        # Closed before the terminal event: a server going away, or a cursor past the end. A task
        # that ended while this stream was cut still has events after the cursor (the terminal one
        # at least): resume once more to print them; only a stream that had nothing left ends here.
        ended = await _terminal_status(client, self._config, self._task_id)
        if ended is None or self.cursor > start:
            return None
        return exit_code_for(ended)


async def _terminal_status(client: httpx.AsyncClient, config: CliConfig, task_id: str) -> Status | None:
    """The task's status when it has ended (the stream had nothing after the cursor), else None."""
    assert config.query_url is not None
    response = await client.get(
        f"{config.query_url.rstrip('/')}/v1/tasks/{task_id}",
        headers={"Authorization": f"Bearer {config.token}"},
    )
    if response.status_code >= 400:
        raise error_from(response, _json(response.content))
    status = Status(response.json()["data"]["status"])
    return status if status.terminal else None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None
