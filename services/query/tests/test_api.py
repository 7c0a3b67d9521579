"""The read API over real PostgreSQL (projected from real NATS JetStream)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn

from bgagent_contracts.auth import TokenTable
from bgagent_contracts.views import event_view
from bgagent_eventstore import JetStreamEventStore
from bgagent_query.api import create_app
from bgagent_query.openapi_doc import openapi_document
from bgagent_query.watch import ProjectionWatch
from bgagent_testing.servers import free_port
from bgagent_web.openapi import documented_statuses

pytestmark = pytest.mark.integration

ALICE = {"Authorization": "Bearer tok-alice"}
BOB = {"Authorization": "Bearer tok-bob"}
ADMIN = {"Authorization": "Bearer tok-root"}


class Api:
    def __init__(self, client: httpx.AsyncClient, watch: ProjectionWatch) -> None:
        self.client = client
        self.watch = watch


@contextlib.asynccontextmanager
async def _serve(pool: Any, db_url: str, prefix: str) -> AsyncIterator[Api]:
    """The app under uvicorn on a real socket, in this event loop (the pool lives here)."""
    watch = ProjectionWatch(pool, db_url, poll_s=0.05)
    await watch.start()

    async def ready() -> bool:
        return True

    app = create_app(
        pool=pool,
        watch=watch,
        tokens=TokenTable.parse("tok-alice=alice,tok-bob=bob,tok-root=root:admin"),
        prefix=prefix,
        ready=ready,
        min_seq_wait_s=1.0,
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
            yield Api(client, watch)
    finally:
        server.should_exit = True
        await serving
        await watch.close()


@pytest.fixture
async def api(pool: Any, db_url: str) -> AsyncIterator[Api]:
    async with _serve(pool, db_url, "unused") as a:
        yield a


@pytest.fixture
async def app_for(pool: Any, db_url: str, event_store: JetStreamEventStore) -> AsyncIterator[Api]:
    """An API whose event subjects use this test's prefix."""
    async with _serve(pool, db_url, event_store.prefix) as a:
        yield a


async def _project(
    event_store: JetStreamEventStore, projectors: Any, pool: Any, q: Any, tasks: list[Any]
) -> int:
    await projectors.start()
    for events in tasks:
        await q.append_all(event_store, events)
    last = await event_store.last_stream_seq()
    await q.wait_until(lambda: _reached(pool, q, last))
    return last


async def _reached(pool: Any, q: Any, seq: int) -> bool:
    return bool(await q.checkpoint(pool) >= seq)


async def test_requests_without_a_known_token_are_401(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        resp = await api.client.get("/v1/tasks", headers=headers)
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "UNAUTHORIZED"


async def test_health_endpoints_need_no_token(api: Api) -> None:
    assert (await api.client.get("/healthz")).status_code == 200
    assert (await api.client.get("/readyz")).json() == {"status": "ready"}


async def test_users_see_their_own_tasks_admins_all_others_are_404(
    app_for: Api, event_store: JetStreamEventStore, projectors: Any, pool: Any, q: Any
) -> None:
    mine, theirs = q.lifecycle(user="alice"), q.lifecycle(user="bob")
    await _project(event_store, projectors, pool, q, [mine, theirs])
    client = app_for.client

    listed = (await client.get("/v1/tasks", headers=ALICE)).json()["data"]
    assert [t["task_id"] for t in listed] == [mine[0].task_id]
    everyone = (await client.get("/v1/tasks", headers=ADMIN)).json()["data"]
    assert {t["task_id"] for t in everyone} == {mine[0].task_id, theirs[0].task_id}

    own = await client.get(f"/v1/tasks/{mine[0].task_id}", headers=ALICE)
    assert own.status_code == 200
    assert own.json()["data"]["status"] == "COMPLETED"
    for path in (f"/v1/tasks/{theirs[0].task_id}", f"/v1/tasks/{theirs[0].task_id}/events"):
        resp = await client.get(path, headers=ALICE)
        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "NOT_FOUND"
    assert (await client.get(f"/v1/tasks/{theirs[0].task_id}", headers=ADMIN)).status_code == 200


async def test_task_list_pages_newest_first_with_filters(
    app_for: Api, event_store: JetStreamEventStore, projectors: Any, pool: Any, q: Any
) -> None:
    tasks = [q.lifecycle(user="alice", repo="acme/app" if i % 2 else "acme/lib") for i in range(5)]
    tasks.append(q.lifecycle(user="alice")[:1])  # still SUBMITTED
    await _project(event_store, projectors, pool, q, tasks)
    client = app_for.client
    newest_first = sorted((t[0].task_id for t in tasks), reverse=True)

    seen: list[str] = []
    before: str | None = None
    pages = 0
    while True:
        params = {"limit": "2", **({"before": before} if before else {})}
        body = (await client.get("/v1/tasks", params=params, headers=ALICE)).json()
        seen += [t["task_id"] for t in body["data"]]
        pages += 1
        if not body["pagination"]["has_more"]:
            assert body["pagination"]["next_before"] is None
            break
        before = body["pagination"]["next_before"]
        assert before == seen[-1]
    assert seen == newest_first
    assert pages == 3

    submitted = (await client.get("/v1/tasks", params={"status": "submitted"}, headers=ALICE)).json()["data"]
    assert [t["task_id"] for t in submitted] == [tasks[-1][0].task_id]
    assert submitted[0]["queue_position"] == 1
    lib = (await client.get("/v1/tasks", params={"repo": "acme/lib"}, headers=ALICE)).json()["data"]
    assert len(lib) == 3
    assert {t["repo"] for t in lib} == {"acme/lib"}


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/tasks", {"limit": "abc"}, "limit"),
        ("/v1/tasks", {"limit": "0"}, "limit"),
        ("/v1/tasks", {"limit": "100000"}, "limit"),
        ("/v1/tasks", {"status": "DONE"}, "status"),
        ("/v1/tasks", {"before": "not-an-id"}, "before"),
        ("/v1/tasks/not-a-task", {}, "task_id"),
        ("/v1/tasks/01J0000000000000000000000Z/events", {"after": "-1"}, "after"),
        ("/v1/tasks/01J0000000000000000000000Z/events", {"limit": "1001"}, "limit"),
        ("/v1/tasks/01J0000000000000000000000Z", {"min_seq": "x"}, "min_seq"),
    ],
)
async def test_bad_parameters_are_400_naming_the_field(
    api: Api, path: str, params: dict[str, str], field: str
) -> None:
    resp = await api.client.get(path, params=params, headers=ALICE)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["message"].startswith(f"{field}:")


