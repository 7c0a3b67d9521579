"""Totality of the fold, with hypothesis: any sequence of valid events of one task yields a state."""

from __future__ import annotations

import functools
import types
import typing
from datetime import UTC, datetime
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from bgagent_contracts import (
    EVENT_TYPES,
    TRANSITIONS,
    Actor,
    AgentFinished,
    ApprovalDecided,
    ApprovalRequested,
    Event,
    Recorded,
    TaskCompleted,
    TaskStarted,
    TaskSubmitted,
    WorkspaceReady,
    decode_event,
    encode_event,
    event_type,
    evolve,
    fold,
    fold_recorded,
)
from bgagent_contracts.subjects import task_subject

TASK_ID = "01JABCDEFGHJKMNPQRSTVWXYZ0"

_short_text = st.text(max_size=12)
_ids = st.sampled_from(["a", "b", "c"])
_small = st.integers(min_value=0, max_value=5)

# Field values drawn from small pools, so ids, attempts and turns collide often enough to matter.
_POOLS: dict[str, st.SearchStrategy[Any]] = {
    "task_id": st.just(TASK_ID),
    "event_id": st.uuids().map(str),
    "ts": st.datetimes(
        min_value=datetime(2024, 1, 1), max_value=datetime(2026, 1, 1), timezones=st.just(UTC)
    ),
    "deadline": st.none()
    | st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2026, 1, 1), timezones=st.just(UTC)),
    "scope": st.none()
    | st.sampled_from(["this_call", "tool_type_session", "all_session", "rule:x", "bogus"]),
    "initial_approvals": st.lists(st.sampled_from(["tool_type:bash", "rule:x", "bogus"]), max_size=2).map(
        tuple
    ),
    "actor": st.sampled_from(list(Actor)),
    "attempt": st.integers(min_value=0, max_value=3),
    "request_id": _ids,
    "nudge_id": _ids,
    "nudge_ids": st.lists(_ids, max_size=3).map(tuple),
    "turn": _small,
    "turns": _small,
    "max_turns": st.integers(min_value=1, max_value=5),
    "max_budget_usd": st.none() | st.floats(min_value=0, max_value=10),
    "decision": st.sampled_from(["approve", "deny"]),
}


_one_line_text = st.text(st.characters(blacklist_categories=("Cc",)), max_size=12)


def _for_type(name: str, tp: Any) -> st.SearchStrategy[Any]:
    if name in _POOLS:
        return _POOLS[name]
    if typing.get_origin(tp) is typing.Annotated:
        base, *metas = typing.get_args(tp)
        meta = next((m for m in metas if isinstance(m, msgspec.Meta)), msgspec.Meta())
        if base is int:
            low = int(meta.ge or 0)
            return st.integers(min_value=low, max_value=low + 5)
        if base is str and meta.pattern is not None:
            return _one_line_text  # the Name type: no control characters
        return _for_type(name, base)
    if tp is str:
        return _short_text
    if tp is float:
        return st.floats(min_value=0, max_value=100)
    if tp is int:
        return _small
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return st.none() | _for_type(name, args[0])
    return st.from_type(tp)


@functools.cache
def _event_strategy(cls: type[Any]) -> st.SearchStrategy[Event]:
    hints = typing.get_type_hints(cls, include_extras=True)
    kwargs = {f.name: _for_type(f.name, hints[f.name]) for f in msgspec.structs.fields(cls)}
    return st.builds(cls, **kwargs)


any_event = st.one_of([_event_strategy(cls) for cls in EVENT_TYPES])
submitted = _event_strategy(TaskSubmitted)


@st.composite
def _guided(draw: st.DrawFn) -> list[Event]:
    """A submission, then a lifecycle of one attempt interleaved with arbitrary noise.

    Pure noise rarely gets past HYDRATING (attempts must match); the skeleton makes the
    property tests visit RUNNING, AWAITING_APPROVAL, FINALIZING and COMPLETED too.
    """
    attempt = draw(st.integers(min_value=1, max_value=2))
    request = draw(_ids)

    def runner(cls: type[Any], **fields: Any) -> Event:
        return draw(_event_strategy(cls).map(lambda e: msgspec.structs.replace(e, attempt=attempt, **fields)))

    skeleton = [
        runner(TaskStarted),
        runner(WorkspaceReady),
        runner(ApprovalRequested, request_id=request),
        draw(_event_strategy(ApprovalDecided).map(lambda e: msgspec.structs.replace(e, request_id=request))),
        runner(AgentFinished),
        runner(TaskCompleted),
    ]
    slots = draw(st.lists(st.none() | any_event, max_size=30))
    events: list[Event] = [draw(submitted)]
    steps = iter(skeleton)
    for slot in slots:
        if slot is None:
            slot = next(steps, None) or draw(any_event)
        events.append(slot)
    events.extend(steps)
    return events


histories = st.one_of(
    st.tuples(submitted, st.lists(any_event, max_size=40)).map(lambda t: [t[0], *t[1]]),
    _guided(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(any_event, max_size=30))
def test_any_sequence_of_events_folds_without_raising(events: list[Event]) -> None:
    state = fold(events)
    has_submission = any(isinstance(e, TaskSubmitted) for e in events)
    assert (state is not None) is has_submission


@settings(max_examples=200, deadline=None)
@given(histories)
def test_every_step_is_an_allowed_transition_and_terminal_is_final(events: list[Event]) -> None:
    state = evolve(None, events[0])
    assert state is not None
    for event in events[1:]:
        new = evolve(state, event)
        assert new is not None
        if state.terminal:
            assert new is state
        elif new.status is not state.status:
            assert new.status in TRANSITIONS[state.status], (state.status, new.status, event_type(event))
        assert new.attempt >= state.attempt
        assert new.turn >= 0
        ids = [n.nudge_id for n in new.pending_nudges]
        assert len(ids) == len(set(ids))
        state = new


@settings(max_examples=150, deadline=None)
@given(histories)
def test_fold_recorded_equals_fold_plus_cursor(events: list[Event]) -> None:
    records = [
        Recorded(seq=i + 1, subject=task_subject(TASK_ID, event_type(e)), event=e)
        for i, e in enumerate(events)
    ]
    state = fold_recorded(records)
    assert state is not None
    assert (state.last_seq, state.event_count) == (len(records), len(records))
    assert msgspec.structs.replace(state, last_seq=0, event_count=0) == fold(events)


@settings(max_examples=200, deadline=None)
@given(any_event)
def test_every_generated_event_survives_the_codec(event: Event) -> None:
    assert decode_event(encode_event(event)) == event
