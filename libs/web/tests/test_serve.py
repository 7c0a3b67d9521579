"""serve(): a real socket, health endpoints, and a clean stop when the serving task is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
from litestar import Litestar

from bgagent_testing.servers import free_port
from bgagent_web import handle_exception, health_handlers, serve


async def _ready() -> bool:
    return True


async def _get(url: str, timeout: float = 5.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            try:
                return await client.get(url, timeout=1.0)
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.02)


async def test_serve_listens_until_cancelled_then_shuts_down_cleanly() -> None:
    shutdowns: list[str] = []

    async def on_shutdown() -> None:
        shutdowns.append("done")

    app = Litestar(
        route_handlers=health_handlers(_ready),
        exception_handlers={Exception: handle_exception},
        on_shutdown=[on_shutdown],
    )
    port = free_port()
    task = asyncio.create_task(serve(app, host="127.0.0.1", port=port))
    try:
        response = await _get(f"http://127.0.0.1:{port}/healthz")
        assert (response.status_code, response.json()) == (200, {"status": "ok"})
        missing = await _get(f"http://127.0.0.1:{port}/nowhere")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "NOT_FOUND"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)
    assert task.cancelled()
    assert shutdowns == ["done"]  # the app's shutdown hooks ran
    async with httpx.AsyncClient() as client:
        try:
            await client.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0)
        except httpx.ConnectError:
            pass
        else:
            raise AssertionError("still listening after the serving task was cancelled")
