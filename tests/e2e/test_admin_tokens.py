"""Managed API tokens through the ``bgagent`` CLI on the running stack: create → the token works on
admission and query; revoke → both answer 401 within a second; the stack's own token keeps working."""

from __future__ import annotations

import time

import httpx
import pytest

from .conftest import E2E

pytestmark = pytest.mark.e2e


def _codes(e2e: E2E, token: str) -> tuple[int, int]:
    auth = {"Authorization": f"Bearer {token}"}
    q = httpx.get(e2e.client["query_url"] + "/v1/tasks", headers=auth, timeout=5)
    a = httpx.post(
        e2e.client["api_url"] + "/v1/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV/cancel",
        json={},
        headers=auth,
        timeout=5,
    )
    return a.status_code, q.status_code


def test_a_token_made_with_the_cli_works_until_it_is_revoked(e2e: E2E) -> None:
    [made] = e2e.cli_json("admin", "token", "create", "--user", "erin", "--name", "e2e")
    token, token_id = made["token"], made["token_id"]
    assert token.startswith("bga_")

    deadline = time.monotonic() + 10  # a failure bound; how fast: bench/token_revocation.py
    while _codes(e2e, token) != (404, 200):  # authenticated: an unknown task is 404, the list 200
        assert time.monotonic() < deadline, f"the new token does not work: {_codes(e2e, token)}"
        time.sleep(0.02)

    listed = e2e.cli("admin", "token", "list")
    assert listed.returncode == 0, listed.stderr
    assert token_id in listed.stdout
    assert token not in listed.stdout

    e2e.cli_json("admin", "token", "revoke", token_id)
    deadline = time.monotonic() + 10  # a failure bound, as above
    while _codes(e2e, token) != (401, 401):
        assert time.monotonic() < deadline, f"still accepted: {_codes(e2e, token)}"
        time.sleep(0.01)
    assert _codes(e2e, e2e.client["token"])[1] == 200, "the stack's own token is untouched"