async def test_unknown_task_is_404(api: Api) -> None:
    resp = await api.client.get("/v1/tasks/01J0000000000000000000000Z", headers=ALICE)
    assert resp.status_code == 404


async def test_events_match_the_stream_and_page_by_after_and_limit(
    app_for: Api, event_store: JetStreamEventStore, projectors: Any, pool: Any, q: Any
) -> None:
    events = q.lifecycle(turns=3)
    await _project(event_store, projectors, pool, q, [events, q.lifecycle(user="bob")])
    tid = events[0].task_id
    # as JSON carries them (tuple fields such as initial_approvals arrive as lists)
    from_stream = json.loads(json.dumps([event_view(r) for r in (await event_store.read(tid)).records]))

    got: list[dict[str, Any]] = []
    after = 0
    while True:
        resp = await app_for.client.get(
            f"/v1/tasks/{tid}/events", params={"after": str(after), "limit": "4"}, headers=ALICE
        )
        body = resp.json()
        assert len(body["data"]) <= 4
        got += body["data"]
        if not body["pagination"]["has_more"]:
            break
        after = body["pagination"]["next_after"]
        assert after == got[-1]["seq"]
    assert got == from_stream  # same seq and same content, event by event
    tail = (
        await app_for.client.get(
            f"/v1/tasks/{tid}/events", params={"after": str(from_stream[-1]["seq"])}, headers=ALICE
        )
    ).json()
    assert tail == {"data": [], "pagination": {"next_after": None, "has_more": False}}


async def test_min_seq_waits_until_the_projection_reaches_it(
    app_for: Api, event_store: JetStreamEventStore, projectors: Any, pool: Any, q: Any
) -> None:
    events = q.lifecycle(turns=1)
    seqs = await q.append_all(event_store, events)  # projector not running yet
    tid = events[0].task_id
    request = asyncio.create_task(
        app_for.client.get(f"/v1/tasks/{tid}", params={"min_seq": str(seqs[-1])}, headers=ALICE)
    )
    await q.wait_until(lambda: _waiting(app_for))
    assert not request.done()
    await projectors.start()
    resp = await request
    assert resp.status_code == 200
    assert resp.json()["data"]["last_seq"] == seqs[-1]
    assert resp.json()["data"]["status"] == "COMPLETED"


async def _waiting(api: Api) -> bool:
    return api.watch.waiting > 0


async def test_min_seq_beyond_the_projection_is_503_after_the_bound(api: Api) -> None:
    resp = await api.client.get(
        "/v1/tasks/01J0000000000000000000000Z", params={"min_seq": "999999"}, headers=ALICE
    )
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "PROJECTION_LAG"


# --- hostile input: always a 4xx, never a 5xx, and always as documented -------------------------------

TASK_PATH = "/v1/tasks/01J0000000000000000000000Z"
EVENTS_PATH = TASK_PATH + "/events"


def _documented(resp: httpx.Response, method: str, template: str) -> None:
    """The status is one the document gives for the route, and the body fits its schema."""
    doc = openapi_document()
    assert resp.status_code in documented_statuses(doc, method, template), (resp.status_code, resp.text)
    schemathesis.openapi.from_dict(doc)[template][method].validate_response(resp)


