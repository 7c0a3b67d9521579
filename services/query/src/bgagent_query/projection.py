"""Turning raw stream messages into read-model rows: decode, check, fold. No I/O here.

Shared by the incremental projector and the rebuild so both produce identical rows.
A message is *poison* when its bytes are not a valid event, or when the event does not
belong to the subject it is stored on (another task id or another type); poison is
recorded in ``poison_messages`` and skipped, never retried.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import msgspec

from bgagent_contracts import MalformedEventError, Recorded, TaskState, decode_recorded, event_type
from bgagent_contracts.fold import fold_recorded
from bgagent_eventstore import Delivered

from .store import EventRow, PoisonRow


class Decoded(msgspec.Struct, kw_only=True):
    """A batch of messages sorted into event rows, poison rows, and records per task (log order)."""

    events: list[EventRow] = msgspec.field(default_factory=list)
    poison: list[PoisonRow] = msgspec.field(default_factory=list)
    by_task: dict[str, list[Recorded]] = msgspec.field(default_factory=dict)


def check_message(seq: int, subject: str, data: bytes, prefix: str) -> tuple[Recorded, str] | str:
    """``(record, event JSON)`` for a good message, else the reason it is poison."""
    try:
        record = decode_recorded(seq, subject, data, prefix)
    except MalformedEventError as exc:
        return f"malformed event: {exc}"
    # decode_recorded has checked the bytes are UTF-8 JSON; the stored text keeps them as sent.
    return record, data.decode("utf-8")


def add_message(out: Decoded, msg: Delivered, prefix: str, now: datetime) -> str | None:
    """Sort one message into ``out``; returns the poison reason, if any."""
    checked = check_message(msg.seq, msg.subject, msg.data, prefix)
    if isinstance(checked, str):
        out.poison.append((msg.seq, msg.subject, checked[:2000], msg.data, now))
        return checked
    record, text = checked
    event = record.event
    out.events.append((record.seq, event.task_id, event_type(event), event.ts, text))
    out.by_task.setdefault(event.task_id, []).append(record)
    return None


def decode_batch(messages: Sequence[Delivered], prefix: str, now: datetime) -> Decoded:
    out = Decoded()
    for msg in messages:
        add_message(out, msg, prefix, now)
    return out


def fold_tasks(
    by_task: Mapping[str, Sequence[Recorded]], base: Mapping[str, TaskState]
) -> dict[str, TaskState]:
    """New states of the touched tasks that exist (a task exists from its ``task_submitted``)."""
    changed: dict[str, TaskState] = {}
    for task_id, records in by_task.items():
        state = fold_recorded(records, base.get(task_id))
        if state is not None:
            changed[task_id] = state
    return changed
