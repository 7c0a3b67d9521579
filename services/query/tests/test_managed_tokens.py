"""Managed API tokens end to end on real processes: admission and query (``python -m``) against a real
NATS and PostgreSQL. A token made with ``TokenStore.create`` works on both; once revoked, both answer
401 within a second (measured); static ``BGAGENT_API_TOKENS`` keep working; admins see every task,
users only their own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client

from bgagent_eventstore import NatsSettings, TokenStore
from bgagent_testing.servers import free_port

pytestmark = pytest.mark.integration

STATIC = "static-bob-token=bob"


async def _until(pred: Callable[[], Awaitable[bool]], what: str, timeout: float) -> float:
    """Poll ``pred`` until true; return the seconds it took; fail after ``timeout``."""
    start = time.monotonic()
    while not await pred():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


@contextlib.asynccontextmanager
async def _service(name: str, env: dict[str, str], ready: Path) -> AsyncIterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-m", f"bgagent_{name}"], env=env)
    try:

        async def started() -> bool:
            assert proc.poll() is None, f"{name} exited with {proc.returncode}"
            return ready.exists()

        await _until(started, f"{name} ready", timeout=20)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _env(provisioned: NatsSettings, db_url: str, tmp_path: Path, name: str, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "NATS_URL": provisioned.url,
        "BGAGENT_STREAM": provisioned.stream,
        "BGAGENT_PREFIX": provisioned.prefix,
        "DATABASE_URL": db_url,
        "BGAGENT_API_TOKENS": STATIC,
        "BGAGENT_HTTP_HOST": "127.0.0.1",
        "BGAGENT_ADMISSION_PORT": str(port),
        "BGAGENT_QUERY_PORT": str(port),
        "BGAGENT_READY_FILE": str(tmp_path / f"{name}.ready"),
        "BGAGENT_LOG_LEVEL": "WARNING",
    }


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_managed_tokens_work_on_both_services_and_a_revocation_counts(
    provisioned: NatsSettings, nc: Client, db_url: str, tmp_path: Path
) -> None:
    tokens = TokenStore(nc.jetstream(), provisioned.prefix)
    alice, alice_record = await tokens.create("alice", name="laptop")
    root, _ = await tokens.create("root", admin=True, name="ops")
    ports = {"admission": free_port(), "query": free_port()}
    async with (
        _service(
            "query", _env(provisioned, db_url, tmp_path, "query", ports["query"]), tmp_path / "query.ready"
        ),
        _service(
            "admission",
            _env(provisioned, db_url, tmp_path, "admission", ports["admission"]),
            tmp_path / "admission.ready",
        ),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['admission']}", timeout=5) as admission,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['query']}", timeout=5) as query,
    ):
        created = await admission.post(
            "/v1/tasks", json={"repo": "acme/widgets", "issue_number": 1}, headers=_auth(alice)
        )
        assert created.status_code == 201, created.text
        task_id = created.json()["data"]["task_id"]
        assert created.json()["data"]["user_id"] == "alice"

        async def projected() -> bool:
            r = await query.get(f"/v1/tasks/{task_id}", headers=_auth(alice))
            return r.status_code == 200

        await _until(projected, "the task in query", timeout=10)
        # a user sees only their own tasks (404 otherwise); an admin token sees and cancels any
        assert (await query.get(f"/v1/tasks/{task_id}", headers=_auth("static-bob-token"))).status_code == 404
        assert (await query.get(f"/v1/tasks/{task_id}", headers=_auth(root))).status_code == 200
        cancel = await admission.post(
            f"/v1/tasks/{task_id}/cancel", json={}, headers=_auth("static-bob-token")
        )
        assert cancel.status_code == 404

        # a token created while the services run works at once (no restart)
        later, _ = await tokens.create("carol")

        async def later_works() -> bool:
            a = await admission.post(
                "/v1/tasks", json={"repo": "acme/widgets", "issue_number": 2}, headers=_auth(later)
            )
            q = await query.get("/v1/tasks", headers=_auth(later))
            return a.status_code == 201 and q.status_code == 200

        await _until(later_works, "a new token to work on both services", timeout=10)

        await tokens.revoke(alice_record.token_id)

        missing = "01" + "Z" * 24  # a task nobody has: a probe with no side effect (404, then 401)

        async def both_refuse() -> bool:
            a = await admission.post(f"/v1/tasks/{missing}/cancel", json={}, headers=_auth(alice))
            q = await query.get("/v1/tasks", headers=_auth(alice))
            return a.status_code == 401 and q.status_code == 401

        # the timeout only bounds a failure; how fast: bench/token_revocation.py
        await _until(both_refuse, "both services to refuse the revoked token", timeout=10)

        # the static token and the other managed tokens are untouched; the admin cancels alice's task
        assert (await query.get("/v1/tasks", headers=_auth("static-bob-token"))).status_code == 200
        cancel = await admission.post(f"/v1/tasks/{task_id}/cancel", json={}, headers=_auth(root))
        assert cancel.status_code == 202, cancel.text
