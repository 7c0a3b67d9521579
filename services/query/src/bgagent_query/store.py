"""Postgres access of the query service: projection writes, checkpoint, and the reads behind the API.

Every function takes an asyncpg connection (or pool for reads) so the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from bgagent_contracts import TERMINAL_STATUSES, OpenApproval, Recorded, Status, TaskState, decode_event
from bgagent_contracts.subjects import task_subject

NOTIFY_CHANNEL = "bgagent_projection"

_state_encoder = msgspec.json.Encoder()
_state_decoder = msgspec.json.Decoder(TaskState)

TASK_COLUMNS = ("task_id", "user_id", "status", "repo", "created_at", "updated_at", "last_seq", "state")
EVENT_COLUMNS = ("seq", "task_id", "type", "ts", "event")
POISON_COLUMNS = ("seq", "subject", "error", "raw", "recorded_at")

EventRow = tuple[int, str, str, datetime, str]
"""(seq, task_id, type, ts, event JSON as the stream holds it)."""
PoisonRow = tuple[int, str, str, bytes, datetime]
"""(seq, subject, error, raw bytes, recorded_at)."""


def _text(value: str) -> str:
    """Postgres text cannot hold NUL; JSON columns keep the escaped original."""
    return value.replace("\x00", "") if "\x00" in value else value


def encode_state(state: TaskState) -> str:
    return _state_encoder.encode(state).decode()


def decode_state(raw: str) -> TaskState:
    return _state_decoder.decode(raw)


def task_row(state: TaskState) -> tuple[Any, ...]:
    return (
        state.task_id,
        _text(state.user_id),
        state.status.value,
        _text(state.repo),
        state.created_at,
        state.updated_at,
        state.last_seq,
        encode_state(state),
    )


# --- checkpoint -------------------------------------------------------------------------------


async def ensure_checkpoint(conn: Any, name: str) -> int:
    await conn.execute(
        "INSERT INTO projector_checkpoint (name, last_seq) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING", name
    )
    return int(await conn.fetchval("SELECT last_seq FROM projector_checkpoint WHERE name = $1", name))


async def read_checkpoint(conn: Any, name: str) -> int:
    value = await conn.fetchval("SELECT last_seq FROM projector_checkpoint WHERE name = $1", name)
    return int(value or 0)


async def lock_checkpoint(conn: Any, name: str) -> int:
    """Lock the checkpoint row for this transaction (creating it if needed) and return its value."""
    value = await conn.fetchval("SELECT last_seq FROM projector_checkpoint WHERE name = $1 FOR UPDATE", name)
    if value is None:
        await conn.execute(
            "INSERT INTO projector_checkpoint (name, last_seq) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING",
            name,
        )
        value = await conn.fetchval(
            "SELECT last_seq FROM projector_checkpoint WHERE name = $1 FOR UPDATE", name
        )
    return int(value)


async def read_stream_id(conn: Any, name: str) -> str | None:
    """The identity of the stream the checkpoint was taken on (None before it was recorded)."""
    value = await conn.fetchval("SELECT stream_id FROM projector_checkpoint WHERE name = $1", name)
    return str(value) if value is not None else None


async def set_stream_id(conn: Any, name: str, stream_id: str) -> None:
    await conn.execute("UPDATE projector_checkpoint SET stream_id = $2 WHERE name = $1", name, stream_id)


async def set_checkpoint(conn: Any, name: str, seq: int) -> None:
    """Advance the checkpoint and notify readers when the transaction commits."""
    await conn.execute("UPDATE projector_checkpoint SET last_seq = $2 WHERE name = $1", name, seq)
    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, f"{name}:{seq}")


# --- projection writes --------------------------------------------------------------------------


async def load_states(conn: Any, task_ids: Sequence[str]) -> dict[str, TaskState]:
    if not task_ids:
        return {}
    rows = await conn.fetch(
        "SELECT task_id, state FROM tasks WHERE task_id = ANY($1::text[])", list(task_ids)
    )
    return {r["task_id"]: decode_state(r["state"]) for r in rows}


async def copy_events(conn: Any, rows: Sequence[EventRow]) -> None:
    if rows:
        await conn.copy_records_to_table("task_events", records=rows, columns=EVENT_COLUMNS)


async def upsert_tasks(conn: Any, states: Iterable[TaskState]) -> None:
    rows = [task_row(s) for s in states]
    if not rows:
        return
    await conn.executemany(
        "INSERT INTO tasks (task_id, user_id, status, repo, created_at, updated_at, last_seq, state)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (task_id) DO UPDATE SET user_id = EXCLUDED.user_id, status = EXCLUDED.status,"
        " repo = EXCLUDED.repo, created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,"
        " last_seq = EXCLUDED.last_seq, state = EXCLUDED.state",
        rows,
    )


async def copy_tasks(conn: Any, states: Iterable[TaskState]) -> int:
    """Bulk insert into an empty ``tasks`` table (rebuild)."""
    rows = [task_row(s) for s in states]
    if rows:
        await conn.copy_records_to_table("tasks", records=rows, columns=TASK_COLUMNS)
    return len(rows)


async def insert_poison(conn: Any, rows: Sequence[PoisonRow]) -> None:
    if rows:
        await conn.executemany(
            "INSERT INTO poison_messages (seq, subject, error, raw, recorded_at) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (seq) DO NOTHING",
            rows,
        )


async def recent_poison(conn: Any, limit: int) -> list[dict[str, Any]]:
    """The newest poison rows (without their raw bytes), newest first."""
    rows = await conn.fetch(
        "SELECT seq, subject, error, length(raw) AS size_bytes, recorded_at FROM poison_messages"
        " ORDER BY seq DESC LIMIT $1",
        limit,
    )
    return [dict(r) for r in rows]


async def truncate_read_models(conn: Any) -> None:
    await conn.execute("TRUNCATE tasks, task_events, poison_messages")


# --- reads ------------------------------------------------------------------------------------


class TaskPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[tuple[TaskState, int | None]]
    """Each task with its queue position (only for SUBMITTED tasks)."""
    has_more: bool


class EventPage(msgspec.Struct, frozen=True, kw_only=True):
    records: list[Recorded]
    has_more: bool


_QUEUE_POSITION = (
    "CASE WHEN t.status = 'SUBMITTED' THEN (SELECT count(*) + 1 FROM tasks q"
    " WHERE q.status = 'SUBMITTED' AND q.task_id < t.task_id) END"
)


async def list_tasks(
    conn: Any,
    *,
    user_id: str | None,
    statuses: Sequence[Status] = (),
    repo: str | None = None,
    before: str | None = None,
    limit: int = 50,
) -> TaskPage:
    """Newest first (ULIDs sort by creation time); keyset pagination on ``task_id``."""
    where: list[str] = []
    args: list[Any] = []
    if user_id is not None:
        args.append(user_id)
        where.append(f"t.user_id = ${len(args)}")
    if statuses:
        args.append([s.value for s in statuses])
        where.append(f"t.status = ANY(${len(args)}::text[])")
    if repo is not None:
        args.append(repo)
        where.append(f"t.repo = ${len(args)}")
    if before is not None:
        args.append(before)
        where.append(f"t.task_id < ${len(args)}")
    args.append(limit + 1)
    sql = (
        f"SELECT t.state, {_QUEUE_POSITION} AS queue_position FROM tasks t"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + f" ORDER BY t.task_id DESC LIMIT ${len(args)}"
    )
    rows = await conn.fetch(sql, *args)
    items = [(decode_state(r["state"]), r["queue_position"]) for r in rows[:limit]]
    return TaskPage(items=items, has_more=len(rows) > limit)


async def get_task(conn: Any, task_id: str) -> tuple[TaskState, int | None] | None:
    row = await conn.fetchrow(
        f"SELECT t.state, {_QUEUE_POSITION} AS queue_position FROM tasks t WHERE t.task_id = $1", task_id
    )
    if row is None:
        return None
    return decode_state(row["state"]), row["queue_position"]


async def task_events(conn: Any, task_id: str, *, prefix: str, after: int, limit: int) -> EventPage:
    """Stored events of one task after ``after``, decoded with the contracts codec from the stored JSON."""
    rows = await conn.fetch(
        "SELECT seq, type, event FROM task_events WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        task_id,
        after,
        limit + 1,
    )
    records = [
        Recorded(
            seq=r["seq"],
            subject=task_subject(task_id, r["type"], prefix),
            event=decode_event(r["event"].encode()),
        )
        for r in rows[:limit]
    ]
    return EventPage(records=records, has_more=len(rows) > limit)


async def unfinished_task_ids(conn: Any, limit: int = 10_000) -> list[str]:
    """Ids of the tasks the read model holds as not terminal, oldest first (the reconciler's list)."""
    terminal = [s.value for s in TERMINAL_STATUSES]
    rows = await conn.fetch(
        "SELECT task_id FROM tasks WHERE NOT (status = ANY($1::text[])) ORDER BY task_id LIMIT $2",
        terminal,
        limit,
    )
    return [row["task_id"] for row in rows]


class PendingApproval(msgspec.Struct, frozen=True, kw_only=True):
    """One open approval request of a live task, as ``GET /v1/approvals`` lists it."""

    state: TaskState
    request: OpenApproval


async def pending_approvals(
    conn: Any, *, user_id: str | None, limit: int
) -> tuple[list[PendingApproval], bool]:
    """Open approval requests of live tasks (a user's own, or everyone's for ``user_id=None``),
    oldest request first; the bool says whether more than ``limit`` exist. Tasks being cancelled
    are left out (their requests can no longer be decided)."""
    terminal = [s.value for s in TERMINAL_STATUSES]
    args: list[Any] = [terminal]
    where = [
        "NOT (t.status = ANY($1::text[]))",
        "(t.status = 'AWAITING_APPROVAL' OR COALESCE(json_array_length(t.state -> 'open_approvals'), 0) > 0)",
    ]
    if user_id is not None:
        args.append(user_id)
        where.append(f"t.user_id = ${len(args)}")
    rows = await conn.fetch(f"SELECT t.state FROM tasks t WHERE {' AND '.join(where)}", *args)
    found: list[PendingApproval] = []
    for row in rows:
        state = decode_state(row["state"])
        if state.cancel_requested:
            continue
        found.extend(PendingApproval(state=state, request=a) for a in state.open_approvals)
    found.sort(key=lambda p: (p.request.requested_at, p.request.request_id))
    return found[:limit], len(found) > limit
