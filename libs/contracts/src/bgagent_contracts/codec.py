"""The one codec: JSON encoders and decoders, built once.

Every byte string that arrives from NATS is decoded here and nowhere else. Decoding never
raises anything but :class:`MalformedEventError`: syntax and type errors, invalid UTF-8,
numbers out of range, nesting deeper than the interpreter's recursion limit and oversized
messages all become that one error (ADR 0004), so every reader can skip a bad message the
same way.
"""

from __future__ import annotations

from typing import Any, cast

import msgspec

from .errors import MalformedEventError
from .events import Event, Recorded, event_type
from .subjects import DEFAULT_PREFIX, is_task_id, parse_subject

MAX_EVENT_BYTES = 1024 * 1024
"""NATS' default max payload: no writer of ours produces more, so a larger message is not an event."""

_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(Event)

# What msgspec and the interpreter raise on hostile bytes: DecodeError/ValidationError for
# syntax, types and ranges; UnicodeDecodeError (a ValueError) for invalid UTF-8 inside a string;
# RecursionError for deep nesting, even inside an unknown field that is only skipped.
_DECODE_FAILURES = (msgspec.MsgspecError, RecursionError, ValueError, OverflowError, TypeError)


def encode_event(event: Event) -> bytes:
    """Serialise an event to its wire form (JSON, with its ``type`` tag)."""
    return _encoder.encode(event)


def decode_event(data: bytes) -> Event:
    """Parse a wire event; MalformedEventError names what is wrong. Never raises anything else."""
    if len(data) > MAX_EVENT_BYTES:
        raise MalformedEventError(f"message of {len(data)} bytes exceeds {MAX_EVENT_BYTES}")
    try:
        # msgspec checks UTF-8 only in the strings it keeps; an unknown field it skips could still
        # carry invalid bytes into a reader that stores the message as text.
        data.decode("utf-8")
        return cast(Event, _event_decoder.decode(data))
    except RecursionError:
        raise MalformedEventError("JSON nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise MalformedEventError(f"invalid UTF-8 at byte {exc.start}") from None
    except _DECODE_FAILURES as exc:
        raise MalformedEventError(str(exc)[:500] or type(exc).__name__) from None


def decode_recorded(seq: int, subject: str, data: bytes, prefix: str = DEFAULT_PREFIX) -> Recorded:
    """A stored message as a Recorded event, checked against the subject it is stored on.

    Poison (MalformedEventError) when the subject is not a task subject, its task id is not a
    ULID, the bytes are not an event, or the event names another task or another type.
    """
    try:
        subject_task, subject_type = parse_subject(subject, prefix)
    except ValueError as exc:
        raise MalformedEventError(str(exc)) from None
    if not is_task_id(subject_task):
        raise MalformedEventError(f"subject task id {subject_task[:40]!r} is not a ULID")
    event = decode_event(data)
    if event.task_id != subject_task:
        raise MalformedEventError(
            f"event task_id {event.task_id[:40]!r} does not match subject task {subject_task!r}"
        )
    kind = event_type(event)
    if kind != subject_type:
        raise MalformedEventError(f"event type {kind!r} does not match subject type {subject_type[:40]!r}")
    return Recorded(seq=seq, subject=subject, event=event)


def encode_json(value: Any) -> bytes:
    """JSON for anything msgspec can encode (structs, dicts, datetimes)."""
    return _encoder.encode(value)


def to_builtins(value: Any) -> Any:
    """Plain dicts/lists/strings for a struct, e.g. to embed in an API response."""
    return msgspec.to_builtins(value)
