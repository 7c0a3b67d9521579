"""``python -m bgagent_admission`` as a real process: ready file, HTTP on a socket, clean SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client

from bgagent_contracts.subjects import idempotency_bucket
from bgagent_eventstore import NatsSettings
from bgagent_testing.servers import free_port

pytestmark = pytest.mark.integration


async def wait_until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


def _env(settings: NatsSettings, port: int, ready_file: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "NATS_URL": settings.url,
        "BGAGENT_STREAM": settings.stream,
        "BGAGENT_PREFIX": settings.prefix,
        "BGAGENT_API_TOKENS": "t0k=alice",
        "BGAGENT_HTTP_HOST": "127.0.0.1",
        "BGAGENT_ADMISSION_PORT": str(port),
        "BGAGENT_READY_FILE": str(ready_file),
        **extra,
    }


@contextlib.asynccontextmanager
async def _service(env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bgagent_admission",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_serves_until_sigterm_then_exits_cleanly(provisioned: NatsSettings, tmp_path: Path) -> None:
    port = free_port()
    ready = tmp_path / "ready"
    async with _service(_env(provisioned, port, ready)) as proc:
        await wait_until(lambda: ready.exists() or proc.returncode is not None)
        assert proc.returncode is None, await proc.stderr.read() if proc.stderr else b""
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/readyz")).status_code == 200
            resp = await http.post(
                "/v1/tasks",
                json={"repo": "acme/widgets", "issue_number": 9},
                headers={"Authorization": "Bearer t0k"},
            )
            assert resp.status_code == 201, resp.text
            assert resp.json()["data"]["user_id"] == "alice"
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), timeout=10)
        assert code == 0
        assert proc.stderr is not None
        assert b"admission stopped" in await proc.stderr.read()


async def test_refuses_to_start_without_the_stream(nats_url: str, tmp_path: Path) -> None:
    missing = NatsSettings(url=nats_url, stream="NOSUCHSTREAM", prefix="nosuch")
    ready = tmp_path / "ready"
    async with _service(_env(missing, free_port(), ready)) as proc:
        code = await asyncio.wait_for(proc.wait(), timeout=10)
        assert code == 1
        assert proc.stderr is not None
        assert b"bgagent admin init" in await proc.stderr.read()
        assert not ready.exists()


async def test_auto_provision_creates_what_is_missing(
    nc: Client, nats_settings: NatsSettings, tmp_path: Path
) -> None:
    port = free_port()
    ready = tmp_path / "ready"
    js = nc.jetstream()
    try:
        async with _service(_env(nats_settings, port, ready, BGAGENT_AUTO_PROVISION="true")) as proc:
            await wait_until(lambda: ready.exists() or proc.returncode is not None)
            assert proc.returncode is None
            await js.stream_info(nats_settings.stream)
            await js.key_value(idempotency_bucket(nats_settings.prefix))
            proc.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(nats_settings.stream)
