"""One claimed task attempt: its folded state, its last sequence, and appends that survive races.

Admission appends nudges and cancel requests while the runner works, so every
append is optimistic: on a conflict the session reads what it missed, folds
it, and appends again. Runner events are facts about this attempt, so they
stay true after the re-read; only the caller decides what to do with the news.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypedDict

import msgspec
from ulid import ULID

from bgagent_contracts import (
    TERMINAL_EVENT_TYPES,
    Actor,
    Event,
    Recorded,
    TaskStarted,
    TaskState,
    TaskSubmitted,
    event_type,
)
from bgagent_contracts.fold import fold_recorded
from bgagent_eventstore import ConcurrencyError, EventStore, TaskLog

logger = logging.getLogger(__name__)

MAX_APPEND_RETRIES = 20


def new_id() -> str:
    return str(ULID())


def utcnow() -> datetime:
    return datetime.now(UTC)


class Common(TypedDict):
    task_id: str
    event_id: str
    ts: datetime
    actor: str
    attempt: int


class AttemptSuperseded(Exception):
    """Another runner started a newer attempt (ours was presumed lost): stop, append nothing more."""

    def __init__(self, task_id: str, ours: int, current: int) -> None:
        super().__init__(f"task {task_id}: attempt {ours} was superseded by attempt {current}")


class ClaimLost(Exception):
    """Another runner started this attempt first (or the task ended meanwhile)."""

    def __init__(self, state: TaskState | None) -> None:
        self.state = state
        super().__init__("task claimed by another runner" if state and not state.terminal else "task ended")


class TaskSession:
    """The runner's view of one task attempt."""

    def __init__(
        self, store: EventStore, state: TaskState, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.store = store
        self.state = state
        self.clock = clock
        self.attempt = state.attempt
        """Fixed at claim time: a later task_started (a new attempt) supersedes this session."""
        self.before_terminal: Callable[[Event], Awaitable[list[Event]]] | None = None
        """Runs once, before the first terminal event is appended; its events go first (the trace)."""
        self.network = False
        """The task asked for network access for the agent's commands (``task_submitted.network``)."""

    @property
    def task_id(self) -> str:
        return self.state.task_id

    @property
    def last_seq(self) -> int:
        return self.state.last_seq

    def common(self) -> Common:
        """The fields every runner event of this attempt carries."""
        return {
            "task_id": self.task_id,
            "event_id": new_id(),
            "ts": self.clock(),
            "actor": Actor.RUNNER,
            "attempt": self.attempt,
        }

    async def refresh(self) -> TaskState:
        """Fold whatever was appended after our last sequence."""
        log = await self.store.read(self.task_id, after_seq=self.last_seq)
        self._absorb(log)
        return self.state

    def _absorb(self, log: TaskLog) -> None:
        state = fold_recorded(log.records, self.state)
        assert state is not None
        if log.last_seq > state.last_seq:  # skipped malformed messages still move the cursor
            state = _with_seq(state, log.last_seq)
        self.state = state
        if state.attempt != self.attempt:
            raise AttemptSuperseded(self.task_id, self.attempt, state.attempt)

    async def emit(self, *events: Event) -> None:
        """Append in order; on a conflict re-read, fold and retry the events not yet stored."""
        pending = list(events)
        terminal = next((e for e in pending if event_type(e) in TERMINAL_EVENT_TYPES), None)
        if terminal is not None and self.before_terminal is not None:
            hook, self.before_terminal = self.before_terminal, None
            extra = await hook(terminal)
            at = pending.index(terminal)
            pending[at:at] = extra
        for _ in range(MAX_APPEND_RETRIES):
            try:
                seqs = await _append(self.store, self.task_id, pending, self.last_seq)
            except ConcurrencyError as exc:
                logger.debug("append conflict on %s: %s", self.task_id, exc)
                pending = pending[exc.appended :]
                await self.refresh()
                continue
            # OCC guarantees nothing landed between our expected sequence and our events. An event the
            # refresh already folded (a retried append that had landed: the store answers its old seq)
            # is not folded twice.
            records = [
                Recorded(seq=q, subject="", event=e)
                for q, e in zip(seqs, pending, strict=True)
                if q > self.last_seq
            ]
            state = fold_recorded(records, self.state)
            assert state is not None
            self.state = state
            return
        raise ConcurrencyError(self.task_id, self.last_seq, None)

    async def emit_unless(self, event: Event, stop: Callable[[TaskState], bool]) -> bool:
        """Append one event only while ``stop(state)`` is false: a conditional write.

        On a conflict the session reads what it missed and asks ``stop`` again, so an event that is
        only true of the state it was decided on (``approval_requested`` unless a cancel came first,
        ``approval_expired`` unless a decision came first) never lands after the news that voids it.
        False when ``stop`` held (nothing appended).
        """
        for _ in range(MAX_APPEND_RETRIES):
            if stop(self.state):
                return False
            try:
                seqs = await _append(self.store, self.task_id, [event], self.last_seq)
            except ConcurrencyError as exc:
                logger.debug("conditional append conflict on %s: %s", self.task_id, exc)
                await self.refresh()
                continue
            state = fold_recorded(
                [Recorded(seq=q, subject="", event=event) for q in seqs if q > self.last_seq], self.state
            )
            assert state is not None
            self.state = state
            return True
        raise ConcurrencyError(self.task_id, self.last_seq, None)


async def _append(store: EventStore, task_id: str, events: list[Event], expected_seq: int) -> list[int]:
    # The store puts the current span's context (the task span or one of its children, see
    # observe.py) in the message headers: one trace per task, with no parameter to thread through.
    return await store.append(task_id, events, expected_seq=expected_seq)


def _with_seq(state: TaskState, seq: int) -> TaskState:
    return msgspec.structs.replace(state, last_seq=seq)


def _asked_for_network(log: TaskLog) -> bool:
    first = next((r.event for r in log.records if isinstance(r.event, TaskSubmitted)), None)
    return first is not None and first.network


async def claim(
    store: EventStore,
    log: TaskLog,
    runner_id: str,
    *,
    now: datetime,
    sandbox: str | None = None,
) -> TaskSession:
    """Start attempt n+1 with an expected-sequence append; ClaimLost when someone else was first.

    ``task_started`` records ``sandbox`` (``"bwrap"`` or ``"off"``) and whether the agent's commands
    reach the network: what the task asked for under bwrap, always under ``off``.
    """
    state = log.state()
    network = _asked_for_network(log)
    for _ in range(MAX_APPEND_RETRIES):
        if state is None or state.terminal:
            raise ClaimLost(state)
        started = TaskStarted(
            task_id=state.task_id,
            event_id=new_id(),
            ts=now,
            actor=Actor.RUNNER,
            attempt=state.attempt + 1,
            runner_id=runner_id,
            sandbox=sandbox,
            network=None if sandbox is None else network or sandbox == "off",
        )
        try:
            await _append(store, state.task_id, [started], log.last_seq)
        except ConcurrencyError:
            seen_attempt = state.attempt
            log = await store.read(state.task_id)
            state = log.state()
            if state is not None and state.attempt > seen_attempt:
                raise ClaimLost(state) from None
            continue  # a nudge or cancel request moved the log: try again on the new sequence
        session = TaskSession(store, state)
        session.attempt = started.attempt
        session.network = network
        try:
            await session.refresh()
        except AttemptSuperseded:
            raise ClaimLost(session.state) from None
        return session
    raise ClaimLost(state)
