"""Run a Litestar app under uvicorn until cancelled, with health endpoints."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from litestar import Litestar, get
from litestar.response import Response


def health_handlers(ready: Callable[[], Awaitable[bool]]) -> list[Any]:
    """``/healthz`` (process is up) and ``/readyz`` (dependencies answer)."""

    @get("/healthz", sync_to_thread=False, include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", include_in_schema=False)
    async def readyz() -> Response[dict[str, str]]:
        ok = await ready()
        return Response({"status": "ready" if ok else "not ready"}, status_code=200 if ok else 503)

    return [healthz, readyz]


async def serve(app: Litestar, *, host: str, port: int) -> None:
    """Serve until the task is cancelled or the server is told to exit."""
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    await server.serve()
