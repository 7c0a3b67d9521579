"""HTTP errors and the one error envelope: ``{"error": {"code", "message", "request_id"}}``.

ApiError                      (status_code, code)
├── BadRequest                400 VALIDATION_ERROR
├── Unauthorized              401 UNAUTHORIZED
├── NotFound                  404 NOT_FOUND
├── Conflict                  409 CONFLICT / TASK_ALREADY_TERMINAL
└── Unavailable               503 SERVICE_UNAVAILABLE
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, ClassVar

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"


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


class Conflict(ApiError):
    status_code = 409
    default_code = "CONFLICT"


class Unavailable(ApiError):
    status_code = 503
    default_code = "SERVICE_UNAVAILABLE"


def request_id(request: Request[Any, Any, Any]) -> str:
    """The caller's X-Request-Id, or one made for this request (stable within it)."""
    rid = request.scope.get("state", {}).get("request_id")
    if isinstance(rid, str):
        return rid
    rid = request.headers.get(REQUEST_ID_HEADER) or secrets.token_hex(8)
    request.scope.setdefault("state", {})["request_id"] = rid
    return rid


def envelope(request: Request[Any, Any, Any], status: int, code: str, message: str) -> Response[Any]:
    rid = request_id(request)
    return Response(
        {"error": {"code": code, "message": message, "request_id": rid}},
        status_code=status,
        headers={REQUEST_ID_HEADER: rid},
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
    if isinstance(exc, ApiError):
        return envelope(request, exc.status_code, exc.code, exc.message)
    if isinstance(exc, ValidationException):
        return envelope(request, 400, "VALIDATION_ERROR", _validation_message(exc))
    if isinstance(exc, HTTPException):
        code = {401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(
            exc.status_code, "HTTP_ERROR"
        )
        if exc.status_code == 400:
            code = "VALIDATION_ERROR"
        return envelope(request, exc.status_code, code, exc.detail)
    logger.exception("unhandled error", extra={"request_id": request_id(request)})
    return envelope(request, 500, "INTERNAL_ERROR", "internal error; the request id is in the logs")
