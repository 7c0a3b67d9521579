"""The read API (Litestar): tasks, one task, a task's events; read-your-writes via ``min_seq``."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import ServerSentEvent
from nats.aio.client import Client

from bgagent_contracts import Status, to_builtins
from bgagent_contracts.auth import Principal, TokenTable
from bgagent_contracts.subjects import DEFAULT_STREAM, is_task_id
from bgagent_contracts.submission import MAX_REPO_CHARS
from bgagent_contracts.views import event_view, task_view
from bgagent_policy import HARD_DENY, HARD_GATE, PolicyEngine, RuleInfo
from bgagent_web import (
    BadRequest,
    EdgeMiddleware,
    NotFound,
    Unavailable,
    handle_exception,
    health_handlers,
    principal_dependency,
)
from bgagent_web import openapi as oa
from bgagent_web.telemetry import otel_plugin

from . import store
from .errors import ProjectionLagError
from .limits import (
    APPROVALS_DEFAULT_LIMIT,
    APPROVALS_MAX_LIMIT,
    EVENTS_DEFAULT_LIMIT,
    EVENTS_MAX_LIMIT,
    MAX_SEQ,
    TASKS_DEFAULT_LIMIT,
    TASKS_MAX_LIMIT,
)
from .openapi_doc import openapi_document
from .sse import EventStreams
from .watch import ProjectionWatch

logger = logging.getLogger(__name__)

_REPO_SLUG = re.compile(r"^[A-Za-z0-9._-]+$")
"""Cursors (``after``, ``min_seq``) are stream sequences and must fit a Postgres bigint."""
_STATUS_NAMES = ", ".join(s.value for s in Status)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _shown(raw: str) -> str:
    """A parameter value as quoted in a message: at most 40 characters, escapes for the rest."""
    return repr(raw[:40]) + ("…" if len(raw) > 40 else "")


def _int_param(name: str, raw: str | None, *, default: int, minimum: int, maximum: int = MAX_SEQ) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:  # also the digit limit of int(): "Exceeds the limit (4300 digits)"
        raise BadRequest(f"{name}: expected an integer, got {_shown(raw)}") from None
    if not minimum <= value <= maximum:
        shown = value if len(raw) <= 40 else _shown(raw)
        raise BadRequest(f"{name}: must be between {minimum} and {maximum}, got {shown}")
    return value


def _task_id(name: str, raw: str) -> str:
    """A ULID (lower case is accepted and upper-cased, as admission does)."""
    upper = raw.upper()
    if not is_task_id(upper):
        raise BadRequest(f"{name}: {_shown(raw)} is not a task id (a 26-character ULID)")
    return upper


def _repo(raw: str | None) -> str | None:
    """The repo filter: compared as text, so only what can never be stored is refused (NUL and
    other control characters would also break the query itself)."""
    if not raw:
        return None
    if len(raw) > MAX_REPO_CHARS:
        raise BadRequest(f"repo: at most {MAX_REPO_CHARS} characters (got {len(raw)})")
    bad = _CONTROL.search(raw)
    if bad is not None:
        raise BadRequest(f"repo: contains the control character U+{ord(bad.group()):04X}")
    return raw


def _statuses(raw: str | None) -> list[Status]:
    if not raw:
        return []
    parts = raw.split(",")
    if len(parts) > len(Status):
        raise BadRequest(f"status: at most {len(Status)} statuses (got {len(parts)})")
    out: list[Status] = []
    for part in parts:
        try:
            out.append(Status(part.strip().upper()))
        except ValueError:
            raise BadRequest(
                f"status: unknown status {_shown(part.strip())}; expected one of {_STATUS_NAMES}"
            ) from None
    return out


def _repo_part(name: str, raw: str) -> str:
    if not _REPO_SLUG.match(raw) or raw in (".", "..") or len(raw) > 100:
        raise BadRequest(f"repo: {_shown(raw)} is not a valid {name} (letters, digits, '.', '_' and '-')")
    return raw


def policy_rules_from_env(env: Mapping[str, str] | None = None) -> list[RuleInfo]:
    """The rules the runners load: the starter set plus ``BGAGENT_POLICY_DIR``'s, minus the gate rules
    of ``BGAGENT_POLICY_DISABLE`` (the runner's variables). A set that does not load stops the service."""
    e = os.environ if env is None else env
    extra = e.get("BGAGENT_POLICY_DIR") or None
    disabled = [r.strip() for r in e.get("BGAGENT_POLICY_DISABLE", "").split(",") if r.strip()]
    return PolicyEngine.load(Path(extra) if extra else None, disabled=disabled).rules()


def approval_view(pending: store.PendingApproval) -> dict[str, Any]:
    """One open approval request as ``GET /v1/approvals`` returns it."""
    state, request = pending.state, pending.request
    return {
        "task_id": state.task_id,
        "user_id": state.user_id,
        "repo": state.repo,
        "request_id": request.request_id,
        "tool_name": request.tool_name,
        "input_preview": request.input_preview,
        "rule_ids": list(request.rule_ids),
        "severity": request.severity,
        "deadline": to_builtins(request.deadline),
        "requested_at": to_builtins(request.requested_at),
        "attempt": request.attempt,
        "waiting": state.pending_approval == request.request_id,
    }


def policies_view(repo: str, rules: Sequence[RuleInfo]) -> dict[str, Any]:
    """The rules that apply to a repository's tasks, by tier."""
    return {
        "repo": repo,
        "hard_deny": [
            {"rule_id": r.rule_id, "severity": r.severity, "category": r.category, "summary": r.summary}
            for r in rules
            if r.tier == HARD_DENY
        ],
        "hard_gate": [
            {
                "rule_id": r.rule_id,
                "severity": r.severity,
                "category": r.category,
                "approval_timeout_s": r.approval_timeout_s,
                "summary": r.summary,
            }
            for r in rules
            if r.tier == HARD_GATE
        ],
    }


DATABASE_DOWN: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # connection lost or refused by the server
    asyncpg.InterfaceError,  # e.g. the connection closed under a query
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up, crash recovery
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    OSError,  # refused, reset, unreachable
    TimeoutError,  # connect or pool acquire timed out
)
"""Errors that mean PostgreSQL is not answering now: 503 with Retry-After, never a 500."""


