"""The shared HTTP plumbing on a tiny app: error envelope, bearer auth, health endpoints."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from litestar import Litestar, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.testing import AsyncTestClient

import bgagent_web
from bgagent_contracts.auth import Principal, TokenTable
from bgagent_web import (
    REQUEST_ID_HEADER,
    BadRequest,
    Conflict,
    NotFound,
    Unauthorized,
    Unavailable,
    handle_exception,
    health_handlers,
    principal_dependency,
)

TOKENS = TokenTable.parse("tok-alice=alice,tok-root=root:admin")
SECRET_DETAIL = "password=hunter2 at /srv/app/internal.py"


class NewTask(msgspec.Struct, forbid_unknown_fields=True):
    repo: str
    max_turns: int = 10


@post("/tasks")
async def create_task(data: JSONBody[NewTask], principal: NamedDependency[Principal]) -> dict[str, Any]:
    return {"repo": data.repo, "max_turns": data.max_turns, "user": principal.user_id}


@get("/me")
async def me(principal: NamedDependency[Principal]) -> dict[str, Any]:
    return {"user_id": principal.user_id, "admin": principal.admin}


@get("/search", sync_to_thread=False)
def search(limit: FromQuery[int]) -> dict[str, int]:
    return {"limit": limit}


_ERRORS: dict[str, Exception] = {
    "bad": BadRequest("repo: must be owner/name"),
    "unauthorized": Unauthorized("no token"),
    "missing": NotFound("task 01X not found"),
    "conflict": Conflict("task 01X is already COMPLETED", code="TASK_ALREADY_TERMINAL"),
    "down": Unavailable("event store unavailable"),
    "boom": RuntimeError(SECRET_DETAIL),
}


@get("/raise/{kind:str}", sync_to_thread=False)
def raise_(kind: FromPath[str]) -> None:
    raise _ERRORS[kind]


_ready = {"value": True}


async def _is_ready() -> bool:
    return _ready["value"]


def _app() -> Litestar:
    return Litestar(
        route_handlers=[create_task, me, search, raise_, *health_handlers(_is_ready)],
        exception_handlers={Exception: handle_exception},
        dependencies={"principal": Provide(principal_dependency(TOKENS))},
    )


@pytest.fixture
async def client() -> AsyncIterator[AsyncTestClient[Litestar]]:
    _ready["value"] = True
    async with AsyncTestClient(app=_app()) as c:
        yield c


def _error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "request_id"}
    assert body["error"]["request_id"] == response.headers[REQUEST_ID_HEADER]
    return dict(body["error"])


# --- the envelope --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "code", "message"),
    [
        ("bad", 400, "VALIDATION_ERROR", "repo: must be owner/name"),
        ("unauthorized", 401, "UNAUTHORIZED", "no token"),
        ("missing", 404, "NOT_FOUND", "task 01X not found"),
        ("conflict", 409, "TASK_ALREADY_TERMINAL", "task 01X is already COMPLETED"),
        ("down", 503, "SERVICE_UNAVAILABLE", "event store unavailable"),
    ],
)
async def test_api_errors_become_the_envelope(
    client: AsyncTestClient[Litestar], kind: str, status: int, code: str, message: str
) -> None:
    response = await client.get(f"/raise/{kind}")
    assert response.status_code == status
    error = _error(response)
    assert (error["code"], error["message"]) == (code, message)
    assert error["request_id"]


async def test_the_callers_request_id_is_echoed(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/raise/missing", headers={REQUEST_ID_HEADER: "req-abc-123"})
    assert response.status_code == 404
    assert _error(response)["request_id"] == "req-abc-123"
    assert response.headers[REQUEST_ID_HEADER] == "req-abc-123"


async def test_request_ids_differ_between_requests(client: AsyncTestClient[Litestar]) -> None:
    first = _error(await client.get("/raise/missing"))["request_id"]
    second = _error(await client.get("/raise/missing"))["request_id"]
    assert first != second


async def test_an_unexpected_exception_is_a_500_without_details(
    client: AsyncTestClient[Litestar], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="bgagent_web.errors")
    response = await client.get("/raise/boom")
    assert response.status_code == 500
    error = _error(response)
    assert error["code"] == "INTERNAL_ERROR"
    assert "hunter2" not in response.text
    assert "Traceback" not in response.text
    assert "RuntimeError" not in response.text
    assert "internal.py" not in response.text
    # the details are in the log, under the same request id
    logged = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert len(logged) == 1
    assert logged[0].exc_info is not None
    assert getattr(logged[0], "request_id", None) == error["request_id"]


async def test_a_body_validation_error_is_a_400_naming_the_field(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post(
        "/tasks", json={"repo": "acme/w", "max_turns": "many"}, headers={"Authorization": "Bearer tok-alice"}
    )
    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == "VALIDATION_ERROR"
    assert "max_turns" in error["message"]


async def test_a_missing_body_field_is_named(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post(
        "/tasks", json={"max_turns": 3}, headers={"Authorization": "Bearer tok-alice"}
    )
    assert response.status_code == 400
    assert "repo" in _error(response)["message"]


async def test_malformed_json_is_a_400(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post(
        "/tasks",
        content=b"{nope",
        headers={"Authorization": "Bearer tok-alice", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert _error(response)["code"] == "VALIDATION_ERROR"


async def test_an_unknown_body_field_is_named(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post(
        "/tasks", json={"repo": "acme/w", "colour": "red"}, headers={"Authorization": "Bearer tok-alice"}
    )
    assert response.status_code == 400
    assert "colour" in _error(response)["message"]


async def test_a_bad_query_parameter_is_a_400_naming_it(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/search", params={"limit": "lots"})
    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == "VALIDATION_ERROR"
    assert "limit" in error["message"]
    missing = await client.get("/search")
    assert missing.status_code == 400
    assert "limit" in _error(missing)["message"]


async def test_an_unknown_route_is_a_404_envelope(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/nowhere")
    assert response.status_code == 404
    assert _error(response)["code"] == "NOT_FOUND"


async def test_a_wrong_method_is_a_405_envelope(client: AsyncTestClient[Litestar]) -> None:
    response = await client.delete("/me")
    assert response.status_code == 405
    assert _error(response)["code"] == "METHOD_NOT_ALLOWED"


# --- bearer auth ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic dG9rLWFsaWNlOg=="},
        {"Authorization": "Bearer"},
    ],
    ids=["none", "unknown", "basic", "empty"],
)
async def test_requests_without_a_valid_token_are_401(
    client: AsyncTestClient[Litestar], headers: dict[str, str]
) -> None:
    response = await client.get("/me", headers=headers)
    assert response.status_code == 401
    error = _error(response)
    assert error["code"] == "UNAUTHORIZED"
    assert "Authorization: Bearer" in error["message"]


async def test_a_rejected_token_writes_nothing(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post("/tasks", json={"repo": "acme/w"}, headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401


async def test_a_valid_token_yields_the_principal(client: AsyncTestClient[Litestar]) -> None:
    alice = await client.get("/me", headers={"Authorization": "Bearer tok-alice"})
    assert (alice.status_code, alice.json()) == (200, {"user_id": "alice", "admin": False})
    root = await client.get("/me", headers={"Authorization": "bearer tok-root"})
    assert root.json() == {"user_id": "root", "admin": True}
    created = await client.post(
        "/tasks", json={"repo": "acme/w"}, headers={"Authorization": "Bearer tok-alice"}
    )
    assert (created.status_code, created.json()) == (
        201,
        {"repo": "acme/w", "max_turns": 10, "user": "alice"},
    )


# --- health --------------------------------------------------------------------------------------


async def test_health_endpoints_need_no_token(client: AsyncTestClient[Litestar]) -> None:
    healthz = await client.get("/healthz")
    assert (healthz.status_code, healthz.json()) == (200, {"status": "ok"})
    readyz = await client.get("/readyz")
    assert (readyz.status_code, readyz.json()) == (200, {"status": "ready"})


async def test_readyz_is_503_while_dependencies_are_down(client: AsyncTestClient[Litestar]) -> None:
    _ready["value"] = False
    response = await client.get("/readyz")
    assert (response.status_code, response.json()) == (503, {"status": "not ready"})
    assert (await client.get("/healthz")).status_code == 200


def test_all_is_sorted_and_every_name_resolves() -> None:
    names = list(bgagent_web.__all__)
    assert names == sorted(names, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n))
    assert [n for n in names if not hasattr(bgagent_web, n)] == []
