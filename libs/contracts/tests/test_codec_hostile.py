"""Hostile bytes on a task subject: decoding never raises anything but MalformedEventError."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgagent_contracts import (
    MAX_EVENT_BYTES,
    MalformedEventError,
    Milestone,
    TaskSubmitted,
    decode_event,
    decode_recorded,
    encode_event,
    event_type,
)
from bgagent_contracts.subjects import task_subject


def _wire(make: Any, **extra: Any) -> dict[str, Any]:
    wire: dict[str, Any] = json.loads(encode_event(make(Milestone, attempt=1, name="step")))
    wire.update(extra)
    return wire


def _bytes(wire: dict[str, Any]) -> bytes:
    return json.dumps(wire).encode()


@pytest.mark.parametrize("depth", [1_000, 3_000, 100_000])
def test_deep_nesting_in_an_unknown_field_is_malformed_not_a_recursion_error(make: Any, depth: int) -> None:
    head = _bytes(_wire(make))[:-1]
    data = head + b', "x": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(MalformedEventError, match="nested too deeply"):
        decode_event(data)


def test_invalid_utf8_inside_a_known_string_is_malformed(make: Any) -> None:
    data = _bytes(_wire(make, name="PLACEHOLDER")).replace(b"PLACEHOLDER", b"ab\xff\xfe")
    with pytest.raises(MalformedEventError, match="invalid UTF-8"):
        decode_event(data)


def test_invalid_utf8_inside_a_skipped_unknown_field_is_malformed(make: Any) -> None:
    # msgspec checks UTF-8 only in strings it keeps: a reader storing the message as text would fail.
    data = _bytes(_wire(make, zz="PLACEHOLDER")).replace(b"PLACEHOLDER", b"\xff")
    with pytest.raises(MalformedEventError, match="invalid UTF-8"):
        decode_event(data)


def test_a_lone_surrogate_escape_is_malformed(make: Any) -> None:
    data = _bytes(_wire(make, name="PLACEHOLDER")).replace(b"PLACEHOLDER", rb"\ud800")
    with pytest.raises(MalformedEventError):
        decode_event(data)


@pytest.mark.parametrize(
    ("field", "value", "names"),
    [
        ("attempt", 10**30, "$.attempt"),
        ("attempt", -1, "$.attempt"),
        ("attempt", 2**53, "$.attempt"),
    ],
)
def test_numbers_out_of_range_name_their_field(make: Any, field: str, value: int, names: str) -> None:
    with pytest.raises(MalformedEventError) as info:
        decode_event(_bytes(_wire(make, **{field: value})))
    assert names in str(info.value)


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("max_turns", b"-5"),
        ("issue_number", b"0"),
        ("pr_number", b"9223372036854775808"),
        ("max_budget_usd", b"1e999"),
        ("max_budget_usd", b"-0.5"),
    ],
)
def test_submission_numbers_out_of_range_are_malformed(make: Any, field: str, raw: bytes) -> None:
    wire = json.loads(encode_event(make(TaskSubmitted, user_id="alice", repo="acme/widgets")))
    wire[field] = "PLACEHOLDER"
    data = json.dumps(wire).encode().replace(b'"PLACEHOLDER"', raw)
    with pytest.raises(MalformedEventError, match=rf"\$\.{field}"):
        decode_event(data)


@pytest.mark.parametrize("bad", ["ali\x00ce", "ali\nce", "a\x1bb", "x" * 1025])
def test_identity_fields_refuse_control_characters_and_huge_values(make: Any, bad: str) -> None:
    wire = json.loads(encode_event(make(TaskSubmitted, user_id="alice", repo="acme/widgets")))
    wire["user_id"] = bad
    with pytest.raises(MalformedEventError, match=r"\$\.user_id"):
        decode_event(json.dumps(wire).encode())


def test_an_oversized_message_is_malformed_before_it_is_parsed(make: Any) -> None:
    data = _bytes(_wire(make, detail="x" * MAX_EVENT_BYTES))
    with pytest.raises(MalformedEventError, match="exceeds"):
        decode_event(data)


def _decodes_or_is_malformed(data: bytes) -> str:
    """Either an event that survives its own round trip, or MalformedEventError: nothing else
    (any other exception fails the test)."""
    try:
        event = decode_event(data)
    except MalformedEventError as exc:
        reason = str(exc)
        assert reason, "a malformed message says what is wrong"
        return "malformed"
    assert decode_event(encode_event(event)) == event
    return "decoded"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_malformed_event_error(data: bytes) -> None:
    assert _decodes_or_is_malformed(data) in ("decoded", "malformed")


_BASE: dict[str, Any] = {
    "type": "milestone",
    "task_id": "01JABCDEFGHJKMNPQRSTVWXYZ0",
    "event_id": "01JABCDEFGHJKMNPQRSTVWXYZ1",
    "ts": "2026-01-01T00:00:00Z",
    "actor": "runner",
    "attempt": 1,
    "name": "step",
}

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["attempt", "name", "detail", "ts", "task_id", "actor", "type", "x"]), _json_values)
def test_any_json_value_in_any_field_raises_only_malformed_event_error(field: str, value: Any) -> None:
    wire = {**_BASE, field: value}
    assert _decodes_or_is_malformed(json.dumps(wire).encode()) in ("decoded", "malformed")


# --- decode_recorded: the event must belong to the subject it is stored on ----------------------


def test_decode_recorded_returns_the_event_with_its_cursor(make: Any) -> None:
    event = make(Milestone, attempt=1, name="step")
    subject = task_subject(event.task_id, event_type(event))
    record = decode_recorded(7, subject, encode_event(event))
    assert (record.seq, record.subject, record.event) == (7, subject, event)


@pytest.mark.parametrize(
    ("subject", "names"),
    [
        ("bgagent.task.not-a-ulid.milestone", "not a ULID"),
        ("bgagent.task.01JABCDEFGHJKMNPQRSTVWXYZ0.milestone", "does not match subject task"),
        ("other.task.X.milestone", "not a task subject"),
        ("bgagent.task.{task}.agent_turn", "does not match subject type"),
    ],
)
def test_decode_recorded_refuses_an_event_on_the_wrong_subject(make: Any, subject: str, names: str) -> None:
    event = make(Milestone, attempt=1, name="step")
    with pytest.raises(MalformedEventError, match=names):
        decode_recorded(1, subject.format(task=event.task_id), encode_event(event))