def _on_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, ProjectionLagError):
        exc = Unavailable(str(exc), code="PROJECTION_LAG")
    elif isinstance(exc, DATABASE_DOWN):
        logger.warning("database unavailable: %r", exc)
        exc = Unavailable("the read model database is unavailable; retry shortly")
    return handle_exception(request, exc)


def create_app(
    *,
    pool: Any,
    watch: ProjectionWatch,
    tokens: TokenTable,
    prefix: str,
    ready: Callable[[], Awaitable[bool]],
    min_seq_wait_s: float = 5.0,
    nc: Client | None = None,
    stream: str = DEFAULT_STREAM,
    sse_ping_s: float = 15.0,
    sse_max_streams: int = 1000,
    policy_rules: Sequence[RuleInfo] | None = None,
) -> Litestar:
    """The query HTTP app; the caller owns the pool, the watch, ``nc`` and their lifecycles.

    ``nc`` (a NATS connection allowed to follow ``stream``) serves the live part of the event
    streams; without it the stream route answers 503. ``policy_rules``: what
    ``/v1/repos/{owner}/{name}/policies`` lists (default: the policy set of BGAGENT_POLICY_DIR and
    BGAGENT_POLICY_DISABLE).
    """
    rules = list(policy_rules_from_env() if policy_rules is None else policy_rules)
    streams = EventStreams(
        pool=pool, nc=nc, stream=stream, prefix=prefix, ping_s=sse_ping_s, max_streams=sse_max_streams
    )

    async def _wait(min_seq: str | None) -> None:
        wanted = _int_param("min_seq", min_seq, default=0, minimum=0)
        if wanted > 0:
            await watch.wait_for(wanted, min_seq_wait_s)

    @get("/v1/tasks")
    async def list_tasks(
        principal: NamedDependency[Principal],
        status: FromQuery[str | None] = None,
        repo: FromQuery[str | None] = None,
        limit: FromQuery[str | None] = None,
        before: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        """Tasks newest first; users see their own, admins all."""
        page_size = _int_param(
            "limit", limit, default=TASKS_DEFAULT_LIMIT, minimum=1, maximum=TASKS_MAX_LIMIT
        )
        cursor = _task_id("before", before) if before else None
        async with pool.acquire() as conn:
            page = await store.list_tasks(
                conn,
                user_id=None if principal.admin else principal.user_id,
                statuses=_statuses(status),
                repo=_repo(repo),
                before=cursor,
                limit=page_size,
            )
        data = [task_view(state, queue_position=pos) for state, pos in page.items]
        next_before = page.items[-1][0].task_id if page.has_more and page.items else None
        return {"data": data, "pagination": {"next_before": next_before, "has_more": page.has_more}}

    @get("/v1/tasks/{task_id:str}")
    async def get_task(
        principal: NamedDependency[Principal], task_id: FromPath[str], min_seq: FromQuery[str | None] = None
    ) -> dict[str, Any]:
        """One task; another user's task is 404."""
        tid = _task_id("task_id", task_id)
        await _wait(min_seq)
        async with pool.acquire() as conn:
            found = await store.get_task(conn, tid)
        if found is None or not principal.may_see(found[0].user_id):
            raise NotFound(f"task {tid} not found")
        state, position = found
        return {"data": task_view(state, queue_position=position)}

    @get("/v1/tasks/{task_id:str}/events")
    async def list_events(
        principal: NamedDependency[Principal],
        task_id: FromPath[str],
        after: FromQuery[str | None] = None,
        limit: FromQuery[str | None] = None,
        min_seq: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        """A task's events after ``after`` (a stream sequence), oldest first."""
        tid = _task_id("task_id", task_id)
        after_seq = _int_param("after", after, default=0, minimum=0)
        page_size = _int_param(
            "limit", limit, default=EVENTS_DEFAULT_LIMIT, minimum=1, maximum=EVENTS_MAX_LIMIT
        )
        await _wait(min_seq)
        async with pool.acquire() as conn:
            found = await store.get_task(conn, tid)
            if found is None or not principal.may_see(found[0].user_id):
                raise NotFound(f"task {tid} not found")
            page = await store.task_events(conn, tid, prefix=prefix, after=after_seq, limit=page_size)
        next_after = page.records[-1].seq if page.records else None
        return {
            "data": [event_view(r) for r in page.records],
            "pagination": {"next_after": next_after, "has_more": page.has_more},
        }

    @get("/v1/tasks/{task_id:str}/events/stream")
    async def stream_events(
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        task_id: FromPath[str],
        after: FromQuery[str | None] = None,
        min_seq: FromQuery[str | None] = None,
    ) -> ServerSentEvent:
        """A task's events after the cursor as Server-Sent Events, live until the terminal one."""
        tid = _task_id("task_id", task_id)
        last_event_id = request.headers.get("last-event-id")
        if last_event_id is not None and last_event_id.strip():
            cursor = _int_param("Last-Event-ID", last_event_id.strip(), default=0, minimum=0)
            _int_param("after", after, default=0, minimum=0)
        else:
            cursor = _int_param("after", after, default=0, minimum=0)
        await _wait(min_seq)
        async with pool.acquire() as conn:
            found = await store.get_task(conn, tid)
        if found is None or not principal.may_see(found[0].user_id):
            raise NotFound(f"task {tid} not found")
        streams.admit()
        return streams.response(tid, cursor, terminal=found[0].status.terminal)

    @get("/v1/approvals")
    async def list_approvals(
        principal: NamedDependency[Principal],
        status: FromQuery[str | None] = None,
        limit: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        """Open approval requests; users see their own, admins all."""
        if status not in (None, "", "pending"):
            raise BadRequest(f"status: {_shown(status)} is not supported; only pending")
        size = _int_param(
            "limit", limit, default=APPROVALS_DEFAULT_LIMIT, minimum=1, maximum=APPROVALS_MAX_LIMIT
        )
        async with pool.acquire() as conn:
            found, more = await store.pending_approvals(
                conn, user_id=None if principal.admin else principal.user_id, limit=size
            )
        return {"data": [approval_view(p) for p in found], "pagination": {"has_more": more}}

    @get("/v1/repos/{owner:str}/{name:str}/policies", sync_to_thread=False)
    def list_policies(
        principal: NamedDependency[Principal], owner: FromPath[str], name: FromPath[str]
    ) -> dict[str, Any]:
        """The rules every task of the repository is checked against."""
        repo = f"{_repo_part('owner', owner)}/{_repo_part('name', name)}"
        return {"data": policies_view(repo, rules)}

    return Litestar(
        route_handlers=[
            list_approvals,
            list_policies,
            list_tasks,
            get_task,
            list_events,
            stream_events,
            *health_handlers(ready),
            *oa.schema_handlers(openapi_document()),
        ],
        dependencies={"principal": Provide(principal_dependency(tokens))},
        exception_handlers={Exception: _on_error},
        middleware=[EdgeMiddleware],
        plugins=[otel_plugin()],
        openapi_config=None,
        state=State({"event_streams": streams}),
    )
