"""HTTP plumbing shared by admission and query: error envelope, bearer auth, health, serving."""

from .auth import principal_dependency
from .errors import (
    REQUEST_ID_HEADER,
    ApiError,
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    envelope,
    handle_exception,
    request_id,
)
from .serve import health_handlers, serve

__all__ = [
    "REQUEST_ID_HEADER",
    "ApiError",
    "BadRequest",
    "Conflict",
    "NotFound",
    "PayloadTooLarge",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "envelope",
    "handle_exception",
    "health_handlers",
    "principal_dependency",
    "request_id",
    "serve",
]
