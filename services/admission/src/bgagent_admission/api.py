"""The HTTP edge: routes, bearer auth, and the one place errors become responses."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, Router, post
from litestar.di import NamedDependency, Provide
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
    EdgeMiddleware,
    NotFound,
    TooManyRequests,
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
    RateLimited,
    RequestAlreadyDecided,
    TaskAlreadyTerminal,
    TaskNotAwaitingApproval,
    TaskNotFound,
    TooMuchContention,
    UnsupportedMediaType,
)
from .handlers import Admission
from .openapi_doc import openapi_document
from .ratelimit import DECISIONS_PER_MINUTE, SlidingWindow
from .repos import verify_local_repo
from .requests import (
    ApprovalBody,
    CancelBody,
    CreateTaskBody,
    NudgeBody,
    check_idempotency_key,
    check_json_content_type,
    decode_body,
    validate_create,
    validate_decision,
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
    if isinstance(exc, RequestAlreadyDecided):
        return Conflict(exc.message, code="REQUEST_ALREADY_DECIDED")
    if isinstance(exc, TaskNotAwaitingApproval):
        return Conflict(exc.message, code="TASK_NOT_AWAITING_APPROVAL")
    if isinstance(exc, RateLimited):
        return TooManyRequests(exc.message, retry_after_s=exc.retry_after_s)
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
    hard_deny_rules: frozenset[str] = frozenset()
    """Rule ids nothing may allow: ``rule:<id>`` of these is refused at submit and at approve."""


def hard_deny_rules_from_env(env: Mapping[str, str] | None = None) -> frozenset[str]:
    """The hard-deny rule ids of the policy set the runners load: the starter set plus
    ``BGAGENT_POLICY_DIR``'s rules (the same variables as the runner's; per-repository rules are not
    configured yet). A policy set that does not load stops the service (PolicyLoadError)."""
    from bgagent_policy import HARD_DENY, PolicyEngine

    e = os.environ if env is None else env
    extra = e.get("BGAGENT_POLICY_DIR") or None
    disabled = [r.strip() for r in e.get("BGAGENT_POLICY_DISABLE", "").split(",") if r.strip()]
    engine = PolicyEngine.load(Path(extra) if extra else None, disabled=disabled)
    return frozenset(r.rule_id for r in engine.rules() if r.tier == HARD_DENY)


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
        hard_deny_rules=policy.hard_deny_rules,
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


@post("/tasks/{task_id:str}/approvals/{request_id:str}", status_code=HTTP_202_ACCEPTED)
async def decide_approval(
    request: AnyRequest,
    task_id: FromPath[str],
    request_id: FromPath[str],
    principal: NamedDependency[Principal],
    admission: NamedDependency[Admission],
    policy: NamedDependency[SubmitPolicy],
    decisions: NamedDependency[SlidingWindow],
) -> Response[Any]:
    raw = await _json_body(request)
    assert raw is not None
    decision = validate_decision(
        request_id, decode_body(raw, ApprovalBody), hard_deny_rules=policy.hard_deny_rules
    )
    wait = decisions.hit(principal.user_id)
    if wait is not None:
        raise RateLimited(
            f"more than {DECISIONS_PER_MINUTE} approval decisions in the last minute; retry later",
            retry_after_s=SlidingWindow.retry_after(wait),
        )
    result = await admission.decide(principal, task_id, decision)
    event = result.event
    assert event is not None
    data = {
        "task_id": result.state.task_id,
        "request_id": decision.request_id,
        "decision": decision.decision,
        "scope": decision.scope,
        "reason": decision.reason,
        "decided_by": principal.user_id,
        "decided_at": to_builtins(event.ts),
        "task": task_view(result.state),
    }
    return _reply(request, {"data": data, "meta": {"seq": result.seq}}, HTTP_202_ACCEPTED)


def create_app(
    admission: Admission,
    *,
    tokens: TokenTable,
    ready: Callable[[], Awaitable[bool]],
    local_roots: tuple[str, ...] = (),
    allow_task_network: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    hard_deny_rules: Collection[str] | None = None,
    decisions: SlidingWindow | None = None,
) -> Litestar:
    """The admission app over an Admission (its store and idempotency bucket are already connected).

    ``hard_deny_rules``: the rule ids nothing may pre-approve (default: the policy engine's starter
    set and BGAGENT_POLICY_DIR); ``decisions``: the approval-decision rate limit (default: 30 per
    minute per user).
    """
    policy = SubmitPolicy(
        local_roots=local_roots,
        allow_network=allow_task_network,
        hard_deny_rules=frozenset(hard_deny_rules_from_env() if hard_deny_rules is None else hard_deny_rules),
    )
    window = decisions if decisions is not None else SlidingWindow()

    def provide_admission() -> Admission:
        return admission

    def provide_policy() -> SubmitPolicy:
        return policy

    def provide_decisions() -> SlidingWindow:
        return window

    v1 = Router(
        path="/v1",
        route_handlers=[create_task, cancel_task, nudge_task, decide_approval],
        dependencies={
            "principal": Provide(principal_dependency(tokens)),
            "admission": Provide(provide_admission, sync_to_thread=False),
            "policy": Provide(provide_policy, sync_to_thread=False),
            "decisions": Provide(provide_decisions, sync_to_thread=False),
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
