"""In-memory EventStore with the same semantics as the JetStream adapter (for unit tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bgagent_contracts import Event, Recorded, event_type
from bgagent_contracts.subjects import DEFAULT_PREFIX, task_subject

from .errors import ConcurrencyError, TaskExistsError
from .store import TaskLog


class MemoryEventStore:
    """A single ordered log; per-task optimistic concurrency and msg-id de-duplication."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self._prefix = prefix
        self._log: list[Recorded] = []
        self._by_msg_id: dict[str, int] = {}
        self._lock = asyncio.Lock()

    @property
    def prefix(self) -> str:
        return self._prefix

    def _last_for(self, task_id: str) -> int:
        for record in reversed(self._log):
            if record.event.task_id == task_id:
                return record.seq
        return 0

    async def append(self, task_id: str, events: Sequence[Event], *, expected_seq: int) -> list[int]:
        async with self._lock:
            seqs: list[int] = []
            expected = expected_seq
            for event in events:
                if event.task_id != task_id:
                    raise ValueError(f"event {event.event_id} belongs to task {event.task_id}, not {task_id}")
                actual = self._last_for(task_id)
                if event.event_id in self._by_msg_id and (
                    actual == expected or self._by_msg_id[event.event_id] == actual
                ):
                    # Same rule as the server: OCC first, then Nats-Msg-Id de-duplication.
                    seqs.append(self._by_msg_id[event.event_id])
                    expected = actual
                    continue
                if actual != expected:
                    cls = TaskExistsError if expected == 0 and not seqs else ConcurrencyError
                    raise cls(task_id, expected, actual, appended=len(seqs))
                seq = len(self._log) + 1
                subject = task_subject(task_id, event_type(event), self._prefix)
                self._log.append(Recorded(seq=seq, subject=subject, event=event))
                self._by_msg_id[event.event_id] = seq
                seqs.append(seq)
                expected = seq
            return seqs

    async def read(self, task_id: str, *, after_seq: int = 0) -> TaskLog:
        records = tuple(r for r in self._log if r.event.task_id == task_id and r.seq > after_seq)
        last = records[-1].seq if records else after_seq
        return TaskLog(records=records, last_seq=last)

    def all(self) -> list[Recorded]:
        """Every stored event in stream order."""
        return list(self._log)
