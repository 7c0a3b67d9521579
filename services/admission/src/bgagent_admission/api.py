"""The HTTP edge: routes, bearer auth, and the one place errors become responses."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Litestar, Request, Response, Router, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED

from bgagent_contracts import to_builtins
from bgagent_contracts.auth import Principal, TokenTable
from bgagent_contracts.views import task_view
from bgagent_web import (
    REQUEST_ID_HEADER,
    ApiError,
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    handle_exception,
    health_handlers,
    principal_dependency,
    request_id,
)
from bgagent_web import UnsupportedMediaType as HttpUnsupportedMediaType

from .errors import (
    AdmissionError,
    BackendUnavailable,
    IdempotencyKeyReused,
    InvalidRequest,
    TaskAlreadyTerminal,
    TaskNotFound,
    TooMuchContention,
    UnsupportedMediaType,
)
from .handlers import Admission
from .requests import (
    CancelBody,
    CreateTaskBody,
    NudgeBody,
    check_idempotency_key,
    check_json_content_type,
    decode_body,
    validate_create,
    validate_message,
    validate_reason,
)

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
DEFAULT_MAX_BODY_BYTES = 64 * 1024

AnyRequest = Request[Any, Any, Any]


def to_api_error(exc: AdmissionError) -> ApiError:
    """Translate the service's errors to HTTP errors (status and stable code)."""
    if isinstance(exc, InvalidRequest):
        return BadRequest(exc.message)
    if isinstance(exc, UnsupportedMediaType):
        return HttpUnsupportedMediaType(exc.message)
    if isinstance(exc, TaskNotFound):
        return NotFound(exc.message)
    if isinstance(exc, TaskAlreadyTerminal):
        return Conflict(exc.message, code="TASK_ALREADY_TERMINAL")
    if isinstance(exc, IdempotencyKeyReused):
        return Conflict(exc.message, code="IDEMPOTENCY_KEY_REUSED")
    if isinstance(exc, TooMuchContention):
        return Conflict(exc.message, code="CONCURRENT_UPDATE")
    if isinstance(exc, BackendUnavailable):
        logger.warning("backend unavailable: %s", exc.message)
        return Unavailable("the event store is not answering; retry shortly")
    return ApiError(exc.message)


def on_error(request: AnyRequest, exc: Exception) -> Response[Any]:
    """Every error of every route ends here, and leaves through bgagent_web.handle_exception."""
    if isinstance(exc, AdmissionError):
        return handle_exception(request, to_api_error(exc))
    if isinstance(exc, HTTPException) and exc.status_code == 413:
        too_large = PayloadTooLarge(f"request body is larger than the limit: {exc.detail}")
        return handle_exception(request, too_large)
    return handle_exception(request, exc)


def _reply(request: AnyRequest, body: dict[str, Any], status: int) -> Response[Any]:
    return Response(body, status_code=status, headers={REQUEST_ID_HEADER: request_id(request)})


async def _json_body(request: AnyRequest, *, optional: bool = False) -> bytes | None:
    raw = await request.body()
    if optional and not raw.strip():
        return None
    check_json_content_type(request.content_type[0])
    return raw


@post("/tasks", status_code=HTTP_201_CREATED)
async def create_task(
    request: AnyRequest,
    principal: NamedDependency[Principal],
    admission: NamedDependency[Admission],
    allow_local_repos: NamedDependency[bool],
) -> Response[Any]:
    key = check_idempotency_key(request.headers.get(IDEMPOTENCY_HEADER))
    raw = await _json_body(request)
    assert raw is not None
    command = validate_create(decode_body(raw, CreateTaskBody), allow_local_repos=allow_local_repos)
    result = await admission.submit(principal, command, key)
    status = HTTP_201_CREATED if result.created else HTTP_200_OK
    return _reply(request, {"data": task_view(result.state), "meta": {"seq": result.seq}}, status)


@post("/tasks/{task_id:str}/cancel", status_code=HTTP_202_ACCEPTED)
async def cancel_task(
    request: AnyRequest,
    task_id: FromPath[str],
    principal: NamedDependency[Principal],
    admission: NamedDependency[Admission],
) -> Response[Any]:
    raw = await _json_body(request, optional=True)
    reason = validate_reason(decode_body(raw, CancelBody)) if raw is not None else None
    result = await admission.cancel(principal, task_id, reason)
    return _reply(request, {"data": task_view(result.state), "meta": {"seq": result.seq}}, HTTP_202_ACCEPTED)


@post("/tasks/{task_id:str}/nudges", status_code=HTTP_202_ACCEPTED)
async def nudge_task(
    request: AnyRequest,
    task_id: FromPath[str],
    principal: NamedDependency[Principal],
    admission: NamedDependency[Admission],
) -> Response[Any]:
    raw = await _json_body(request)
    assert raw is not None
    message = validate_message(decode_body(raw, NudgeBody))
    result = await admission.nudge(principal, task_id, message)
    data = {
        "task_id": result.task_id,
        "nudge_id": result.nudge_id,
        "submitted_at": to_builtins(result.submitted_at),
    }
    return _reply(request, {"data": data, "meta": {"seq": result.seq}}, HTTP_202_ACCEPTED)


def create_app(
    admission: Admission,
    *,
    tokens: TokenTable,
    ready: Callable[[], Awaitable[bool]],
    allow_local_repos: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Litestar:
    """The admission app over an Admission (its store and idempotency bucket are already connected)."""

    def provide_admission() -> Admission:
        return admission

    def provide_allow_local_repos() -> bool:
        return allow_local_repos

    v1 = Router(
        path="/v1",
        route_handlers=[create_task, cancel_task, nudge_task],
        dependencies={
            "principal": Provide(principal_dependency(tokens)),
            "admission": Provide(provide_admission, sync_to_thread=False),
            "allow_local_repos": Provide(provide_allow_local_repos, sync_to_thread=False),
        },
    )
    app = Litestar(
        route_handlers=[v1, *health_handlers(ready)],
        exception_handlers={Exception: on_error},
        request_max_body_size=max_body_bytes,
    )
    return app
