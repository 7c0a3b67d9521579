"""The wire codec: round trips, stable tags, malformed input, schema evolution."""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime
from typing import Any

import pytest

from bgagent_contracts import (
    EVENT_TYPE_NAMES,
    EVENT_TYPES,
    TERMINAL_EVENT_TYPES,
    ContractsError,
    Event,
    MalformedEventError,
    TaskSubmitted,
    TaskType,
    decode_event,
    encode_event,
    encode_json,
    event_type,
    to_builtins,
)
from bgagent_contracts.subjects import parse_subject, task_subject

# The wire names. Changing this list breaks every stored stream: add, never rename.
STABLE_TAGS = [
    "task_submitted",
    "cancel_requested",
    "nudge_requested",
    "approval_decided",
    "task_started",
    "workspace_ready",
    "milestone",
    "agent_turn",
    "tool_called",
    "tool_result",
    "cost_updated",
    "nudge_acknowledged",
    "policy_denied",
    "approval_requested",
    "approval_expired",
    "agent_finished",
    "pr_opened",
    "pr_updated",
    "review_posted",
    "trace_stored",
    "task_completed",
    "runner_lost",
    "task_requeued",
    "task_failed",
    "task_cancelled",
    "task_timed_out",
]


def test_event_types_is_exactly_the_event_union() -> None:
    assert set(EVENT_TYPES) == set(typing.get_args(Event))
    assert len(EVENT_TYPES) == len(set(EVENT_TYPES))


def test_tags_are_stable_and_unique() -> None:
    tags = [str(cls.__struct_config__.tag) for cls in EVENT_TYPES]
    assert tags == STABLE_TAGS
    assert set(tags) == EVENT_TYPE_NAMES
    assert {"task_completed", "task_failed", "task_cancelled", "task_timed_out"} == TERMINAL_EVENT_TYPES


def test_every_event_type_round_trips(make: Any) -> None:
    for event in make.one_of_each():
        wire = encode_event(event)
        back = decode_event(wire)
        assert back == event
        assert type(back) is type(event)


def test_tag_is_the_type_field_and_the_subject_suffix(make: Any) -> None:
    for event in make.one_of_each():
        tag = event_type(event)
        assert json.loads(encode_event(event))["type"] == tag
        subject = task_subject(event.task_id, tag, prefix="acme.prod")
        assert subject == f"acme.prod.task.{event.task_id}.{tag}"
        assert parse_subject(subject, prefix="acme.prod") == (event.task_id, tag)


def test_timestamps_stay_utc_aware(make: Any) -> None:
    event = make(TaskSubmitted, ts=datetime(2025, 5, 6, 7, 8, 9, 123456, tzinfo=UTC))
    wire = json.loads(encode_event(event))
    assert wire["ts"] == "2025-05-06T07:08:09.123456Z"
    assert decode_event(encode_event(event)).ts.tzinfo is not None


def _submitted_wire(make: Any) -> dict[str, Any]:
    return json.loads(encode_event(make(TaskSubmitted, user_id="u", repo="o/r")))


@pytest.mark.parametrize(
    ("data", "names"),
    [
        (b"", "truncated"),
        (b"not json", "malformed"),
        (b"\xff\xfe", "invalid UTF-8 at byte 0"),
        (b"[]", "Expected `object`, got `array`"),
        (b"{}", "missing required field `type`"),
        (b'{"type": "task_exploded"}', "$.type"),
    ],
)
def test_malformed_bytes_raise_an_error_naming_the_problem(data: bytes, names: str) -> None:
    with pytest.raises(MalformedEventError) as info:
        decode_event(data)
    assert names in str(info.value)
    assert isinstance(info.value, ContractsError)


def test_a_missing_required_field_is_named(make: Any) -> None:
    wire = _submitted_wire(make)
    del wire["repo"]
    with pytest.raises(MalformedEventError, match="missing required field `repo`"):
        decode_event(json.dumps(wire).encode())


@pytest.mark.parametrize(
    ("field", "value", "names"),
    [("max_turns", "ten", "$.max_turns"), ("ts", "yesterday", "$.ts"), ("task_type", "poem", "$.task_type")],
)
def test_a_field_of_the_wrong_type_is_named(make: Any, field: str, value: Any, names: str) -> None:
    wire = _submitted_wire(make)
    wire[field] = value
    with pytest.raises(MalformedEventError) as info:
        decode_event(json.dumps(wire).encode())
    assert names in str(info.value)


def test_unknown_fields_are_ignored(make: Any) -> None:
    event = make(TaskSubmitted, user_id="u", repo="o/r")
    wire = json.loads(encode_event(event))
    wire["added_by_a_newer_writer"] = {"nested": [1, 2, 3]}
    wire["priority"] = "high"
    assert decode_event(json.dumps(wire).encode()) == event


def test_fields_with_defaults_may_be_absent(make: Any) -> None:
    wire = _submitted_wire(make)
    for optional in ("task_type", "max_turns", "trace", "channel", "idempotency_key", "description"):
        del wire[optional]
    event = decode_event(json.dumps(wire).encode())
    assert isinstance(event, TaskSubmitted)
    assert (event.task_type, event.max_turns, event.trace, event.channel) == (
        TaskType.NEW_TASK,
        100,
        False,
        "api",
    )


def test_to_builtins_and_encode_json_agree(make: Any) -> None:
    for event in make.one_of_each():
        plain = to_builtins(event)
        assert plain["type"] == event_type(event)
        assert json.loads(encode_json(event)) == json.loads(json.dumps(plain))


def test_a_timestamp_without_offset_is_malformed(make: Any) -> None:
    """A naive ts would make duration and wall-clock arithmetic raise later, far from the cause."""
    wire = _submitted_wire(make)
    wire["ts"] = "2025-05-06T07:08:09"
    with pytest.raises(MalformedEventError, match=r"timezone.*\$\.ts"):
        decode_event(json.dumps(wire).encode())
    wire["ts"] = "2025-05-06T07:08:09+02:00"
    assert decode_event(json.dumps(wire).encode()).ts.utcoffset() is not None
