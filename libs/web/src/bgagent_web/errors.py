"""HTTP errors and the one error envelope: ``{"error": {"code", "message", "request_id"}}``.

ApiError                        500 INTERNAL_ERROR    (status_code, default_code; other codes via code=)
├── BadRequest                  400 VALIDATION_ERROR
├── Unauthorized                401 UNAUTHORIZED
├── NotFound                    404 NOT_FOUND
├── Conflict                    409 CONFLICT, TASK_ALREADY_TERMINAL, IDEMPOTENCY_KEY_REUSED,
│                                   CONCURRENT_UPDATE, REQUEST_ALREADY_DECIDED, TASK_NOT_AWAITING_APPROVAL
├── PayloadTooLarge             413 PAYLOAD_TOO_LARGE
├── UnsupportedMediaType        415 UNSUPPORTED_MEDIA_TYPE
├── TooManyRequests             429 RATE_LIMITED      (with Retry-After)
├── RequestHeaderFieldsTooLarge 431 HEADERS_TOO_LARGE
└── Unavailable                 503 SERVICE_UNAVAILABLE, PROJECTION_LAG

Litestar's own HTTP errors map by status (405 METHOD_NOT_ALLOWED; any other 4xx HTTP_ERROR).
Every code a response can carry is in ``ERROR_CODES`` (status, meaning, what to do): the
services pass the extra codes with ``code=``, and docs/errors.md is checked against the registry.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any, ClassVar

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
_CALLER_REQUEST_ID = re.compile(r"^[!-~]{1,128}$")
"""A caller's X-Request-Id is echoed only when it is 1-128 visible ASCII characters."""


@dataclass(frozen=True)
class ErrorCode:
    """One stable error code: the HTTP status it comes with, what it means and what the caller can do."""

    code: str
    status: int | None
    """None: the status of the HTTP error itself (any other 4xx)."""
    meaning: str
    action: str


ERROR_CODES: tuple[ErrorCode, ...] = (
    ErrorCode(
        "VALIDATION_ERROR",
        400,
        "A parameter, header or body field is wrong; the message starts with its name.",
        "Fix the named field and send the request again.",
    ),
    ErrorCode(
        "UNAUTHORIZED",
        401,
        "The bearer token is missing or unknown.",
        "Send `Authorization: Bearer <token>` with a token the server knows (`bgagent login`).",
    ),
    ErrorCode(
        "NOT_FOUND",
        404,
        "No such route, or no such task, or the task belongs to someone else.",
        "Check the URL and the task id (`bgagent list`).",
    ),
    ErrorCode(
        "METHOD_NOT_ALLOWED",
        405,
        "The route exists but not with this HTTP method.",
        "Use the method the API reference gives for the route.",
    ),
    ErrorCode(
        "CONFLICT",
        409,
        "The request conflicts with the current state of the resource.",
        "Read the resource again and decide whether to retry.",
    ),
    ErrorCode(
        "TASK_ALREADY_TERMINAL",
        409,
        "The task has finished (COMPLETED, FAILED, CANCELLED or TIMED_OUT); nothing can change it.",
        "Nothing to do; submit a new task if more work is needed.",
    ),
    ErrorCode(
        "IDEMPOTENCY_KEY_REUSED",
        409,
        "The Idempotency-Key already names a task created from a different request.",
        "Use a new key for a new request, or resend the original request unchanged.",
    ),
    ErrorCode(
        "CONCURRENT_UPDATE",
        409,
        "The task kept changing under every retry of the write (the runner was appending events).",
        "Retry shortly; nothing was appended.",
    ),
    ErrorCode(
        "REQUEST_ALREADY_DECIDED",
        409,
        "The approval request was already approved, denied or expired (a decision won before this one).",
        "Nothing to do; `bgagent status <task>` shows what happened.",
    ),
    ErrorCode(
        "TASK_NOT_AWAITING_APPROVAL",
        409,
        "The task is not waiting on this request any more (for example, a cancel was requested).",
        "Nothing to decide; check the task with `bgagent status <task>`.",
    ),
    ErrorCode(
        "PAYLOAD_TOO_LARGE",
        413,
        "The request body is larger than the server's limit (`BGAGENT_MAX_BODY_BYTES`).",
        "Send a smaller body (descriptions and messages are limited to 2000 characters).",
    ),
    ErrorCode(
        "UNSUPPORTED_MEDIA_TYPE",
        415,
        "The body is not declared as JSON.",
        "Send `Content-Type: application/json`.",
    ),
    ErrorCode(
        "RATE_LIMITED",
        429,
        "Too many requests of this kind from this user in the last minute (approval decisions: 30).",
        "Wait the `Retry-After` seconds, then send the request again.",
    ),
    ErrorCode(
        "HEADERS_TOO_LARGE",
        431,
        "One header field or all header fields together exceed the limit (4 KiB per field, 8 KiB in all).",
        "Send fewer or shorter headers.",
    ),
    ErrorCode(
        "HTTP_ERROR",
        None,
        "Another client error the HTTP framework raised, with its own 4xx status.",
        "Read the message; report it if it persists.",
    ),
    ErrorCode(
        "INTERNAL_ERROR",
        500,
        "A bug: the server failed unexpectedly; details are logged under the request id.",
        "Retry; if it persists, report the request id.",
    ),
    ErrorCode(
        "SERVICE_UNAVAILABLE",
        503,
        "A dependency (NATS or PostgreSQL) is not answering.",
        "Retry with backoff; check the service's `/readyz`.",
    ),
    ErrorCode(
        "PROJECTION_LAG",
        503,
        "The read model had not reached the requested `min_seq` within the wait bound.",
        "Retry the read shortly (the projector is behind or stopped).",
    ),
)
CODES: dict[str, ErrorCode] = {c.code: c for c in ERROR_CODES}


