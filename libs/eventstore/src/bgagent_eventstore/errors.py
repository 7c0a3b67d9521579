"""Errors of the event store adapter.

StoreError
├── ConcurrencyError         another writer appended first (re-read, re-fold, retry)
│   └── TaskExistsError      task_submitted for an id that already has events
├── StoreUnavailableError    NATS did not answer in time (retryable)
├── ServerTooOldError        nats-server older than 2.11
└── NatsAuthError            NATS refused our credentials, or they cannot be read
"""

from __future__ import annotations

from typing import ClassVar


class StoreError(Exception):
    """Base of every error raised by bgagent_eventstore."""

    retryable: ClassVar[bool] = False


class ConcurrencyError(StoreError):
    """An optimistic append lost: the task's last sequence was not the expected one."""

    retryable = True

    def __init__(self, task_id: str, expected_seq: int, actual_seq: int | None, appended: int = 0) -> None:
        self.task_id = task_id
        self.expected_seq = expected_seq
        self.actual_seq = actual_seq
        self.appended = appended
        super().__init__(
            f"task {task_id}: expected last sequence {expected_seq}, stream has {actual_seq}"
            f" ({appended} event(s) of the batch appended before the conflict)"
        )


class TaskExistsError(ConcurrencyError):
    """``task_submitted`` for a task id that already exists."""

    retryable = False


class StoreUnavailableError(StoreError):
    """NATS did not answer (timeout, no responders, connection closed)."""

    retryable = True


class ServerTooOldError(StoreError):
    """The nats-server lacks the headers bgagent needs (2.11+)."""


class NatsAuthError(StoreError):
    """NATS refused the connection's credentials (or none were given), or they cannot be read."""
