"""EdgeMiddleware: header limits answer 431 in the envelope, every response carries X-Request-Id."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar import Litestar, Request, get, post
from litestar.di import NamedDependency, Provide

from bgagent_contracts.auth import Principal, TokenTable
from bgagent_web import (
    MAX_HEADER_BYTES,
    MAX_HEADER_FIELD_BYTES,
    REQUEST_ID_HEADER,
    EdgeMiddleware,
    handle_exception,
    health_handlers,
    principal_dependency,
)
from bgagent_web.edge import header_problem

TOKENS = TokenTable.parse("tok-alice=alice")
ALICE = {"Authorization": "Bearer tok-alice"}


@get("/me")
async def me(principal: NamedDependency[Principal]) -> dict[str, Any]:
    return {"user_id": principal.user_id}


@post("/echo")
async def echo(request: Request[Any, Any, Any]) -> dict[str, int]:
    return {"bytes": len(await request.body())}


async def _ready() -> bool:
    return True


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = Litestar(
        route_handlers=[me, echo, *health_handlers(_ready)],
        exception_handlers={Exception: handle_exception},
        dependencies={"principal": Provide(principal_dependency(TOKENS))},
        middleware=[EdgeMiddleware],
        request_max_body_size=1024,
    )
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as c:
        yield c


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["request_id"] == response.headers[REQUEST_ID_HEADER]
    return dict(body["error"])


def test_header_problem_measures_names_and_values() -> None:
    assert header_problem([(b"a", b"b" * (MAX_HEADER_FIELD_BYTES - 1))]) is None
    one = header_problem([(b"x-big", b"b" * MAX_HEADER_FIELD_BYTES)])
    assert one is not None
    assert one.startswith("x-big: header field is 4101 bytes")
    fields = [(f"x-{i}".encode(), b"v" * 1000) for i in range(MAX_HEADER_BYTES // 1000 + 1)]
    total = header_problem(fields)
    assert total is not None
    assert total.startswith("headers: ")


async def test_one_oversized_header_is_431_before_auth(client: httpx.AsyncClient) -> None:
    response = await client.get("/me", headers={"X-Padding": "p" * MAX_HEADER_FIELD_BYTES})
    assert response.status_code == 431
    error = _error(response)
    assert error["code"] == "HEADERS_TOO_LARGE"
    assert error["message"].startswith("x-padding: header field is")


async def test_many_headers_together_are_431(client: httpx.AsyncClient) -> None:
    headers = {**ALICE, **{f"X-Pad-{i}": "p" * 2000 for i in range(5)}}
    response = await client.get("/me", headers=headers)
    assert response.status_code == 431
    assert _error(response)["message"].startswith("headers: ")


async def test_headers_within_the_limits_pass(client: httpx.AsyncClient) -> None:
    headers = {**ALICE, **{f"X-Pad-{i}": "p" * 1500 for i in range(4)}}
    response = await client.get("/me", headers=headers)
    assert (response.status_code, response.json()) == (200, {"user_id": "alice"})


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    ok = await client.get("/me", headers=ALICE)
    health = await client.get("/healthz")
    denied = await client.get("/me")
    for response in (ok, health, denied):
        assert len(response.headers[REQUEST_ID_HEADER]) == 16
    assert _error(denied)["code"] == "UNAUTHORIZED"
    assert ok.headers[REQUEST_ID_HEADER] != health.headers[REQUEST_ID_HEADER]


async def test_a_sane_callers_request_id_is_echoed_an_odd_one_replaced(client: httpx.AsyncClient) -> None:
    mine = await client.get("/me", headers={**ALICE, REQUEST_ID_HEADER: "trace-42"})
    assert mine.headers[REQUEST_ID_HEADER] == "trace-42"
    for odd in ("x" * 129, "has space", b"caf\xc3\xa9"):
        response = await client.get("/me", headers={REQUEST_ID_HEADER: odd})
        assert response.status_code == 401
        rid = response.headers[REQUEST_ID_HEADER]
        assert rid != odd
        assert len(rid) == 16
        assert _error(response)["request_id"] == rid


async def test_odd_authorization_bytes_are_401(client: httpx.AsyncClient) -> None:
    for value in (b"Bearer \xff\xfe\x80", b"\xff", b"Bearer " + b"\xc3\x28" * 10, b"Basic \xe2\x82"):
        response = await client.get("/me", headers={"Authorization": value})
        assert response.status_code == 401
        assert _error(response)["code"] == "UNAUTHORIZED"


async def test_an_oversized_body_is_413_and_a_wrong_method_405_in_the_envelope(
    client: httpx.AsyncClient,
) -> None:
    small = await client.post("/echo", content=b"x" * 1024)
    assert (small.status_code, small.json()) == (201, {"bytes": 1024})
    big = await client.post("/echo", content=b"x" * 2048)
    assert big.status_code == 413
    assert _error(big)["code"] == "PAYLOAD_TOO_LARGE"
    wrong = await client.delete("/me")
    assert wrong.status_code == 405
    assert _error(wrong)["code"] == "METHOD_NOT_ALLOWED"
    assert wrong.headers["Allow"] == "GET, OPTIONS"
