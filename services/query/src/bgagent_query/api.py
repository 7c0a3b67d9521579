"""The read API (Litestar): tasks, one task, a task's events; read-your-writes via ``min_seq``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from litestar import Litestar, Request, Response, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery

from bgagent_contracts import Status
from bgagent_contracts.auth import Principal, TokenTable
from bgagent_contracts.subjects import is_task_id
from bgagent_contracts.views import event_view, task_view
from bgagent_web import (
    BadRequest,
    NotFound,
    Unavailable,
    handle_exception,
    health_handlers,
    principal_dependency,
)

from . import store
from .errors import ProjectionLagError
from .watch import ProjectionWatch

logger = logging.getLogger(__name__)

TASKS_DEFAULT_LIMIT = 50
TASKS_MAX_LIMIT = 500
EVENTS_DEFAULT_LIMIT = 100
EVENTS_MAX_LIMIT = 1000
_STATUS_NAMES = ", ".join(s.value for s in Status)


def _int_param(name: str, raw: str | None, *, default: int, minimum: int, maximum: int | None = None) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}: expected an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and {maximum}" if maximum is not None else ""
        lower = f"between {minimum}{upper}" if maximum is not None else f">= {minimum}"
        raise BadRequest(f"{name}: must be {lower}, got {value}")
    return value


def _task_id(name: str, raw: str) -> str:
    if not is_task_id(raw):
        raise BadRequest(f"{name}: {raw[:40]!r} is not a task id (a 26-character ULID)")
    return raw


def _statuses(raw: str | None) -> list[Status]:
    if not raw:
        return []
    out: list[Status] = []
    for part in raw.split(","):
        try:
            out.append(Status(part.strip().upper()))
        except ValueError:
            raise BadRequest(
                f"status: unknown status {part.strip()!r}; expected one of {_STATUS_NAMES}"
            ) from None
    return out


def _on_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, ProjectionLagError):
        exc = Unavailable(str(exc), code="PROJECTION_LAG")
    elif isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.InterfaceError | OSError):
        logger.warning("database unavailable: %s", exc)
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
) -> Litestar:
    """The query HTTP app; the caller owns the pool, the watch and their lifecycles."""

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
                repo=repo or None,
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

    return Litestar(
        route_handlers=[list_tasks, get_task, list_events, *health_handlers(ready)],
        dependencies={"principal": Provide(principal_dependency(tokens))},
        exception_handlers={Exception: _on_error},
    )
