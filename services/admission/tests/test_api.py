"""The admission HTTP API over real NATS JetStream: create, idempotency, validation, auth, cancel, nudge."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client
from ulid import ULID

from bgagent_admission.handlers import Admission
from bgagent_admission.idempotency import MemoryIdempotencyStore
from bgagent_contracts import (
    Actor,
    CancelRequested,
    Event,
    NudgeRequested,
    TaskCancelled,
    TaskFailed,
    TaskStarted,
    TaskSubmitted,
    TaskType,
    decode_event,
)
from bgagent_contracts.auth import Principal
from bgagent_contracts.subjects import task_subject
from bgagent_eventstore import JetStreamEventStore, NatsSettings, TaskLog

pytestmark = pytest.mark.integration

ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}
ROOT = {"Authorization": "Bearer root-token"}
Count = Callable[[], Awaitable[int]]


def _err(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "request_id"}, body
    return dict(body["error"])


async def _submit(client: httpx.AsyncClient, headers: dict[str, str] = ALICE, **body: Any) -> dict[str, Any]:
    payload = {"repo": "acme/widgets", "description": "fix the flaky test", **body}
    resp = await client.post("/v1/tasks", json=payload, headers=headers)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def _start(store: JetStreamEventStore, task_id: str) -> int:
    """Append task_started as the runner would."""
    log = await store.read(task_id)
    started = TaskStarted(
        task_id=task_id,
        event_id=str(ULID()),
        ts=datetime.now(UTC),
        actor=Actor.RUNNER,
        attempt=1,
        runner_id="r1",
    )
    (seq,) = await store.append(task_id, [started], expected_seq=log.last_seq)
    return seq


async def _fail(store: JetStreamEventStore, task_id: str) -> None:
    """Append task_failed as the runner would (any live state → FAILED)."""
    log = await store.read(task_id)
    failed = TaskFailed(
        task_id=task_id,
        event_id=str(ULID()),
        ts=datetime.now(UTC),
        actor=Actor.RUNNER,
        attempt=1,
        code="SETUP_FAILED",
        message="clone failed",
    )
    await store.append(task_id, [failed], expected_seq=log.last_seq)


# --- create -------------------------------------------------------------------


async def test_create_returns_201_and_appends_task_submitted(
    client: httpx.AsyncClient, nc: Client, provisioned: NatsSettings, stream_count: Count
) -> None:
    body = await _submit(
        client,
        repo="acme/widgets",
        issue_number=42,
        description="  fix the flaky test  ",
        max_turns=20,
        max_budget_usd=2.5,
        trace=True,
    )
    data, meta = body["data"], body["meta"]
    task_id = data["task_id"]
    assert len(task_id) == 26
    assert data["status"] == "SUBMITTED"
    assert data["user_id"] == "alice"
    assert data["description"] == "fix the flaky test"
    assert data["last_seq"] == meta["seq"]
    assert await stream_count() == 1

    msg = await nc.jetstream().get_msg(provisioned.stream, seq=meta["seq"])
    assert msg.subject == task_subject(task_id, "task_submitted", provisioned.prefix)
    assert msg.data is not None
    event = decode_event(msg.data)
    assert isinstance(event, TaskSubmitted)
    assert (event.task_id, event.user_id, event.repo, event.actor) == (
        task_id,
        "alice",
        "acme/widgets",
        "admission",
    )
    assert (event.issue_number, event.max_turns, event.max_budget_usd, event.trace) == (42, 20, 2.5, True)
    assert event.task_type is TaskType.NEW_TASK
    assert event.description == "fix the flaky test"
    assert event.channel == "api"
    assert event.idempotency_key is None


async def test_create_pr_review_with_defaults(
    client: httpx.AsyncClient, event_store: JetStreamEventStore
) -> None:
    body = await _submit(client, task_type="pr_review", pr_number=7, description=None)
    state = (await event_store.read(body["data"]["task_id"])).state()
    assert state is not None
    assert (state.task_type, state.pr_number, state.max_turns, state.max_budget_usd, state.trace) == (
        TaskType.PR_REVIEW,
        7,
        100,
        None,
        False,
    )


async def test_local_repo_accepted_under_a_configured_root(
    local_client: httpx.AsyncClient, stream_count: Count, repo_root: Path
) -> None:
    demo = repo_root.resolve() / "demo"
    for repo in (str(demo), f"file://{demo}"):
        body = await _submit(local_client, repo=repo)
        assert body["data"]["repo"] == repo
    assert await stream_count() == 2


# --- idempotency ----------------------------------------------------------------


async def test_same_idempotency_key_returns_the_same_task(
    client: httpx.AsyncClient, stream_count: Count
) -> None:
    payload = {"repo": "acme/widgets", "issue_number": 3}
    headers = {**ALICE, "Idempotency-Key": "submit-3"}
    first = await client.post("/v1/tasks", json=payload, headers=headers)
    second = await client.post("/v1/tasks", json=payload, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["data"]["task_id"] == second.json()["data"]["task_id"]
    assert first.json()["meta"]["seq"] == second.json()["meta"]["seq"]
    assert await stream_count() == 1


async def test_concurrent_requests_with_one_key_create_one_task(
    client: httpx.AsyncClient, stream_count: Count
) -> None:
    payload = {"repo": "acme/widgets", "description": "race me"}
    headers = {**ALICE, "Idempotency-Key": "double-click"}
    responses = await asyncio.gather(
        *(client.post("/v1/tasks", json=payload, headers=headers) for _ in range(6))
    )
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 200, 201]
    assert len({r.json()["data"]["task_id"] for r in responses}) == 1
    assert await stream_count() == 1


async def test_same_key_with_a_different_body_is_409(client: httpx.AsyncClient, stream_count: Count) -> None:
    headers = {**ALICE, "Idempotency-Key": "k1"}
    first = await client.post("/v1/tasks", json={"repo": "acme/widgets", "issue_number": 1}, headers=headers)
    assert first.status_code == 201
    other = await client.post("/v1/tasks", json={"repo": "acme/widgets", "issue_number": 2}, headers=headers)
    assert other.status_code == 409
    assert _err(other)["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert await stream_count() == 1


async def test_idempotency_keys_are_per_user(client: httpx.AsyncClient, stream_count: Count) -> None:
    payload = {"repo": "acme/widgets", "issue_number": 1}
    a = await client.post("/v1/tasks", json=payload, headers={**ALICE, "Idempotency-Key": "same"})
    b = await client.post("/v1/tasks", json=payload, headers={**BOB, "Idempotency-Key": "same"})
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["data"]["task_id"] != b.json()["data"]["task_id"]
    assert await stream_count() == 2


# --- validation: 400 naming the field, nothing appended ---------------------------

_OK = {"repo": "acme/widgets", "description": "do it"}
_LONG = "x" * 2001

INVALID_BODIES: list[tuple[str, Any, str]] = [
    ("missing repo", {"description": "x"}, "repo"),
    ("empty repo", {**_OK, "repo": "  "}, "repo"),
    ("repo not owner/name", {**_OK, "repo": "widgets"}, "repo"),
    ("repo with spaces", {**_OK, "repo": "acme/my widgets"}, "repo"),
    ("repo dot-dot", {**_OK, "repo": "../.."}, "repo"),
    ("repo url", {**_OK, "repo": "https://github.com/acme/widgets"}, "repo"),
    ("local repo disabled", {**_OK, "repo": "/srv/repos/demo"}, "repo"),
    ("local file url disabled", {**_OK, "repo": "file:///srv/repos/demo"}, "repo"),
    ("repo not a string", {**_OK, "repo": 5}, "repo"),
    ("unknown task type", {**_OK, "task_type": "refactor"}, "task_type"),
    ("issue_number zero", {**_OK, "issue_number": 0}, "issue_number"),
    ("issue_number string", {**_OK, "issue_number": "4"}, "issue_number"),
    ("issue_number float", {**_OK, "issue_number": 4.5}, "issue_number"),
    ("issue_number huge", {**_OK, "issue_number": 2**40}, "issue_number"),
    ("pr_number negative", {**_OK, "task_type": "pr_iteration", "pr_number": -1}, "pr_number"),
    ("pr_number with new_task", {**_OK, "pr_number": 3}, "pr_number"),
    ("pr_iteration without pr", {**_OK, "task_type": "pr_iteration"}, "pr_number"),
    ("pr_review without pr", {**_OK, "task_type": "pr_review"}, "pr_number"),
    ("new_task without issue or description", {"repo": "acme/widgets"}, "description"),
    ("blank description only", {"repo": "acme/widgets", "description": "   "}, "description"),
    ("description too long", {**_OK, "description": _LONG}, "description"),
    ("max_turns zero", {**_OK, "max_turns": 0}, "max_turns"),
    ("max_turns too many", {**_OK, "max_turns": 501}, "max_turns"),
    ("max_turns bool", {**_OK, "max_turns": True}, "max_turns"),
    ("budget too small", {**_OK, "max_budget_usd": 0.001}, "max_budget_usd"),
    ("budget too big", {**_OK, "max_budget_usd": 100.01}, "max_budget_usd"),
    ("budget string", {**_OK, "max_budget_usd": "5"}, "max_budget_usd"),
    ("trace not strict bool", {**_OK, "trace": "yes"}, "trace"),
    ("trace as int", {**_OK, "trace": 1}, "trace"),
    ("unknown field", {**_OK, "max_turn": 5}, "max_turn"),
    ("two unknown fields", {**_OK, "zeta": 1, "alpha": 2}, "alpha, zeta"),
    ("not an object", ["acme/widgets"], "body"),
]


@pytest.mark.parametrize(("case", "payload", "field"), INVALID_BODIES, ids=[c[0] for c in INVALID_BODIES])
async def test_invalid_submission_is_400_naming_the_field(
    client: httpx.AsyncClient, stream_count: Count, case: str, payload: Any, field: str
) -> None:
    resp = await client.post("/v1/tasks", json=payload, headers=ALICE)
    assert resp.status_code == 400, resp.text
    error = _err(resp)
    assert error["code"] == "VALIDATION_ERROR"
    assert error["message"].startswith(f"{field}: "), error["message"]
    assert await stream_count() == 0


async def test_limits_are_inclusive(client: httpx.AsyncClient, stream_count: Count) -> None:
    await _submit(client, max_turns=1, max_budget_usd=0.01, description="d" * 2000)
    await _submit(client, max_turns=500, max_budget_usd=100, issue_number=2_147_483_647)
    assert await stream_count() == 2


@pytest.mark.parametrize("raw", [b'{"repo": "acme/widgets",', b"", b"not json", b'{"repo": NaN}'])
async def test_malformed_json_is_400(client: httpx.AsyncClient, stream_count: Count, raw: bytes) -> None:
    resp = await client.post("/v1/tasks", content=raw, headers={**ALICE, "Content-Type": "application/json"})
    assert resp.status_code == 400
    error = _err(resp)
    assert error["code"] == "VALIDATION_ERROR"
    assert error["message"].startswith("body: ")
    assert await stream_count() == 0


@pytest.mark.parametrize("key", [b"", b"has space", b"a" * 129, "ключ".encode(), b"a/b", b"k\xff"])
async def test_bad_idempotency_key_is_400(client: httpx.AsyncClient, stream_count: Count, key: bytes) -> None:
    headers = [(b"Authorization", b"Bearer alice-token"), (b"Idempotency-Key", key)]
    resp = await client.post("/v1/tasks", json=_OK, headers=headers)
    assert resp.status_code == 400
    assert _err(resp)["message"].startswith("Idempotency-Key: ")
    assert await stream_count() == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_wrong_content_type_is_415(
    client: httpx.AsyncClient, stream_count: Count, content_type: str | None
) -> None:
    headers = dict(ALICE)
    if content_type:
        headers["Content-Type"] = content_type
    resp = await client.post(
        "/v1/tasks", content=b'{"repo": "acme/widgets", "issue_number": 1}', headers=headers
    )
    assert resp.status_code == 415
    assert _err(resp)["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert await stream_count() == 0


async def test_oversized_body_is_413(client: httpx.AsyncClient, stream_count: Count) -> None:
    resp = await client.post("/v1/tasks", json={**_OK, "description": "x" * 100_000}, headers=ALICE)
    assert resp.status_code == 413
    assert _err(resp)["code"] == "PAYLOAD_TOO_LARGE"
    assert await stream_count() == 0


# --- auth -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": "alice-token"}, {"Authorization": "Basic YTpi"}],
)
async def test_missing_or_unknown_token_is_401(
    client: httpx.AsyncClient, stream_count: Count, headers: dict[str, str]
) -> None:
    resp = await client.post("/v1/tasks", json=_OK, headers=headers)
    assert resp.status_code == 401
    assert _err(resp)["code"] == "UNAUTHORIZED"
    for path in (f"/v1/tasks/{ULID()}/cancel", f"/v1/tasks/{ULID()}/nudges"):
        resp = await client.post(path, json={"message": "hi"}, headers=headers)
        assert resp.status_code == 401
    assert await stream_count() == 0


async def test_other_users_task_is_404_but_admin_may_act(
    client: httpx.AsyncClient, stream_count: Count
) -> None:
    task_id = (await _submit(client))["data"]["task_id"]
    cancel = await client.post(f"/v1/tasks/{task_id}/cancel", headers=BOB)
    nudge = await client.post(f"/v1/tasks/{task_id}/nudges", json={"message": "hi"}, headers=BOB)
    assert (cancel.status_code, nudge.status_code) == (404, 404)
    assert _err(cancel)["code"] == _err(nudge)["code"] == "NOT_FOUND"
    assert await stream_count() == 1
    admin = await client.post(f"/v1/tasks/{task_id}/cancel", headers=ROOT)
    assert admin.status_code == 202
    assert admin.json()["data"]["status"] == "CANCELLED"


@pytest.mark.parametrize("task_id", [str(ULID()), "not-a-ulid", "*", "%3E"])
async def test_unknown_task_is_404(client: httpx.AsyncClient, stream_count: Count, task_id: str) -> None:
    await _submit(client)
    cancel = await client.post(f"/v1/tasks/{task_id}/cancel", headers=ALICE)
    nudge = await client.post(f"/v1/tasks/{task_id}/nudges", json={"message": "hi"}, headers=ALICE)
    assert (cancel.status_code, nudge.status_code) == (404, 404)
    assert await stream_count() == 1


# --- cancel -----------------------------------------------------------------------


async def test_cancel_queued_task_cancels_it_at_once(
    client: httpx.AsyncClient, event_store: JetStreamEventStore
) -> None:
    task_id = (await _submit(client))["data"]["task_id"]
    resp = await client.post(f"/v1/tasks/{task_id}/cancel", json={"reason": "wrong repo"}, headers=ALICE)
    assert resp.status_code == 202
    body = resp.json()
    assert body["data"]["status"] == "CANCELLED"
    log = await event_store.read(task_id)
    last = log.records[-1]
    assert isinstance(last.event, TaskCancelled)
    assert (last.event.cancelled_by, last.event.reason, last.event.attempt) == ("alice", "wrong repo", None)
    assert body["meta"]["seq"] == last.seq


async def test_cancel_started_task_requests_cancel_once(
    client: httpx.AsyncClient, event_store: JetStreamEventStore, stream_count: Count
) -> None:
    task_id = (await _submit(client))["data"]["task_id"]
    await _start(event_store, task_id)
    first = await client.post(f"/v1/tasks/{task_id}/cancel", headers=ALICE)
    assert first.status_code == 202
    assert first.json()["data"]["status"] == "HYDRATING"
    assert first.json()["data"]["cancel_requested"] is True
    log = await event_store.read(task_id)
    assert isinstance(log.records[-1].event, CancelRequested)
    assert first.json()["meta"]["seq"] == log.records[-1].seq
    assert await stream_count() == 3

    again = await client.post(f"/v1/tasks/{task_id}/cancel", headers=ALICE)
    assert again.status_code == 202
    assert again.json()["meta"]["seq"] == log.records[-1].seq
    assert await stream_count() == 3


async def test_cancel_terminal_task_is_409(
    client: httpx.AsyncClient, event_store: JetStreamEventStore, stream_count: Count
) -> None:
    task_id = (await _submit(client))["data"]["task_id"]
    assert (await client.post(f"/v1/tasks/{task_id}/cancel", headers=ALICE)).status_code == 202
    resp = await client.post(f"/v1/tasks/{task_id}/cancel", headers=ALICE)
    assert resp.status_code == 409
    assert _err(resp)["code"] == "TASK_ALREADY_TERMINAL"
    assert await stream_count() == 2


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"reason": 5}, "reason"), ({"reason": "r" * 2001}, "reason"), ({"why": "x"}, "why")],
)
async def test_invalid_cancel_body_is_400(
    client: httpx.AsyncClient, stream_count: Count, payload: dict[str, Any], field: str
) -> None:
    task_id = (await _submit(client))["data"]["task_id"]
    resp = await client.post(f"/v1/tasks/{task_id}/cancel", json=payload, headers=ALICE)
    assert resp.status_code == 400
    assert _err(resp)["message"].startswith(f"{field}: ")
    assert await stream_count() == 1


# --- nudge ------------------------------------------------------------------------


async def test_nudge_appends_nudge_requested(
    client: httpx.AsyncClient, event_store: JetStreamEventStore, provisioned: NatsSettings
) -> None:
    task_id = (await _submit(client))["data"]["task_id"]
    await _start(event_store, task_id)
    resp = await client.post(
        f"/v1/tasks/{task_id}/nudges", json={"message": "  use pytest -x  "}, headers=ALICE
    )
    assert resp.status_code == 202
    data, meta = resp.json()["data"], resp.json()["meta"]
    assert set(data) == {"task_id", "nudge_id", "submitted_at"}
    assert data["task_id"] == task_id
    log = await event_store.read(task_id)
    last = log.records[-1]
    assert isinstance(last.event, NudgeRequested)
    assert last.subject == task_subject(task_id, "nudge_requested", provisioned.prefix)
    assert (last.event.nudge_id, last.event.message, last.event.requested_by) == (
        data["nudge_id"],
        "use pytest -x",
        "alice",
    )
    assert meta["seq"] == last.seq
    state = log.state()
    assert state is not None
    assert len(state.pending_nudges) == 1


async def test_nudge_terminal_task_is_409(
    client: httpx.AsyncClient, event_store: JetStreamEventStore, stream_count: Count
) -> None:
    task_id = (await _submit(client))["data"]["task_id"]
    await _start(event_store, task_id)
    await _fail(event_store, task_id)
    resp = await client.post(f"/v1/tasks/{task_id}/nudges", json={"message": "too late"}, headers=ALICE)
    assert resp.status_code == 409
    assert _err(resp)["code"] == "TASK_ALREADY_TERMINAL"
    assert await stream_count() == 3


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "message"),
        ({"message": "   "}, "message"),
        ({"message": "m" * 2001}, "message"),
        ({"text": "x"}, "text"),
    ],
)
async def test_invalid_nudge_is_400(
    client: httpx.AsyncClient, stream_count: Count, payload: dict[str, Any], field: str
) -> None:
    task_id = (await _submit(client))["data"]["task_id"]
    resp = await client.post(f"/v1/tasks/{task_id}/nudges", json=payload, headers=ALICE)
    assert resp.status_code == 400
    assert _err(resp)["message"].startswith(f"{field}: ")
    assert await stream_count() == 1


# --- a real race: the runner appends between admission's read and its append -------


class RunnerRacesFirst:
    """The JetStream store, with a runner's task_started landing just before admission's first append."""

    def __init__(self, inner: JetStreamEventStore) -> None:
        self._inner = inner
        self.raced = 0

    async def read(self, task_id: str, *, after_seq: int = 0) -> TaskLog:
        return await self._inner.read(task_id, after_seq=after_seq)

    async def append(self, task_id: str, events: Sequence[Event], *, expected_seq: int) -> list[int]:
        if self.raced == 0:
            self.raced += 1
            await _start(self._inner, task_id)
        return await self._inner.append(task_id, events, expected_seq=expected_seq)


async def test_cancel_redecides_after_a_runner_started_the_task(
    client: httpx.AsyncClient, event_store: JetStreamEventStore, provisioned: NatsSettings
) -> None:
    task_id = (await _submit(client))["data"]["task_id"]
    racing = RunnerRacesFirst(event_store)
    admission = Admission(racing, MemoryIdempotencyStore(), prefix=provisioned.prefix)
    result = await admission.cancel(Principal(user_id="alice"), task_id, None)
    assert racing.raced == 1
    # It read SUBMITTED (→ cancel at once), lost to task_started, re-read, and requested a cancel instead.
    assert isinstance(result.event, CancelRequested)
    log = await event_store.read(task_id)
    assert [type(r.event) for r in log.records] == [TaskSubmitted, TaskStarted, CancelRequested]
    assert result.seq == log.last_seq


# --- health -------------------------------------------------------------------------


async def test_health_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


async def test_unknown_route_uses_the_envelope(client: httpx.AsyncClient) -> None:
    resp = await client.get("/v1/nothing", headers=ALICE)
    assert resp.status_code == 404
    assert _err(resp)["code"] == "NOT_FOUND"


async def test_request_id_is_echoed_on_success_and_error(client: httpx.AsyncClient) -> None:
    ok = await client.post("/v1/tasks", json=_OK, headers={**ALICE, "X-Request-Id": "req-1"})
    bad = await client.post("/v1/tasks", json={}, headers={**ALICE, "X-Request-Id": "req-2"})
    assert ok.headers["X-Request-Id"] == "req-1"
    assert (bad.headers["X-Request-Id"], _err(bad)["request_id"]) == ("req-2", "req-2")


# --- the OpenAPI document, and hostile input answered as documented ------------------------------------


def _documented(resp: httpx.Response, template: str) -> None:
    """The status is one the served document gives for ``POST template``; the body fits its schema."""
    import schemathesis

    from bgagent_admission.openapi_doc import openapi_document
    from bgagent_web.openapi import documented_statuses

    doc = openapi_document(local_repos=False, max_body_bytes=64 * 1024)
    assert resp.status_code in documented_statuses(doc, "POST", template), (resp.status_code, resp.text)
    schemathesis.openapi.from_dict(doc)[template]["POST"].validate_response(resp)


async def test_the_served_document_is_the_admission_api(client: httpx.AsyncClient) -> None:
    from bgagent_admission.openapi_doc import openapi_document

    resp = await client.get("/schema/openapi.json")
    assert resp.status_code == 200
    assert resp.json() == openapi_document(local_repos=False, max_body_bytes=64 * 1024)
    assert resp.json()["info"]["title"] == "bgagent admission"


async def test_successes_are_as_documented(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/tasks", json=_OK, headers={**ALICE, "Idempotency-Key": "doc-1"})
    _documented(created, "/v1/tasks")
    again = await client.post("/v1/tasks", json=_OK, headers={**ALICE, "Idempotency-Key": "doc-1"})
    assert again.status_code == 200
    _documented(again, "/v1/tasks")
    task_id = created.json()["data"]["task_id"]
    nudged = await client.post(f"/v1/tasks/{task_id}/nudges", json={"message": "hi"}, headers=ALICE)
    _documented(nudged, "/v1/tasks/{task_id}/nudges")
    cancelled = await client.post(f"/v1/tasks/{task_id.lower()}/cancel", headers=ALICE)
    assert cancelled.status_code == 202
    _documented(cancelled, "/v1/tasks/{task_id}/cancel")
    terminal = await client.post(f"/v1/tasks/{task_id}/nudges", json={"message": "hi"}, headers=ALICE)
    assert (terminal.status_code, _err(terminal)["code"]) == (409, "TASK_ALREADY_TERMINAL")
    _documented(terminal, "/v1/tasks/{task_id}/nudges")


_LONG_ID = "A" * 8000


@pytest.mark.parametrize(
    ("path", "content", "headers", "status", "code"),
    [
        ("/v1/tasks", b'{"repo": "acme/w", "description": "x"}', {"Content-Type": "text/plain"}, 415, None),
        ("/v1/tasks", b"[" * 100_000 + b"]" * 100_000, {}, 413, None),
        ("/v1/tasks", b"[" * 5000 + b"]" * 5000, {}, 400, "body: "),
        ("/v1/tasks", b'{"repo": "acme/w\\u0000", "description": "x"}', {}, 400, "repo: "),
        ("/v1/tasks", b'{"repo": "acme/w", "description": "\\u0000"}', {}, 400, "description: "),
        ("/v1/tasks", b'{"repo": "acme/w", "issue_number": 1e999}', {}, 400, "issue_number: "),
        (
            "/v1/tasks",
            b'{"repo": "acme/w", "issue_number": 99999999999999999999999}',
            {},
            400,
            "issue_number: ",
        ),
        ("/v1/tasks", b'{"repo": "acme/w", "max_budget_usd": 1e999}', {}, 400, "max_budget_usd: "),
        ("/v1/tasks", b'{"repo": "acme/w", "description": "x"}', {"Idempotency-Key": "k" * 129}, 400, None),
        ("/v1/tasks", b'{"repo": "\xff\xfe"}', {}, 400, "body: "),
        ("/v1/tasks", b'{"repo": "acme/w"}', {"X-Big": "b" * 5000}, 431, None),
        (f"/v1/tasks/{_LONG_ID}/cancel", b"", {}, 404, None),
        (f"/v1/tasks/{_LONG_ID}/nudges", b'{"message": "hi"}', {}, 404, None),
        ("/v1/tasks/%ff%00/nudges", b'{"message": "hi"}', {}, 404, None),
        (
            "/v1/tasks/01J0000000000000000000000Z/nudges",
            b'{"message": "' + b"m" * 2001 + b'"}',
            {},
            400,
            None,
        ),
    ],
)
async def test_hostile_requests_get_a_documented_4xx_and_append_nothing(
    client: httpx.AsyncClient,
    stream_count: Count,
    path: str,
    content: bytes,
    headers: dict[str, str],
    status: int,
    code: str | None,
) -> None:
    sent = {**ALICE, "Content-Type": "application/json", **headers}
    resp = await client.post(path, content=content, headers=sent)
    assert resp.status_code == status, resp.text
    if code is not None:
        assert _err(resp)["message"].startswith(code)
    template = "/v1/tasks" if path == "/v1/tasks" else "/v1/tasks/{task_id}/" + path.rsplit("/", 1)[1]
    _documented(resp, template)
    assert await stream_count() == 0


async def test_odd_authorization_bytes_are_401(client: httpx.AsyncClient, stream_count: Count) -> None:
    for value in (b"Bearer \xff\xfe", b"\xc3\x28", b"Bearer alice-token\x80", b"Bearer " + b"\xe2" * 3000):
        resp = await client.post("/v1/tasks", json=_OK, headers={"Authorization": value})
        assert resp.status_code == 401, value
        _documented(resp, "/v1/tasks")
    assert await stream_count() == 0