@pytest.mark.parametrize(
    ("url", "template", "field"),
    [
        ("/v1/tasks?repo=%00", "/v1/tasks", "repo"),
        ("/v1/tasks?repo=acme%2Fapp%1B%5B31m", "/v1/tasks", "repo"),
        ("/v1/tasks?repo=" + "a" * 1025, "/v1/tasks", "repo"),
        ("/v1/tasks?status=" + ",".join(["RUNNING"] * 10), "/v1/tasks", "status"),
        ("/v1/tasks?status=%ff", "/v1/tasks", "status"),
        ("/v1/tasks?limit=" + "9" * 5000, "/v1/tasks", "limit"),
        ("/v1/tasks?before=" + "Z" * 5000, "/v1/tasks", "before"),
        (f"{EVENTS_PATH}?after=9223372036854775808", "/v1/tasks/{task_id}/events", "after"),
        (f"{EVENTS_PATH}?after=-1", "/v1/tasks/{task_id}/events", "after"),
        (f"{EVENTS_PATH}?limit=%ff", "/v1/tasks/{task_id}/events", "limit"),
        (f"{EVENTS_PATH}?min_seq=9223372036854775808", "/v1/tasks/{task_id}/events", "min_seq"),
        (f"{TASK_PATH}?min_seq=1e3", "/v1/tasks/{task_id}", "min_seq"),
        ("/v1/tasks/%ff", "/v1/tasks/{task_id}", "task_id"),
        ("/v1/tasks/%00%00", "/v1/tasks/{task_id}", "task_id"),
        ("/v1/tasks/" + "A" * 8000, "/v1/tasks/{task_id}", "task_id"),
        ("/v1/tasks/" + "A" * 8000 + "/events", "/v1/tasks/{task_id}/events", "task_id"),
    ],
)
async def test_hostile_parameters_are_400_naming_the_parameter(
    api: Api, url: str, template: str, field: str
) -> None:
    resp = await api.client.get(url, headers=ALICE)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["message"].startswith(f"{field}:")
    _documented(resp, "GET", template)


async def test_cursors_up_to_the_bigint_limit_are_answered(
    app_for: Api, event_store: JetStreamEventStore, projectors: Any, pool: Any, q: Any
) -> None:
    events = q.lifecycle(turns=1)
    await _project(event_store, projectors, pool, q, [events])
    tid = events[0].task_id
    resp = await app_for.client.get(
        f"/v1/tasks/{tid.lower()}/events", params={"after": str(2**63 - 1)}, headers=ALICE
    )
    assert resp.json() == {"data": [], "pagination": {"next_after": None, "has_more": False}}
    _documented(resp, "GET", "/v1/tasks/{task_id}/events")
    listed = await app_for.client.get("/v1/tasks?repo=%ff&status=completed,%20running", headers=ALICE)
    assert (listed.status_code, listed.json()["data"]) == (200, [])
    _documented(listed, "GET", "/v1/tasks")
    own = await app_for.client.get(f"/v1/tasks/{tid.lower()}", headers=ALICE)
    assert own.json()["data"]["task_id"] == tid  # lower case accepted, as admission does
    _documented(own, "GET", "/v1/tasks/{task_id}")


async def test_odd_authorization_bytes_are_401(api: Api) -> None:
    for value in (
        b"Bearer \xff\xfe",
        b"\xc3\x28",
        b"Bearer tok-alice\x80",
        b"Bearer " + b"\xe2" * 3000,
    ):
        resp = await api.client.get("/v1/tasks", headers={"Authorization": value})
        assert resp.status_code == 401, value
        _documented(resp, "GET", "/v1/tasks")


async def test_oversized_headers_are_431_over_a_real_socket(api: Api) -> None:
    one = await api.client.get("/v1/tasks", headers={**ALICE, "X-Big": "b" * 5000})
    assert one.status_code == 431
    assert one.json()["error"]["code"] == "HEADERS_TOO_LARGE"
    _documented(one, "GET", "/v1/tasks")
    many = await api.client.get(TASK_PATH, headers={**ALICE, **{f"X-Pad-{i}": "p" * 3000 for i in range(4)}})
    assert many.status_code == 431
    _documented(many, "GET", "/v1/tasks/{task_id}")
    # Far past the app's limits uvicorn (h11) refuses the head itself, before the app runs: a plain 400.
    padding = {f"X-P{i}": "p" * 1000 for i in range(200)}
    huge = await api.client.get("/v1/tasks", headers={**ALICE, **padding})
    assert huge.status_code == 400
    assert huge.text == "Invalid HTTP request received."


async def test_the_served_document_is_the_query_api(api: Api) -> None:
    resp = await api.client.get("/schema/openapi.json")
    doc = resp.json()
    assert doc == openapi_document()
    assert doc["info"]["title"] == "bgagent query"
    assert resp.headers["X-Request-Id"]
