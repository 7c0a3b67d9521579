"""HTTP plumbing shared by admission and query: error envelope and codes, bearer auth, edge limits
(431), OpenAPI documents (``bgagent_web.openapi``), health, serving."""

from .auth import principal_dependency
from .edge import MAX_HEADER_BYTES, MAX_HEADER_FIELD_BYTES, EdgeMiddleware
from .errors import (
    CODES,
    ERROR_CODES,
    REQUEST_ID_HEADER,
    ApiError,
    BadRequest,
    Conflict,
    ErrorCode,
    NotFound,
    PayloadTooLarge,
    RequestHeaderFieldsTooLarge,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    envelope,
    handle_exception,
    request_id,
)
from .serve import health_handlers, serve, uvicorn_options

__all__ = [
    "CODES",
    "ERROR_CODES",
    "MAX_HEADER_BYTES",
    "MAX_HEADER_FIELD_BYTES",
    "REQUEST_ID_HEADER",
    "ApiError",
    "BadRequest",
    "Conflict",
    "EdgeMiddleware",
    "ErrorCode",
    "NotFound",
    "PayloadTooLarge",
    "RequestHeaderFieldsTooLarge",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "envelope",
    "handle_exception",
    "health_handlers",
    "principal_dependency",
    "request_id",
    "serve",
    "uvicorn_options",
]
