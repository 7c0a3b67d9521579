"""``GET /v1/approvals`` and ``GET /v1/repos/{owner}/{name}/policies`` over real PostgreSQL and NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import schemathesis
from ulid import ULID

from bgagent_contracts import (
    Actor,
    ApprovalDecided,
    ApprovalRequested,
    CancelRequested,
    Event,
)
from bgagent_eventstore import JetStreamEventStore
from bgagent_policy import PolicyEngine
from bgagent_query.api import policies_view, policy_rules_from_env
from bgagent_query.openapi_doc import openapi_document
from bgagent_web.openapi import documented_statuses

from .test_api import ADMIN, ALICE, BOB, Api, _project, _serve

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(pool: Any, db_url: str, event_store: JetStreamEventStore) -> AsyncIterator[Api]:
    """The query API (uvicorn on a real socket) whose event subjects use this test's prefix."""
    async with _serve(pool, db_url, event_store.prefix) as a:
        yield a


def _documented(resp: httpx.Response, template: str) -> None:
    doc = openapi_document()
    assert resp.status_code in documented_statuses(doc, "GET", template), (resp.status_code, resp.text)
    schemathesis.openapi.from_dict(doc)[template]["GET"].validate_response(resp)


def _gated(q: Any, user: str, *, preview: str = "git push origin main", minutes: int = 0) -> list[Event]:
    """A running task of ``user`` waiting on one approval request."""
    head = q.lifecycle(user=user)[:4]
    last = head[-1]
    ts = last.ts + timedelta(minutes=minutes, seconds=1)
    requested = ApprovalRequested(
        task_id=last.task_id,
        event_id=str(ULID()),
        ts=ts,
        actor=Actor.RUNNER,
        attempt=1,
        request_id=str(ULID()),
        tool_use_id="toolu_1",
        tool_name="bash",
        input_preview=preview,
        rule_id="push_to_protected_branch",
        rule_ids=("push_to_protected_branch",),
        severity="medium",
        timeout_s=300,
        input_sha256="0" * 64,
        deadline=ts + timedelta(seconds=300),
    )
    return [*head, requested]


def _decided(events: list[Event]) -> ApprovalDecided:
    req = events[-1]
    assert isinstance(req, ApprovalRequested)
    return ApprovalDecided(
        task_id=req.task_id,
        event_id=str(ULID()),
        ts=req.ts + timedelta(seconds=5),
        actor=Actor.ADMISSION,
        request_id=req.request_id,
        decision="approve",
        decided_by="alice",
    )


async def test_pending_lists_the_callers_open_requests_and_admins_see_all(
    api: Api, event_store: JetStreamEventStore, projectors: Any, pool: Any, q: Any
) -> None:
    mine = _gated(q, "alice", preview="git push origin main")
    mine_later = _gated(q, "alice", preview="echo x > prod.env", minutes=5)
    decided = _gated(q, "alice", minutes=1)
    decided.append(_decided(decided))
    theirs = _gated(q, "bob", minutes=2)
    cancelling = _gated(q, "alice", minutes=3)
    cancelling.append(
        CancelRequested(
            task_id=cancelling[0].task_id,
            event_id=str(ULID()),
            ts=cancelling[-1].ts + timedelta(seconds=1),
            actor=Actor.ADMISSION,
            requested_by="alice",
        )
    )
    finished = q.lifecycle(user="alice")
    await _project(
        event_store, projectors, pool, q, [mine, mine_later, decided, theirs, cancelling, finished]
    )
    client = api.client

    resp = await client.get("/v1/approvals", params={"status": "pending"}, headers=ALICE)
    assert resp.status_code == 200, resp.text
    _documented(resp, "/v1/approvals")
    body = resp.json()
    assert [a["task_id"] for a in body["data"]] == [mine[0].task_id, mine_later[0].task_id]
    assert body["pagination"] == {"has_more": False}
    first = body["data"][0]
    req = mine[-1]
    assert isinstance(req, ApprovalRequested)
    assert first == {
        "task_id": req.task_id,
        "user_id": "alice",
        "repo": "acme/app",
        "request_id": req.request_id,
        "tool_name": "bash",
        "input_preview": "git push origin main",
        "rule_ids": ["push_to_protected_branch"],
        "severity": "medium",
        "deadline": first["deadline"],
        "requested_at": first["requested_at"],
        "attempt": 1,
        "waiting": True,
    }
    assert first["deadline"].startswith(req.ts.date().isoformat())

    bob = (await client.get("/v1/approvals", headers=BOB)).json()["data"]
    assert [a["task_id"] for a in bob] == [theirs[0].task_id]
    everyone = (await client.get("/v1/approvals", headers=ADMIN)).json()["data"]
    assert {a["task_id"] for a in everyone} == {mine[0].task_id, mine_later[0].task_id, theirs[0].task_id}
    page = (await client.get("/v1/approvals", params={"limit": 1}, headers=ADMIN)).json()
    assert len(page["data"]) == 1
    assert page["pagination"]["has_more"] is True


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/v1/approvals?status=decided", "status"),
        ("/v1/approvals?status=%00", "status"),
        ("/v1/approvals?limit=0", "limit"),
        ("/v1/approvals?limit=501", "limit"),
        ("/v1/approvals?limit=" + "9" * 5000, "limit"),
    ],
)
async def test_bad_approval_parameters_are_400_naming_the_parameter(api: Api, url: str, field: str) -> None:
    resp = await api.client.get(url, headers=ALICE)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["message"].startswith(f"{field}:")
    _documented(resp, "/v1/approvals")


async def test_approvals_need_a_token(api: Api) -> None:
    resp = await api.client.get("/v1/approvals")
    assert resp.status_code == 401
    _documented(resp, "/v1/approvals")


async def test_policies_lists_the_engines_rules_by_tier(api: Api) -> None:
    resp = await api.client.get("/v1/repos/acme/widgets/policies", headers=ALICE)
    assert resp.status_code == 200, resp.text
    _documented(resp, "/v1/repos/{owner}/{name}/policies")
    data = resp.json()["data"]
    assert data["repo"] == "acme/widgets"
    deny = {r["rule_id"] for r in data["hard_deny"]}
    gate = {r["rule_id"]: r for r in data["hard_gate"]}
    assert {"rm_slash", "force_push_main", "write_credentials"} <= deny
    assert gate["push_to_protected_branch"]["approval_timeout_s"] == 300
    assert gate["write_env_files"]["severity"] == "high"
    assert data == policies_view("acme/widgets", PolicyEngine.load().rules())
    assert (await api.client.get("/v1/repos/acme/widgets/policies")).status_code == 401


@pytest.mark.parametrize("path", ["/v1/repos/acme/..%00/policies", "/v1/repos/acme/a%20b/policies"])
async def test_bad_repo_in_policies_is_400(api: Api, path: str) -> None:
    resp = await api.client.get(path, headers=ALICE)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["message"].startswith("repo:")
    _documented(resp, "/v1/repos/{owner}/{name}/policies")


def test_disabled_gate_rules_are_not_listed() -> None:
    rules = policy_rules_from_env({"BGAGENT_POLICY_DISABLE": "write_env_files"})
    assert "write_env_files" not in {r.rule_id for r in rules}
    assert "push_to_protected_branch" in {r.rule_id for r in rules}
