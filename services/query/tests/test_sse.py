"""The SSE event stream over a real socket (uvicorn), real PostgreSQL and real NATS JetStream.

An infinite SSE stream blocks the in-process test client, so every test here talks to uvicorn on a
free port and reads the raw ``text/event-stream`` lines itself, under a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from nats.aio.client import Client

from bgagent_contracts import Event
from bgagent_contracts.auth import TokenTable
from bgagent_contracts.subjects import task_subject
from bgagent_contracts.views import event_view
from bgagent_eventstore import JetStreamEventStore
from bgagent_query.api import create_app
from bgagent_query.watch import ProjectionWatch
from bgagent_testing.servers import free_port

pytestmark = pytest.mark.integration

ALICE = {"Authorization": "Bearer tok-alice"}
DEADLINE_S = 15.0


class Frames:
    """One open stream: its messages (dicts of fields) and comments, read on demand."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self.comments: list[str] = []
        self.ended = False

    async def _item(self) -> str | dict[str, str] | None:
        """The next comment (a str) or message (a dict); None when the server closed."""
        fields: dict[str, str] = {}
        async for line in self._lines:
            if line == "":
                if fields:
                    return fields
                continue
            if line.startswith(":") and not fields:
                return line[1:].strip()
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        self.ended = True
        return fields or None

    async def next(self) -> dict[str, str] | None:
        """The next message (comments are collected on the way); None when the server closed."""
        while isinstance(item := await self._item(), str):
            self.comments.append(item)
        return item

    async def comment(self) -> str:
        """The next comment line; fails when a message or the end comes first."""
        item = await self._item()
        assert isinstance(item, str), f"expected a comment, got {item!r}"
        self.comments.append(item)
        return item

    async def events(self, n: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while len(out) < n:
            frame = await self.next()
            assert frame is not None, f"stream ended after {len(out)} of {n} events"
            out.append(_checked(frame))
        return out

    async def rest(self) -> list[dict[str, Any]]:
        """Every remaining event until the server closes the stream."""
        out: list[dict[str, Any]] = []
        while (frame := await self.next()) is not None:
            out.append(_checked(frame))
        return out


def _checked(frame: dict[str, str]) -> dict[str, Any]:
    view: dict[str, Any] = json.loads(frame["data"])
    assert frame["id"] == str(view["seq"])
    assert frame["event"] == view["type"]
    return view


class Server:
    def __init__(self, client: httpx.AsyncClient, app: Any) -> None:
        self.client = client
        self.app = app

    @contextlib.asynccontextmanager
    async def stream(
        self, task_id: str, headers: dict[str, str] | None = None, **params: Any
    ) -> AsyncIterator[Frames]:
        async with self.client.stream(
            "GET", f"/v1/tasks/{task_id}/events/stream", params=params, headers={**ALICE, **(headers or {})}
        ) as response:
            assert response.status_code == 200, (await response.aread()).decode()
            assert response.headers["content-type"].startswith("text/event-stream")
            yield Frames(response)


@contextlib.asynccontextmanager
async def _serve(
    pool: Any, db_url: str, nc: Client, store: JetStreamEventStore, **kwargs: Any
) -> AsyncIterator[Server]:
    watch = ProjectionWatch(pool, db_url, poll_s=0.05)
    await watch.start()

    async def ready() -> bool:
        return True

    app = create_app(
        pool=pool,
        watch=watch,
        tokens=TokenTable.parse("tok-alice=alice,tok-bob=bob"),
        prefix=store.prefix,
        ready=ready,
        nc=nc,
        stream=store.stream,
        **kwargs,
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    serving = asyncio.create_task(server.serve())
    try:
        deadline = asyncio.get_running_loop().time() + 5
        while not server.started:
            assert not serving.done(), "uvicorn stopped"
            assert asyncio.get_running_loop().time() < deadline, "uvicorn did not start"
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield Server(client, app)
    finally:
        server.should_exit = True
        server.force_exit = True  # open streams do not keep the test waiting
        await serving
        await watch.close()


@pytest.fixture
async def served(
    pool: Any, db_url: str, nc: Client, event_store: JetStreamEventStore
) -> AsyncIterator[Server]:
    async with _serve(pool, db_url, nc, event_store, sse_ping_s=30.0) as s:
        yield s


async def _projected(
    store: JetStreamEventStore, projectors: Any, pool: Any, q: Any, *tasks: list[Event]
) -> None:
    for events in tasks:
        await q.append_all(store, events)
    last = await store.last_stream_seq()
    await q.wait_until(lambda: _reached(pool, q, last))


async def _reached(pool: Any, q: Any, seq: int) -> bool:
    return bool(await q.checkpoint(pool) >= seq)


async def _views(store: JetStreamEventStore, task_id: str) -> list[dict[str, Any]]:
    """As JSON carries them (tuple fields such as initial_approvals arrive as lists)."""
    views: list[dict[str, Any]] = json.loads(
        json.dumps([event_view(r) for r in (await store.read(task_id)).records])
    )
    return views


async def test_catch_up_then_live_yields_every_event_once_and_closes_after_the_terminal_one(
    served: Server, event_store: JetStreamEventStore, projectors: Any, pool: Any, q: Any
) -> None:
    events = q.lifecycle(turns=2)
    tid = events[0].task_id
    await projectors.start()
    await _projected(event_store, projectors, pool, q, events[:4])
    async with asyncio.timeout(DEADLINE_S), served.stream(tid) as frames:
        first = await frames.events(4)
        last = await event_store.last_stream_seq()
        await q.append_all(event_store, events[4:], expected=last)  # live, while the stream is open
        rest = await frames.rest()
    assert frames.ended
    assert first + rest == await _views(event_store, tid)
    assert rest[-1]["type"] == "task_completed"


async def test_events_the_projection_has_not_reached_come_from_the_stream_without_a_gap(
    served: Server, event_store: JetStreamEventStore, projectors: Any, pool: Any, q: Any
) -> None:
    events = q.lifecycle(turns=1)
    tid = events[0].task_id
    _, task = await projectors.start()
    await _projected(event_store, projectors, pool, q, events[:3])
    await q.stop_task(task)  # the read model stops at 3 events; the stream goes on
    last = await event_store.last_stream_seq()
    await q.append_all(event_store, events[3:], expected=last)
    async with asyncio.timeout(DEADLINE_S), served.stream(tid) as frames:
        seen = await frames.rest()
    assert seen == await _views(event_store, tid)


async def test_resume_with_last_event_id_or_after_has_no_gap_and_no_duplicate(
    served: Server, event_store: JetStreamEventStore, projectors: Any, pool: Any, q: Any
) -> None:
    events = q.lifecycle(turns=2)
    tid = events[0].task_id
    await projectors.start()
    await _projected(event_store, projectors, pool, q, events[:6])
    expected_all = await _views(event_store, tid)
    async with asyncio.timeout(DEADLINE_S):
        async with served.stream(tid) as frames:
            got = await frames.events(3)  # then the client drops the connection
        async with served.stream(tid, headers={"Last-Event-ID": str(got[-1]["seq"])}, after="0") as frames:
            got += await frames.events(3)
            last = await event_store.last_stream_seq()
            await q.append_all(event_store, events[6:8], expected=last)
            got += await frames.events(2)
        async with served.stream(tid, after=str(got[-1]["seq"])) as frames:
            last = await event_store.last_stream_seq()
            await q.append_all(event_store, events[8:], expected=last)
            got += await frames.rest()
    assert got == await _views(event_store, tid)
    assert got[: len(expected_all)] == expected_all


async def test_a_finished_task_sends_its_history_after_the_cursor_and_closes(
    served: Server, event_store: JetStreamEventStore, projectors: Any, pool: Any, q: Any
) -> None:
    events = q.lifecycle(turns=1)
    tid = events[0].task_id
    await projectors.start()
    await _projected(event_store, projectors, pool, q, events)
    views = await _views(event_store, tid)
    async with asyncio.timeout(DEADLINE_S):
        async with served.stream(tid, after=str(views[2]["seq"])) as frames:
            assert await frames.rest() == views[3:]
        async with served.stream(tid, headers={"Last-Event-ID": str(views[-1]["seq"])}) as frames:
            assert await frames.rest() == []
            assert frames.ended


async def test_another_users_task_is_404_a_wrong_token_401_bad_cursors_400(
    served: Server, event_store: JetStreamEventStore, projectors: Any, pool: Any, q: Any
) -> None:
    theirs = q.lifecycle(user="bob", turns=1)[:2]
    await projectors.start()
    await _projected(event_store, projectors, pool, q, theirs)
    path = f"/v1/tasks/{theirs[0].task_id}/events/stream"
    async with asyncio.timeout(DEADLINE_S):
        resp = await served.client.get(path, headers=ALICE)
        assert (resp.status_code, resp.json()["error"]["code"]) == (404, "NOT_FOUND")
        resp = await served.client.get(path, headers={"Authorization": "Bearer wrong"})
        assert (resp.status_code, resp.json()["error"]["code"]) == (401, "UNAUTHORIZED")
        resp = await served.client.get("/v1/tasks/01J0000000000000000000000Z/events/stream", headers=ALICE)
        assert resp.status_code == 404
        for headers, params, name in (
            ({"Last-Event-ID": "-1"}, {}, "Last-Event-ID"),
            ({"Last-Event-ID": "x"}, {}, "Last-Event-ID"),
            ({}, {"after": str(2**63)}, "after"),
            ({"Last-Event-ID": "3"}, {"after": "nope"}, "after"),
        ):
            resp = await served.client.get(path, headers={**ALICE, **headers}, params=params)
            assert resp.status_code == 400
            assert resp.json()["error"]["message"].startswith(f"{name}:")


async def test_an_idle_stream_gets_pings_and_a_disconnect_ends_it_on_the_server(
    pool: Any, db_url: str, nc: Client, event_store: JetStreamEventStore, projectors: Any, q: Any
) -> None:
    events = q.lifecycle(turns=1)
    tid = events[0].task_id
    await projectors.start()
    await _projected(event_store, projectors, pool, q, events[:2])
    async with asyncio.timeout(DEADLINE_S), _serve(pool, db_url, nc, event_store, sse_ping_s=0.1) as server:
        streams = server.app.state.event_streams
        async with server.stream(tid) as frames:
            assert len(await frames.events(2)) == 2
            assert [await frames.comment() for _ in range(3)] == ["ping"] * 3
            assert streams.active == 1
        # the client went away: the server's generator is cancelled and its NATS subscription ends
        await q.wait_until(lambda: _none_open(streams))


async def _none_open(streams: Any) -> bool:
    return bool(streams.active == 0)


async def test_a_malformed_message_is_skipped(
    served: Server, nc: Client, event_store: JetStreamEventStore, projectors: Any, pool: Any, q: Any
) -> None:
    events = q.lifecycle(turns=1)
    tid = events[0].task_id
    await projectors.start()
    await _projected(event_store, projectors, pool, q, events[:3])
    async with asyncio.timeout(DEADLINE_S), served.stream(tid) as frames:
        await frames.events(3)
        subject = task_subject(tid, "milestone", event_store.prefix)
        ack = await nc.jetstream().publish(subject, b'{"not": "an event"', stream=event_store.stream)
        last = await event_store.last_stream_seq()
        await q.append_all(event_store, events[3:], expected=last)
        rest = await frames.rest()
    assert ack.seq not in {v["seq"] for v in rest}
    assert f"skipped malformed message #{ack.seq}" in frames.comments
    assert [v["seq"] for v in rest] == [v["seq"] for v in (await _views(event_store, tid))[3:]]


async def test_streams_beyond_the_limit_are_503(
    pool: Any, db_url: str, nc: Client, event_store: JetStreamEventStore, projectors: Any, q: Any
) -> None:
    events = q.lifecycle(turns=1)
    tid = events[0].task_id
    await projectors.start()
    await _projected(event_store, projectors, pool, q, events[:2])
    async with (
        asyncio.timeout(DEADLINE_S),
        _serve(pool, db_url, nc, event_store, sse_max_streams=1) as server,
        server.stream(tid) as frames,
    ):
        await frames.events(2)
        resp = await server.client.get(f"/v1/tasks/{tid}/events/stream", headers=ALICE)
        assert (resp.status_code, resp.json()["error"]["code"]) == (503, "SERVICE_UNAVAILABLE")
