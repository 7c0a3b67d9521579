"""Fixtures for the event store tests: the same contract suite runs on JetStream and in memory."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from bgagent_contracts import Actor, Milestone, TaskSubmitted
from bgagent_eventstore import MemoryEventStore

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id() -> str:
    return "0" + "".join(secrets.choice(CROCKFORD) for _ in range(25))


class Events:
    """Tiny builders: a submission and numbered milestones of one task."""

    new_id = staticmethod(new_id)

    @staticmethod
    def submitted(task_id: str, **kw: Any) -> TaskSubmitted:
        fields: dict[str, Any] = {"user_id": "alice", "repo": "acme/widgets"}
        fields.update(kw)
        return TaskSubmitted(
            task_id=task_id, event_id=new_id(), ts=datetime.now(UTC), actor=Actor.ADMISSION, **fields
        )

    @staticmethod
    def milestone(task_id: str, name: str, attempt: int = 0) -> Milestone:
        return Milestone(
            task_id=task_id,
            event_id=new_id(),
            ts=datetime.now(UTC),
            actor=Actor.RUNNER,
            attempt=attempt,
            name=name,
        )

    @staticmethod
    async def wait_until(pred: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not await pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s")
            await asyncio.sleep(0.02)


@pytest.fixture
def ev() -> type[Events]:
    return Events


@pytest.fixture(params=["memory", pytest.param("jetstream", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest) -> Any:
    """The EventStore under test: MemoryEventStore, or JetStreamEventStore on a real server."""
    if request.param == "memory":
        return MemoryEventStore(prefix="tmem")
    return request.getfixturevalue("event_store")
