"""The HTTP edge: routes, bearer auth, and the one place errors become responses."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, Router, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED

from bgagent_contracts import TaskType, to_builtins
from bgagent_contracts.auth import Principal, TokenTable
from bgagent_contracts.decide import MAX_NUDGE_CHARS
from bgagent_contracts.events import MAX_NUMBER
from bgagent_contracts.submission import (
    BUDGET_RANGE_USD,
    DEFAULT_MAX_TURNS,
    MAX_DESCRIPTION_CHARS,
    MAX_REASON_CHARS,
    MAX_REPO_CHARS,
    MAX_TURNS_RANGE,
)
from bgagent_contracts.views import task_view
from bgagent_web import (
    REQUEST_ID_HEADER,
    ApiError,
    BadRequest,
    Conflict,
    EdgeMiddleware,
    NotFound,
    Unavailable,
    handle_exception,
    health_handlers,
    principal_dependency,
    request_id,
)
from bgagent_web import UnsupportedMediaType as HttpUnsupportedMediaType
from bgagent_web import openapi as oa
from bgagent_web.telemetry import otel_plugin

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
from .repos import verify_local_repo
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
    """Every error of every route ends here, and leaves through bgagent_web.handle_exception
    (which also turns Litestar's 413 for an oversized body into PAYLOAD_TOO_LARGE)."""
    if isinstance(exc, AdmissionError):
        return handle_exception(request, to_api_error(exc))
    return handle_exception(request, exc)


def _reply(request: AnyRequest, body: dict[str, Any], status: int) -> Response[Any]:
    return Response(body, status_code=status, headers={REQUEST_ID_HEADER: request_id(request)})


async def _json_body(request: AnyRequest, *, optional: bool = False) -> bytes | None:
    raw = await request.body()
    if optional and not raw.strip():
        return None
    check_json_content_type(request.content_type[0])
    return raw


class SubmitPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """What this server lets a submission ask for (from its settings)."""

    local_roots: tuple[str, ...] = ()
    """Local repositories are accepted only under these (BGAGENT_LOCAL_REPO_ROOTS)."""
    allow_network: bool = False
    """Tasks may ask for network access in the agent loop (BGAGENT_ALLOW_TASK_NETWORK)."""


@post("/tasks", status_code=HTTP_201_CREATED)
async def create_task(
    request: AnyRequest,
    principal: NamedDependency[Principal],
    admission: NamedDependency[Admission],
    policy: NamedDependency[SubmitPolicy],
) -> Response[Any]:
    key = check_idempotency_key(request.headers.get(IDEMPOTENCY_HEADER))
    raw = await _json_body(request)
    assert raw is not None
    command = validate_create(
        decode_body(raw, CreateTaskBody),
        local_roots=policy.local_roots,
        allow_network=policy.allow_network,
    )
    await verify_local_repo(command.repo, policy.local_roots)
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


# --- the OpenAPI document -------------------------------------------------------------------------

_TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]*$"
"""Free text: no control characters but tab, newline and carriage return (CR/CRLF become LF)."""
_SLUG = r"^\s*[A-Za-z0-9._-]+/[A-Za-z0-9._-]+\s*$"
_SLUG_OR_LOCAL = (
    r"^\s*(?:[A-Za-z0-9._-]+/[A-Za-z0-9._-]+|(?:file://)?/[^\x00-\x1f\x7f-\x9f\u2028\u2029]*)\s*$"
)
_BODY_ERRORS = {413: ["PAYLOAD_TOO_LARGE"], 415: ["UNSUPPORTED_MEDIA_TYPE"]}
_EDGE_ERRORS = {401: ["UNAUTHORIZED"], 431: ["HEADERS_TOO_LARGE"], 503: ["SERVICE_UNAVAILABLE"]}


