"""Approvals over real NATS JetStream: pre-approval at submit, deciding a gate, every 4xx, the race."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from nats.aio.client import Client
from ulid import ULID

from bgagent_admission.api import create_app, hard_deny_rules_from_env
from bgagent_admission.handlers import Admission
from bgagent_admission.ratelimit import SlidingWindow
from bgagent_contracts import (
    Actor,
    ApprovalDecided,
    ApprovalExpired,
    ApprovalRequested,
    CancelRequested,
    Event,
    TaskStarted,
    TaskSubmitted,
    WorkspaceReady,
    decode_event,
)
from bgagent_contracts.auth import TokenTable
from bgagent_eventstore import JetStreamEventStore, TaskLog

from .conftest import TOKENS

pytestmark = pytest.mark.integration

ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}
ROOT = {"Authorization": "Bearer root-token"}
Count = Callable[[], Awaitable[int]]


def _err(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


def _documented(resp: httpx.Response, template: str) -> None:
    import schemathesis

    from bgagent_admission.openapi_doc import openapi_document
    from bgagent_web.openapi import documented_statuses

    doc = openapi_document(local_repos=False, max_body_bytes=64 * 1024)
    assert resp.status_code in documented_statuses(doc, "POST", template), (resp.status_code, resp.text)
    schemathesis.openapi.from_dict(doc)[template]["POST"].validate_response(resp)


DECIDE = "/v1/tasks/{task_id}/approvals/{request_id}"


async def _submit(client: httpx.AsyncClient, headers: dict[str, str] = ALICE, **body: Any) -> dict[str, Any]:
    payload = {"repo": "acme/widgets", "description": "fix the flaky test", **body}
    resp = await client.post("/v1/tasks", json=payload, headers=headers)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def _append(store: JetStreamEventStore, task_id: str, event: Event) -> int:
    log = await store.read(task_id)
    (seq,) = await store.append(task_id, [event], expected_seq=log.last_seq)
    return seq


def _envelope(task_id: str) -> dict[str, Any]:
    return {"task_id": task_id, "event_id": str(ULID()), "ts": datetime.now(UTC), "actor": Actor.RUNNER}


async def _gated(
    client: httpx.AsyncClient, store: JetStreamEventStore, headers: dict[str, str] = ALICE
) -> tuple[str, str]:
    """A running task that waits on an approval request: (task id, request id)."""
    task_id = (await _submit(client, headers))["data"]["task_id"]
    await _append(store, task_id, TaskStarted(**_envelope(task_id), attempt=1, runner_id="r1"))
    ready = WorkspaceReady(**_envelope(task_id), attempt=1, branch=f"bgagent/{task_id}", base_branch="main")
    await _append(store, task_id, ready)
    request_id = str(ULID())
    now = datetime.now(UTC)
    requested = ApprovalRequested(
        **_envelope(task_id),
        attempt=1,
        request_id=request_id,
        tool_use_id="toolu_1",
        tool_name="bash",
        input_preview="git push origin main",
        rule_id="push_to_protected_branch",
        rule_ids=("push_to_protected_branch",),
        severity="medium",
        timeout_s=300,
        input_sha256="0" * 64,
        deadline=now + timedelta(seconds=300),
    )
    await _append(store, task_id, requested)
    return task_id, request_id


async def _last(store: JetStreamEventStore, task_id: str) -> Event:
    log: TaskLog = await store.read(task_id)
    return log.records[-1].event


# --- submit ------------------------------------------------------------------------------------


async def test_submit_carries_initial_approvals_and_the_approval_timeout(
    client: httpx.AsyncClient, event_store: JetStreamEventStore
) -> None:
    scopes = [
        "bash_pattern:git push origin main",
        "tool_group:file_write",
        "all_session",
        "rule:write_env_files",
    ]
    created = await _submit(client, initial_approvals=scopes, approval_timeout_s=30)
    log = await event_store.read(created["data"]["task_id"])
    event = log.records[0].event
    assert isinstance(event, TaskSubmitted)
    assert event.initial_approvals == tuple(scopes)
    assert event.approval_timeout_s == 30
    default = await _submit(client)
    first = (await event_store.read(default["data"]["task_id"])).records[0].event
    assert isinstance(first, TaskSubmitted)
    assert (first.initial_approvals, first.approval_timeout_s) == ((), 300)


async def test_same_idempotency_key_with_other_approvals_is_409(client: httpx.AsyncClient) -> None:
    body = {"repo": "acme/widgets", "description": "x", "initial_approvals": ["tool_type:bash"]}
    headers = {**ALICE, "Idempotency-Key": "appr-1"}
    assert (await client.post("/v1/tasks", json=body, headers=headers)).status_code == 201
    assert (await client.post("/v1/tasks", json=body, headers=headers)).status_code == 200
    other = await client.post("/v1/tasks", json={**body, "approval_timeout_s": 60}, headers=headers)
    assert (other.status_code, _err(other)["code"]) == (409, "IDEMPOTENCY_KEY_REUSED")


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"initial_approvals": ["rule:force_push_main"]}, "initial_approvals"),  # a hard-deny rule
        ({"initial_approvals": ["bash_pattern:*"]}, "initial_approvals"),
        ({"initial_approvals": ["bash_pattern:**?"]}, "initial_approvals"),
        ({"initial_approvals": ["write_path:a*"]}, "initial_approvals"),
        ({"initial_approvals": ["bash_pattern:g**t*p*"]}, "initial_approvals"),
        ({"initial_approvals": ["tool_type:python"]}, "initial_approvals"),
        ({"initial_approvals": ["this_call"]}, "initial_approvals"),
        ({"initial_approvals": ["everything"]}, "initial_approvals"),
        ({"initial_approvals": ["rule:" + "x" * 130]}, "initial_approvals"),
        ({"initial_approvals": ["tool_type:bash\u0000"]}, "initial_approvals"),
        ({"initial_approvals": [f"rule:r{i}" for i in range(21)]}, "initial_approvals"),
        ({"initial_approvals": "all_session"}, "initial_approvals"),
        ({"initial_approvals": [1]}, "initial_approvals"),
        ({"approval_timeout_s": 29}, "approval_timeout_s"),
        ({"approval_timeout_s": 3601}, "approval_timeout_s"),
        ({"approval_timeout_s": "300"}, "approval_timeout_s"),
        ({"approval_timeout_s": 30.5}, "approval_timeout_s"),
        ({"approval_timeout_s": True}, "approval_timeout_s"),
    ],
)
async def test_bad_approval_settings_at_submit_are_400_naming_the_field(
    client: httpx.AsyncClient, stream_count: Count, extra: dict[str, Any], field: str
) -> None:
    body = {"repo": "acme/widgets", "description": "x", **extra}
    resp = await client.post("/v1/tasks", json=body, headers=ALICE)
    assert resp.status_code == 400, resp.text
    assert _err(resp)["message"].startswith(f"{field}: "), resp.text
    _documented(resp, "/v1/tasks")
    assert await stream_count() == 0


async def test_twenty_scopes_and_the_timeout_bounds_are_accepted(
    client: httpx.AsyncClient, event_store: JetStreamEventStore
) -> None:
    for scopes, timeout_s in (([f"rule:r{i}" for i in range(20)], 3600), (["rule:" + "x" * 123], 30)):
        created = await _submit(client, initial_approvals=scopes, approval_timeout_s=timeout_s)
        log = await event_store.read(created["data"]["task_id"])
        submitted = log.records[0].event
        assert isinstance(submitted, TaskSubmitted)
        assert (list(submitted.initial_approvals), submitted.approval_timeout_s) == (scopes, timeout_s)


def test_hard_deny_rules_come_from_the_policy_engine() -> None:
    rules = hard_deny_rules_from_env({})
    assert {"rm_slash", "force_push_main", "write_credentials"} <= rules
    assert "push_to_protected_branch" not in rules


# --- deciding ------------------------------------------------------------------------------------


async def test_approve_appends_approval_decided_and_the_task_runs_again(
    client: httpx.AsyncClient, event_store: JetStreamEventStore
) -> None:
    task_id, request_id = await _gated(client, event_store)
    resp = await client.post(
        f"/v1/tasks/{task_id}/approvals/{request_id.lower()}",
        json={"decision": "approve", "scope": "tool_type_session"},
        headers=ALICE,
    )
    assert resp.status_code == 202, resp.text
    _documented(resp, DECIDE)
    body = resp.json()
    data = body["data"]
    assert (data["task_id"], data["request_id"], data["decision"], data["scope"]) == (
        task_id,
        request_id,
        "approve",
        "tool_type_session",
    )
    assert data["decided_by"] == "alice"
    assert data["task"]["status"] == "RUNNING"
    assert data["task"]["pending_approval"] is None
    log = await event_store.read(task_id)
    assert body["meta"]["seq"] == log.last_seq
    event = log.records[-1].event
    assert isinstance(event, ApprovalDecided)
    assert (event.request_id, event.decision, event.decided_by, event.scope) == (
        request_id,
        "approve",
        "alice",
        "tool_type_session",
    )
    state = log.state()
    assert state is not None
    assert "tool_type:bash" in state.approved_scopes


async def test_deny_reason_is_redacted_and_reaches_the_event(
    client: httpx.AsyncClient, event_store: JetStreamEventStore
) -> None:
    task_id, request_id = await _gated(client, event_store)
    secret = "ghp_" + "a1B2" * 9
    reason = f"  never push to main; my token {secret} is not for you  "
    resp = await client.post(
        f"/v1/tasks/{task_id}/approvals/{request_id}",
        json={"decision": "deny", "reason": reason},
        headers=ALICE,
    )
    assert resp.status_code == 202, resp.text
    assert secret not in resp.text
    event = await _last(event_store, task_id)
    assert isinstance(event, ApprovalDecided)
    assert event.decision == "deny"
    assert event.reason is not None
    assert event.reason.startswith("never push to main")
    assert secret not in event.reason
    assert resp.json()["data"]["reason"] == event.reason


async def test_reason_of_2000_characters_is_kept_more_is_400(
    client: httpx.AsyncClient, event_store: JetStreamEventStore
) -> None:
    task_id, request_id = await _gated(client, event_store)
    url = f"/v1/tasks/{task_id}/approvals/{request_id}"
    long = await client.post(url, json={"decision": "deny", "reason": "r" * 2001}, headers=ALICE)
    assert (long.status_code, _err(long)["message"][:8]) == (400, "reason: ")
    ok = await client.post(url, json={"decision": "deny", "reason": "r" * 2000}, headers=ALICE)
    assert ok.status_code == 202
    event = await _last(event_store, task_id)
    assert isinstance(event, ApprovalDecided)
    assert event.reason == "r" * 2000


async def test_second_decision_is_409_request_already_decided(
    client: httpx.AsyncClient, event_store: JetStreamEventStore
) -> None:
    task_id, request_id = await _gated(client, event_store)
    url = f"/v1/tasks/{task_id}/approvals/{request_id}"
    assert (await client.post(url, json={"decision": "approve"}, headers=ALICE)).status_code == 202
    again = await client.post(url, json={"decision": "deny"}, headers=ALICE)
    assert (again.status_code, _err(again)["code"]) == (409, "REQUEST_ALREADY_DECIDED")
    _documented(again, DECIDE)


async def test_an_expired_request_is_409_request_already_decided(
    client: httpx.AsyncClient, event_store: JetStreamEventStore
) -> None:
    task_id, request_id = await _gated(client, event_store)
    await _append(
        event_store, task_id, ApprovalExpired(**_envelope(task_id), attempt=1, request_id=request_id)
    )
    resp = await client.post(
        f"/v1/tasks/{task_id}/approvals/{request_id}", json={"decision": "approve"}, headers=ALICE
    )
    assert (resp.status_code, _err(resp)["code"]) == (409, "REQUEST_ALREADY_DECIDED")


async def test_a_request_of_a_task_being_cancelled_is_409_task_not_awaiting_approval(
    client: httpx.AsyncClient, event_store: JetStreamEventStore
) -> None:
    task_id, request_id = await _gated(client, event_store)
    cancel = CancelRequested(
        task_id=task_id,
        event_id=str(ULID()),
        ts=datetime.now(UTC),
        actor=Actor.ADMISSION,
        requested_by="alice",
    )
    await _append(event_store, task_id, cancel)
    resp = await client.post(
        f"/v1/tasks/{task_id}/approvals/{request_id}", json={"decision": "approve"}, headers=ALICE
    )
    assert (resp.status_code, _err(resp)["code"]) == (409, "TASK_NOT_AWAITING_APPROVAL")
    _documented(resp, DECIDE)


async def test_missing_request_and_other_users_task_are_404_admin_may_decide(
    client: httpx.AsyncClient, event_store: JetStreamEventStore, stream_count: Count
) -> None:
    task_id, request_id = await _gated(client, event_store)
    before = await stream_count()
    missing = await client.post(
        f"/v1/tasks/{task_id}/approvals/{ULID()}", json={"decision": "approve"}, headers=ALICE
    )
    assert (missing.status_code, _err(missing)["code"]) == (404, "NOT_FOUND")
    _documented(missing, DECIDE)
    url = f"/v1/tasks/{task_id}/approvals/{request_id}"
    theirs = await client.post(url, json={"decision": "approve"}, headers=BOB)
    assert (theirs.status_code, _err(theirs)["code"]) == (404, "NOT_FOUND")
    assert _err(theirs)["message"] == f"task {task_id} not found"
    no_task = await client.post(
        f"/v1/tasks/{ULID()}/approvals/{request_id}", json={"decision": "approve"}, headers=ALICE
    )
    assert no_task.status_code == 404
    assert await stream_count() == before
    admin = await client.post(url, json={"decision": "deny", "reason": "not today"}, headers=ROOT)
    assert admin.status_code == 202
    assert admin.json()["data"]["decided_by"] == "root"


async def test_a_decision_on_a_finished_task_is_409(
    client: httpx.AsyncClient, event_store: JetStreamEventStore
) -> None:
    task_id = (await _submit(client))["data"]["task_id"]
    assert (await client.post(f"/v1/tasks/{task_id}/cancel", headers=ALICE)).status_code == 202
    resp = await client.post(
        f"/v1/tasks/{task_id}/approvals/{ULID()}", json={"decision": "approve"}, headers=ALICE
    )
    assert (resp.status_code, _err(resp)["code"]) == (409, "TASK_ALREADY_TERMINAL")


_BAD_ULID = "01J0000000000000000000000Z"


@pytest.mark.parametrize(
    ("path_request", "content", "headers", "status", "start"),
    [
        (_BAD_ULID, b'{"decision": "maybe"}', {}, 400, "decision: "),
        (_BAD_ULID, b"{}", {}, 400, "decision: "),
        (_BAD_ULID, b'{"decision": null}', {}, 400, "decision: "),
        (_BAD_ULID, b'{"decision": 1}', {}, 400, "decision: "),
        (_BAD_ULID, b'{"decision": "approve", "scope": "bash_pattern:*"}', {}, 400, "scope: "),
        (_BAD_ULID, b'{"decision": "approve", "scope": "rule:rm_slash"}', {}, 400, "scope: "),
        (_BAD_ULID, b'{"decision": "approve", "scope": "nope"}', {}, 400, "scope: "),
        (_BAD_ULID, b'{"decision": "approve", "scope": "tool_type:bash\\u0000"}', {}, 400, "scope: "),
        (_BAD_ULID, b'{"decision": "deny", "scope": "this_call"}', {}, 400, "scope: "),
        (_BAD_ULID, b'{"decision": "deny", "reason": "a\\u0000b"}', {}, 400, "reason: "),
        (_BAD_ULID, b'{"decision": "deny", "reason": "\\u001b[31mred"}', {}, 400, "reason: "),
        (_BAD_ULID, b'{"decision": "deny", "reason": 5}', {}, 400, "reason: "),
        (_BAD_ULID, b'{"decision": "deny", "why": "x"}', {}, 400, "why: "),
        (_BAD_ULID, b'{"decision": "deny", "reason": "' + b"r" * 70_000 + b'"}', {}, 413, None),
        (_BAD_ULID, b"[1]", {}, 400, "body: "),
        (_BAD_ULID, b'{"decision": "approve"}', {"Content-Type": "text/plain"}, 415, None),
        ("not-a-ulid", b'{"decision": "approve"}', {}, 400, "request_id: "),
        ("%00", b'{"decision": "approve"}', {}, 400, "request_id: "),
        ("A" * 5000, b'{"decision": "approve"}', {}, 400, "request_id: "),
    ],
)
async def test_hostile_decisions_are_4xx_naming_the_field_and_append_nothing(
    client: httpx.AsyncClient,
    stream_count: Count,
    path_request: str,
    content: bytes,
    headers: dict[str, str],
    status: int,
    start: str | None,
) -> None:
    sent = {**ALICE, "Content-Type": "application/json", **headers}
    resp = await client.post(f"/v1/tasks/{_BAD_ULID}/approvals/{path_request}", content=content, headers=sent)
    assert resp.status_code == status, resp.text
    if start is not None:
        assert _err(resp)["message"].startswith(start), resp.text
    _documented(resp, DECIDE)
    assert await stream_count() == 0


async def test_more_than_30_decisions_a_minute_is_429_with_retry_after(
    admission: Admission, nc: Client, event_store: JetStreamEventStore
) -> None:
    now = [1000.0]

    async def ready() -> bool:
        return True

    window = SlidingWindow(clock=lambda: now[0])
    app = create_app(admission, tokens=TokenTable.parse(TOKENS), ready=ready, decisions=window)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://admission") as client:
        task_id, request_id = await _gated(client, event_store)
        url = f"/v1/tasks/{task_id}/approvals/{ULID()}"
        for _ in range(30):
            assert (await client.post(url, json={"decision": "deny"}, headers=ALICE)).status_code == 404
        now[0] += 30
        limited = await client.post(
            f"/v1/tasks/{task_id}/approvals/{request_id}", json={"decision": "approve"}, headers=ALICE
        )
        assert (limited.status_code, _err(limited)["code"]) == (429, "RATE_LIMITED")
        assert limited.headers["Retry-After"] == "30"
        _documented(limited, DECIDE)
        other_user = await client.post(url, json={"decision": "deny"}, headers=BOB)
        assert other_user.status_code == 404  # the limit is per user
        now[0] += 30.5
        ok = await client.post(
            f"/v1/tasks/{task_id}/approvals/{request_id}", json={"decision": "approve"}, headers=ALICE
        )
        assert ok.status_code == 202, ok.text


async def test_racing_decisions_exactly_one_wins(
    client: httpx.AsyncClient, event_store: JetStreamEventStore
) -> None:
    """Over real NATS: several approve/deny requests at once; one is appended, the rest are 409."""
    for _ in range(3):
        task_id, request_id = await _gated(client, event_store)
        url = f"/v1/tasks/{task_id}/approvals/{request_id}"
        bodies = [{"decision": "approve"}, {"decision": "deny", "reason": "no"}] * 3
        answers = await asyncio.gather(*(client.post(url, json=b, headers=ALICE) for b in bodies))
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [202] + [409] * 5, [r.text for r in answers]
        assert {_err(r)["code"] for r in answers if r.status_code == 409} == {"REQUEST_ALREADY_DECIDED"}
        log = await event_store.read(task_id)
        decided = [r.event for r in log.records if isinstance(r.event, ApprovalDecided)]
        assert len(decided) == 1
        winner = next(r for r in answers if r.status_code == 202).json()
        assert winner["data"]["decision"] == decided[0].decision
        assert winner["meta"]["seq"] == log.last_seq


async def test_stored_decision_round_trips_the_codec(
    client: httpx.AsyncClient, event_store: JetStreamEventStore, nc: Client
) -> None:
    task_id, request_id = await _gated(client, event_store)
    resp = await client.post(
        f"/v1/tasks/{task_id}/approvals/{request_id}",
        json={"decision": "approve", "scope": "bash_pattern:git push origin *"},
        headers=ALICE,
    )
    assert resp.status_code == 202
    log = await event_store.read(task_id)
    raw = log.records[-1].event
    from bgagent_contracts import encode_event

    again = decode_event(encode_event(raw))
    assert isinstance(again, ApprovalDecided)
    assert again.scope == "bash_pattern:git push origin *"
