"""Builders for the contracts tests: events of any type with sensible defaults, and states by status."""

from __future__ import annotations

import itertools
import secrets
import types
import typing
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec
import pytest

from bgagent_contracts import (
    EVENT_TYPES,
    Actor,
    AgentFinished,
    ApprovalRequested,
    Event,
    Recorded,
    Status,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskStarted,
    TaskState,
    TaskSubmitted,
    TaskTimedOut,
    WorkspaceReady,
    event_type,
    fold,
)
from bgagent_contracts.subjects import task_subject

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

E = TypeVar("E", bound=Event)


def new_id() -> str:
    """A canonical 26-character ULID-shaped id (first char <= 7 like a real ULID)."""
    return "0" + "".join(secrets.choice(CROCKFORD) for _ in range(25))


_ADMISSION_TYPES = {"task_submitted", "cancel_requested", "nudge_requested", "approval_decided"}


def _sample(name: str, tp: Any, ts: datetime) -> Any:
    """A plain value of type ``tp`` for a required field."""
    origin = typing.get_origin(tp)
    if tp is str:
        return f"{name}-1"
    if tp is int:
        return 1
    if tp is float:
        return 0.5
    if tp is bool:
        return False
    if tp is datetime:
        return ts
    if origin is typing.Literal:
        return typing.get_args(tp)[0]
    if origin is tuple:
        return ("n-1",)
    if origin in (typing.Union, types.UnionType):
        return _sample(name, next(a for a in typing.get_args(tp) if a is not type(None)), ts)
    raise TypeError(f"no sample for field {name}: {tp!r}")


class Make:
    """Event builder: ``make(Cls, **fields)`` fills every other required field.

    Timestamps advance one second per event so folds see a monotonic clock.
    """

    def __init__(self, task_id: str | None = None) -> None:
        self.task_id = task_id or new_id()
        self._tick = itertools.count()

    new_id = staticmethod(new_id)

    def now(self) -> datetime:
        return T0 + timedelta(seconds=next(self._tick))

    def __call__(self, cls: type[E], **overrides: Any) -> E:
        ts = overrides.get("ts") or self.now()
        values: dict[str, Any] = {}
        tag = str(cls.__struct_config__.tag)
        hints = typing.get_type_hints(cls)
        for field in msgspec.structs.fields(cls):
            if field.name in overrides:
                values[field.name] = overrides[field.name]
            elif field.name == "task_id":
                values["task_id"] = self.task_id
            elif field.name == "event_id":
                values["event_id"] = new_id()
            elif field.name == "ts":
                values["ts"] = ts
            elif field.name == "actor":
                values["actor"] = Actor.ADMISSION if tag in _ADMISSION_TYPES else Actor.RUNNER
            elif field.required:
                values[field.name] = _sample(field.name, hints[field.name], ts)
        return cls(**values)

    # --- canonical paths to each status ------------------------------------

    def path_to(self, status: Status, *, attempt: int = 1) -> list[Event]:
        """A valid event sequence that leaves the task in ``status``."""
        events: list[Event] = [self(TaskSubmitted, user_id="alice", repo="acme/widgets", max_turns=10)]
        if status is Status.SUBMITTED:
            return events
        for n in range(1, attempt + 1):
            events.append(self(TaskStarted, attempt=n, runner_id=f"runner-{n}"))
        if status is Status.HYDRATING:
            return events
        terminal_from_running = {
            Status.FAILED: self(TaskFailed, attempt=attempt, code="BOOM", message="it broke"),
            Status.CANCELLED: self(TaskCancelled, attempt=attempt, cancelled_by="alice"),
            Status.TIMED_OUT: self(TaskTimedOut, attempt=attempt, limit="wall_clock", message="slow"),
        }
        events.append(self(WorkspaceReady, attempt=attempt, branch=f"bgagent/{self.task_id}"))
        if status is Status.RUNNING:
            return events
        if status is Status.AWAITING_APPROVAL:
            events.append(
                self(ApprovalRequested, attempt=attempt, request_id="req-1", tool_name="bash", timeout_s=60)
            )
            return events
        if status in terminal_from_running:
            events.append(terminal_from_running[status])
            return events
        events.append(self(AgentFinished, attempt=attempt, turns=3, stop_reason="end_turn"))
        if status is Status.FINALIZING:
            return events
        events.append(self(TaskCompleted, attempt=attempt, result="pr_opened", pr_url="https://x/pr/1"))
        assert status is Status.COMPLETED
        return events

    def state(self, status: Status, *, attempt: int = 1) -> TaskState:
        state = fold(self.path_to(status, attempt=attempt))
        assert state is not None
        assert state.status is status
        return state

    def recorded(self, events: list[Event], *, first_seq: int = 1, step: int = 1) -> list[Recorded]:
        return [
            Recorded(seq=first_seq + i * step, subject=task_subject(e.task_id, event_type(e)), event=e)
            for i, e in enumerate(events)
        ]

    def one_of_each(self) -> list[Event]:
        """One instance of every event type, in EVENT_TYPES order."""
        return [self(cls) for cls in EVENT_TYPES]


@pytest.fixture
def make() -> Make:
    return Make()