class ApiError(Exception):
    status_code: ClassVar[int] = 500
    default_code: ClassVar[str] = "INTERNAL_ERROR"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code


class BadRequest(ApiError):
    status_code = 400
    default_code = "VALIDATION_ERROR"


class Unauthorized(ApiError):
    status_code = 401
    default_code = "UNAUTHORIZED"


class NotFound(ApiError):
    status_code = 404
    default_code = "NOT_FOUND"


class PayloadTooLarge(ApiError):
    status_code = 413
    default_code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(ApiError):
    status_code = 415
    default_code = "UNSUPPORTED_MEDIA_TYPE"


class TooManyRequests(ApiError):
    status_code = 429
    default_code = "RATE_LIMITED"

    def __init__(self, message: str, *, code: str | None = None, retry_after_s: int = 60) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class RequestHeaderFieldsTooLarge(ApiError):
    status_code = 431
    default_code = "HEADERS_TOO_LARGE"


class Conflict(ApiError):
    status_code = 409
    default_code = "CONFLICT"


RETRY_AFTER_S = 5
"""``Retry-After`` of every 503 unless the error names its own: long enough for a restart, short enough
that a client retries soon after a dependency comes back."""


class Unavailable(ApiError):
    status_code = 503
    default_code = "SERVICE_UNAVAILABLE"

    def __init__(self, message: str, *, code: str | None = None, retry_after_s: int = RETRY_AFTER_S) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


_HTTP_CODES = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
    431: "HEADERS_TOO_LARGE",
    503: "SERVICE_UNAVAILABLE",
}
"""Litestar's own HTTPExceptions by status → our code (other 4xx: HTTP_ERROR; other 5xx: INTERNAL_ERROR)."""


def request_id(request: Request[Any, Any, Any]) -> str:
    """The caller's X-Request-Id (if sane), or one made for this request (stable within it)."""
    return scope_request_id(request.scope)


def scope_request_id(scope: Any) -> str:
    """``request_id`` for a raw ASGI scope (kept in ``scope["state"]``, shared with the request)."""
    state = scope.setdefault("state", {})
    rid = state.get("request_id")
    if isinstance(rid, str):
        return rid
    rid = secrets.token_hex(8)
    for name, value in scope.get("headers", ()):
        if name.lower() == b"x-request-id":
            text: str = value.decode("latin-1")
            if _CALLER_REQUEST_ID.match(text):
                rid = text
            break
    state["request_id"] = rid
    return rid


def envelope(
    request: Request[Any, Any, Any],
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    rid = request_id(request)
    return Response(
        {"error": {"code": code, "message": message, "request_id": rid}},
        status_code=status,
        headers={**(headers or {}), REQUEST_ID_HEADER: rid},
    )


def _validation_message(exc: ValidationException) -> str:
    extra = exc.extra if isinstance(exc.extra, list) else []
    parts = []
    for item in extra:
        if isinstance(item, dict):
            key = item.get("key")
            msg = item.get("message", "invalid")
            parts.append(f"{key}: {msg}" if key else str(msg))
    return "; ".join(parts) or exc.detail or "invalid request"


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Translate every error to the envelope; unknown errors are logged and become 500."""
    if isinstance(exc, (Unavailable, TooManyRequests)):
        retry = {"Retry-After": str(exc.retry_after_s)}
        return envelope(request, exc.status_code, exc.code, exc.message, headers=retry)
    if isinstance(exc, ApiError):
        return envelope(request, exc.status_code, exc.code, exc.message)
    if isinstance(exc, ValidationException):
        return envelope(request, 400, "VALIDATION_ERROR", _validation_message(exc))
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
        detail = exc.detail
        if exc.status_code == 413:
            detail = f"request body is larger than the limit: {exc.detail}"
        return envelope(request, exc.status_code, code, detail, headers=dict(exc.headers or {}))  # e.g. Allow
    if isinstance(exc, HTTPException) and exc.status_code == 503:
        retry = {"Retry-After": str(RETRY_AFTER_S), **dict(exc.headers or {})}
        return envelope(request, 503, "SERVICE_UNAVAILABLE", exc.detail, headers=retry)
    logger.exception("unhandled error", extra={"request_id": request_id(request)})
    return envelope(request, 500, "INTERNAL_ERROR", "internal error; the request id is in the logs")
