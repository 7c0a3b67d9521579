"""Run a Litestar app under uvicorn until cancelled, with health endpoints."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from litestar import Litestar, get
from litestar.response import Response

from .edge import H11_MAX_HEAD_BYTES
from .errors import RETRY_AFTER_S


def health_handlers(ready: Callable[[], Awaitable[bool]]) -> list[Any]:
    """``/healthz`` (process is up) and ``/readyz`` (dependencies answer)."""

    @get("/healthz", sync_to_thread=False, include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", include_in_schema=False)
    async def readyz() -> Response[dict[str, str]]:
        ok = await ready()
        if ok:
            return Response({"status": "ready"}, status_code=200)
        return Response({"status": "not ready"}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

    return [healthz, readyz]


def uvicorn_options() -> dict[str, Any]:
    """uvicorn settings for bgagent's HTTP apps: h11 with a head limit above the app's 431 limits.

    With uvicorn's default (16 KiB) a request head between the app's header limit and 16 KiB
    gets the 431 envelope and a larger one uvicorn's plain 400; with this one the envelope
    answers every head up to ``H11_MAX_HEAD_BYTES``.
    """
    return {
        "http": "h11",
        "h11_max_incomplete_event_size": H11_MAX_HEAD_BYTES,
        "log_config": None,
        "access_log": False,
        "lifespan": "on",
    }


async def serve(app: Litestar, *, host: str, port: int) -> None:
    """Serve until the task is cancelled or the server is told to exit.

    Cancelling the task shuts uvicorn down gracefully (stop listening, finish open requests,
    run the app's shutdown hooks) before the CancelledError propagates; a bare cancel of
    ``Server.serve()`` would leave the listening socket open and skip the shutdown hooks.
    """
    config = uvicorn.Config(app, **uvicorn_options(), host=host, port=port)
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        server.should_exit = True
        await serving
        raise
