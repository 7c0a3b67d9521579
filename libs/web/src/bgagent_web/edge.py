"""The edge of both HTTP apps: header size limits (431) and ``X-Request-Id`` on every response.

Limits, in bytes of header names plus values as received:
- one header field: ``MAX_HEADER_FIELD_BYTES`` (4 KiB);
- all header fields together: ``MAX_HEADER_BYTES`` (8 KiB).

Both stay below what the HTTP server itself accepts (uvicorn with h11 refuses a request head,
request line included, larger than 16 KiB by default with a plain ``400`` before any app code
runs; ``H11_MAX_HEAD_BYTES`` is the value ``serve()`` gives it so that the app's 431 answers
every head up to 64 KiB). Bodies are limited by Litestar's ``request_max_body_size`` (413).
"""

from __future__ import annotations

from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from .errors import REQUEST_ID_HEADER, RequestHeaderFieldsTooLarge, scope_request_id

MAX_HEADER_FIELD_BYTES = 4 * 1024
MAX_HEADER_BYTES = 8 * 1024
H11_MAX_HEAD_BYTES = 64 * 1024

_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode()


def header_problem(headers: Any) -> str | None:
    """Why these raw ASGI headers are too large, or None when they are within the limits."""
    total = 0
    for name, value in headers:
        size = len(name) + len(value)
        if size > MAX_HEADER_FIELD_BYTES:
            shown = name[:64].decode("latin-1")
            return f"{shown}: header field is {size} bytes; the limit is {MAX_HEADER_FIELD_BYTES}"
        total += size
    if total > MAX_HEADER_BYTES:
        return f"headers: {total} bytes in all; the limit is {MAX_HEADER_BYTES}"
    return None


class EdgeMiddleware:
    """Litestar middleware shared by admission and query (runs for every matched route).

    Oversized headers raise ``RequestHeaderFieldsTooLarge`` before the handler, its
    dependencies (auth) or its parameters run; the app's exception handler turns it into the
    envelope. Every response gets the request's ``X-Request-Id`` (the one errors carry).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        rid = scope_request_id(scope)
        problem = header_problem(scope["headers"])
        if problem is not None:
            raise RequestHeaderFieldsTooLarge(problem)
        stamp = rid.encode("latin-1")

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                if not any(bytes(k).lower() == _REQUEST_ID_KEY for k, _ in headers):
                    headers.append((_REQUEST_ID_KEY, stamp))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, stamped)