def _create_body(local_repos: bool) -> oa.JSON:
    low, high = MAX_TURNS_RANGE
    number = {"type": "integer", "minimum": 1, "maximum": MAX_NUMBER}
    repo_rule = "`owner/name` (letters, digits, `.`, `_`, `-`; neither part `.` or `..`)"
    if local_repos:
        repo_rule += "; this server also accepts an absolute path or `file:///path`"
    schema = oa.obj(
        {
            "repo": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_REPO_CHARS,
                "pattern": _SLUG_OR_LOCAL if local_repos else _SLUG,
                "description": repo_rule + "; surrounding whitespace is trimmed",
            },
            "task_type": {"enum": [*(t.value for t in TaskType), None], "default": TaskType.NEW_TASK.value},
            "issue_number": oa.nullable(number),
            "pr_number": oa.nullable(
                {**number, "description": "required by pr_iteration and pr_review, refused by new_task"}
            ),
            "description": oa.nullable(
                {
                    "type": "string",
                    "maxLength": MAX_DESCRIPTION_CHARS,
                    "pattern": _TEXT,
                    "description": "trimmed; blank counts as absent; a new_task needs it or issue_number",
                }
            ),
            "max_turns": oa.nullable(
                {"type": "integer", "minimum": low, "maximum": high, "default": DEFAULT_MAX_TURNS}
            ),
            "max_budget_usd": oa.nullable(
                {
                    "type": "number",
                    "minimum": BUDGET_RANGE_USD[0],
                    "maximum": BUDGET_RANGE_USD[1],
                    "description": "absent: no budget",
                }
            ),
            "trace": oa.nullable({"type": "boolean", "default": False}),
            "network": oa.nullable(
                {
                    "type": "boolean",
                    "default": False,
                    "description": "the agent's commands may reach the network; refused unless the server "
                    "allows it",
                }
            ),
        },
        required=["repo"],
        description="`null` is the same as leaving a field out; unknown fields are refused (all named).",
    )
    example = {
        "repo": "acme/widgets",
        "issue_number": 42,
        "description": "Fix the flaky test",
        "max_turns": 50,
    }
    return {"required": True, "content": oa.json_content(schema, example=example)}


def _optional_text_body(name: str, max_chars: int, *, required: bool, example: str) -> oa.JSON:
    rule = {"type": "string", "maxLength": max_chars, "pattern": _TEXT, "description": "trimmed"}
    if required:
        prop = {**rule, "minLength": 1, "description": "trimmed; must not be blank"}
    else:
        prop = oa.nullable(rule)
    schema = oa.obj({name: prop}, required=[name] if required else [])
    return {"required": required, "content": oa.json_content(schema, example={name: example})}


def openapi_document(*, local_repos: bool, max_body_bytes: int) -> oa.JSON:
    """The admission API as OpenAPI 3.1 (served at /schema/openapi.json)."""
    written = oa.obj({"data": oa.ref("Task"), "meta": oa.obj({"seq": {"type": "integer", "minimum": 1}})})
    nudged = oa.obj(
        {
            "data": oa.obj(
                {"task_id": {"type": "string"}, "nudge_id": {"type": "string"}, "submitted_at": oa.TIME}
            ),
            "meta": oa.obj({"seq": {"type": "integer", "minimum": 1}}),
        }
    )
    link_params = {"task_id": "$response.body#/data/task_id"}
    links = {
        "CancelTask": {"operationId": "cancelTask", "parameters": link_params},
        "NudgeTask": {"operationId": "nudgeTask", "parameters": link_params},
    }
    created = {"data": oa.example_task(1), "meta": {"seq": 101}}
    idempotency = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "The same key (per user) returns the same task with 200, never a second task.",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"},
    }
    limit_note = f" Bodies are limited to {max_body_bytes} bytes (413)."
    operations = [
        oa.Operation(
            "POST",
            "/v1/tasks",
            "createTask",
            "Submit a task",
            {
                "201": oa.response(
                    "Created; `meta.seq` is the seq of task_submitted", written, example=created, links=links
                ),
                "200": oa.response(
                    "The task this Idempotency-Key already created", written, example=created, links=links
                ),
                **oa.errors(
                    {
                        400: ["VALIDATION_ERROR"],
                        409: ["IDEMPOTENCY_KEY_REUSED", "CONCURRENT_UPDATE"],
                        **_BODY_ERRORS,
                        **_EDGE_ERRORS,
                    }
                ),
            },
            description="Validates, appends `task_submitted` and returns the task." + limit_note,
            tags=["tasks"],
            parameters=[idempotency],
            request_body=_create_body(local_repos),
        ),
        oa.Operation(
            "POST",
            "/v1/tasks/{task_id}/cancel",
            "cancelTask",
            "Cancel a task",
            {
                "202": oa.response(
                    "Accepted: cancelled at once if nobody started it, else requested (the runner stops it "
                    "between turns); a repeated cancel appends nothing and returns the last seq",
                    written,
                    example={"data": {**oa.example_task(4), "cancel_requested": True}, "meta": {"seq": 105}},
                ),
                **oa.errors(
                    {
                        400: ["VALIDATION_ERROR"],
                        404: ["NOT_FOUND"],
                        409: ["TASK_ALREADY_TERMINAL", "CONCURRENT_UPDATE"],
                        **_BODY_ERRORS,
                        **_EDGE_ERRORS,
                    }
                ),
            },
            description="The body is optional; an empty body needs no Content-Type." + limit_note,
            tags=["tasks"],
            parameters=[oa.TASK_ID_PARAM],
            request_body=_optional_text_body(
                "reason", MAX_REASON_CHARS, required=False, example="wrong repo"
            ),
        ),
        oa.Operation(
            "POST",
            "/v1/tasks/{task_id}/nudges",
            "nudgeTask",
            "Send the agent a message before its next model call",
            {
                "202": oa.response(
                    "Accepted: nudge_requested appended",
                    nudged,
                    example={
                        "data": {
                            "task_id": oa.EXAMPLE_TASK_ID,
                            "nudge_id": "01JBGAGENTEXAMP1E000000009",
                            "submitted_at": "2025-01-02T09:31:00Z",
                        },
                        "meta": {"seq": 105},
                    },
                ),
                **oa.errors(
                    {
                        400: ["VALIDATION_ERROR"],
                        404: ["NOT_FOUND"],
                        409: ["TASK_ALREADY_TERMINAL", "CONCURRENT_UPDATE"],
                        **_BODY_ERRORS,
                        **_EDGE_ERRORS,
                    }
                ),
            },
            description=limit_note.strip(),
            tags=["tasks"],
            parameters=[oa.TASK_ID_PARAM],
            request_body=_optional_text_body(
                "message", MAX_NUDGE_CHARS, required=True, example="also update the changelog"
            ),
        ),
        *oa.health_operations(),
    ]
    return oa.document(
        title="bgagent admission",
        version=version("bgagent-admission"),
        description="The write side: submit, cancel and nudge tasks. Every /v1 route needs a bearer token; "
        "a user acts only on their own tasks (others' are 404), an admin on all.",
        operations=operations,
    )


def create_app(
    admission: Admission,
    *,
    tokens: TokenTable,
    ready: Callable[[], Awaitable[bool]],
    local_roots: tuple[str, ...] = (),
    allow_task_network: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Litestar:
    """The admission app over an Admission (its store and idempotency bucket are already connected)."""
    policy = SubmitPolicy(local_roots=local_roots, allow_network=allow_task_network)

    def provide_admission() -> Admission:
        return admission

    def provide_policy() -> SubmitPolicy:
        return policy

    v1 = Router(
        path="/v1",
        route_handlers=[create_task, cancel_task, nudge_task],
        dependencies={
            "principal": Provide(principal_dependency(tokens)),
            "admission": Provide(provide_admission, sync_to_thread=False),
            "policy": Provide(provide_policy, sync_to_thread=False),
        },
    )
    document = openapi_document(local_repos=bool(local_roots), max_body_bytes=max_body_bytes)
    app = Litestar(
        route_handlers=[v1, *health_handlers(ready), *oa.schema_handlers(document)],
        exception_handlers={Exception: on_error},
        middleware=[EdgeMiddleware],
        plugins=[otel_plugin()],
        request_max_body_size=max_body_bytes,
        openapi_config=None,
    )
    return app
