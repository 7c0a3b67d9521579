"""The admission commands: load the task's log → fold → decide → append, retrying lost races.

This is the service shell: it makes ids (ULIDs) and reads the clock, then hands
both to the pure decisions of bgagent_contracts. Errors leave as AdmissionError.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
import nats.errors
from ulid import ULID

from bgagent_contracts import (
    Actor,
    ApprovalDecided,
    Event,
    InvalidCommandError,
    Recorded,
    RequestAlreadyDecidedError,
    RequestNotFoundError,
    TaskAlreadyTerminalError,
    TaskNotAwaitingApprovalError,
    TaskNotFoundError,
    TaskState,
    TaskSubmitted,
    decide_approval,
    decide_cancel,
    decide_nudge,
    event_type,
    fold_recorded,
)
from bgagent_contracts.auth import Principal
from bgagent_contracts.subjects import is_task_id, task_subject
from bgagent_eventstore import ConcurrencyError, EventStore, StoreUnavailableError, TaskExistsError, TaskLog

from .errors import (
    BackendUnavailable,
    IdempotencyKeyReused,
    InvalidRequest,
    RequestAlreadyDecided,
    TaskAlreadyTerminal,
    TaskNotAwaitingApproval,
    TaskNotFound,
    TooMuchContention,
)
from .idempotency import IdempotencyStore, key_digest
from .requests import CreateTask, Decision

logger = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_CLAIM_WAIT_S = 2.0


class Submitted(msgspec.Struct, frozen=True, kw_only=True):
    state: TaskState
    seq: int
    """Stream sequence of the task's ``task_submitted``."""
    created: bool
    """False when an Idempotency-Key returned an existing task."""


class Changed(msgspec.Struct, frozen=True, kw_only=True):
    state: TaskState
    seq: int
    """Sequence of the appended event, or the task's last sequence when nothing was appended."""
    event: Event | None


class NudgeAccepted(msgspec.Struct, frozen=True, kw_only=True):
    task_id: str
    nudge_id: str
    submitted_at: datetime
    seq: int


def _new_id() -> str:
    return str(ULID())


class Admission:
    """Validated commands in, events appended out."""

    def __init__(
        self,
        store: EventStore,
        idempotency: IdempotencyStore,
        *,
        prefix: str,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        claim_wait_s: float = DEFAULT_CLAIM_WAIT_S,
    ) -> None:
        self._store = store
        self._idempotency = idempotency
        self._prefix = prefix
        self._max_attempts = max_attempts
        self._claim_wait_s = claim_wait_s

    # --- submit ---------------------------------------------------------------

    async def submit(self, who: Principal, command: CreateTask, idempotency_key: str | None) -> Submitted:
        task_id = _new_id()
        if idempotency_key is None:
            return await self._create(who, task_id, command, None)
        claimed = await self._idempotency.claim(key_digest(who.user_id, idempotency_key), task_id)
        if claimed is None:
            try:
                return await self._create(who, task_id, command, idempotency_key)
            except TaskExistsError:
                # Another request with this key found our claim and appended first.
                return await self._existing(who, task_id, command, idempotency_key)
        return await self._existing(who, claimed, command, idempotency_key)

    def _submitted_event(
        self, who: Principal, task_id: str, command: CreateTask, key: str | None
    ) -> TaskSubmitted:
        return TaskSubmitted(
            task_id=task_id,
            event_id=_new_id(),
            ts=datetime.now(UTC),
            actor=Actor.ADMISSION,
            user_id=who.user_id,
            repo=command.repo,
            task_type=command.task_type,
            issue_number=command.issue_number,
            pr_number=command.pr_number,
            description=command.description,
            max_turns=command.max_turns,
            max_budget_usd=command.max_budget_usd,
            trace=command.trace,
            network=command.network,
            channel="api",
            idempotency_key=key,
            initial_approvals=command.initial_approvals,
            approval_timeout_s=command.approval_timeout_s,
        )

    async def _create(
        self, who: Principal, task_id: str, command: CreateTask, key: str | None, *, expected_seq: int = 0
    ) -> Submitted:
        event = self._submitted_event(who, task_id, command, key)
        seq = await self._append(task_id, event, expected_seq=expected_seq)
        state = self._after(None, event, seq)
        logger.info("task %s submitted by %s (seq %d, repo %s)", task_id, who.user_id, seq, command.repo)
        return Submitted(state=state, seq=seq, created=True)

    async def _existing(self, who: Principal, task_id: str, command: CreateTask, key: str) -> Submitted:
        """The task an Idempotency-Key already names; creates it if its claimer died before appending."""
        deadline = time.monotonic() + self._claim_wait_s
        delay = 0.01
        recovered = False
        while True:
            log = await self._read(task_id)
            first = _first_submitted(log)
            if first is not None:
                break
            if recovered:
                raise TooMuchContention(f"task {task_id} for this Idempotency-Key could not be read back")
            if time.monotonic() >= deadline:
                # The request that claimed the key never appended (crash between KV write and
                # append): create the task now, under the claimed id, from this request.
                logger.warning("idempotency key claimed by task %s without events; appending it now", task_id)
                recovered = True
                try:
                    result = await self._create(who, task_id, command, key, expected_seq=log.last_seq)
                except ConcurrencyError:
                    continue
                return msgspec.structs.replace(result, created=False)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
        event = first.event
        assert isinstance(event, TaskSubmitted)
        if not _same_request(event, command):
            raise IdempotencyKeyReused(
                f"Idempotency-Key {key!r} was already used for task {task_id} with a different request"
            )
        state = log.state()
        assert state is not None
        return Submitted(state=state, seq=first.seq, created=False)

    # --- cancel and nudge -----------------------------------------------------

    async def cancel(self, who: Principal, task_id: str, reason: str | None) -> Changed:
        now = datetime.now(UTC)

        def decide(state: TaskState) -> Event | None:
            return decide_cancel(
                state, task_id=state.task_id, user_id=who.user_id, reason=reason, now=now, event_id=_new_id()
            )

        changed = await self._decide_and_append(who, task_id, decide)
        if changed.event is not None:
            logger.info("task %s: %s by %s", changed.state.task_id, event_type(changed.event), who.user_id)
        return changed

    async def nudge(self, who: Principal, task_id: str, message: str) -> NudgeAccepted:
        now = datetime.now(UTC)
        nudge_id = _new_id()

        def decide(state: TaskState) -> Event | None:
            return decide_nudge(
                state,
                task_id=state.task_id,
                user_id=who.user_id,
                message=message,
                now=now,
                event_id=_new_id(),
                nudge_id=nudge_id,
            )

        changed = await self._decide_and_append(who, task_id, decide)
        logger.info("task %s: nudge %s by %s", changed.state.task_id, nudge_id, who.user_id)
        return NudgeAccepted(
            task_id=changed.state.task_id, nudge_id=nudge_id, submitted_at=now, seq=changed.seq
        )

    async def decide(self, who: Principal, task_id: str, decision: Decision) -> Changed:
        """Approve or deny an open approval request. Two racing decisions: the first append wins; the
        loser re-reads, finds the request decided and gets RequestAlreadyDecided (409)."""
        now = datetime.now(UTC)

        def decide(state: TaskState) -> Event | None:
            return decide_approval(
                state,
                task_id=state.task_id,
                request_id=decision.request_id,
                user_id=who.user_id,
                decision=decision.decision,
                scope=decision.scope,
                reason=decision.reason,
                now=now,
                event_id=_new_id(),
            )

        changed = await self._decide_and_append(who, task_id, decide)
        assert isinstance(changed.event, ApprovalDecided)
        logger.info(
            "task %s: request %s %s by %s (scope %s)",
            changed.state.task_id,
            decision.request_id,
            "approved" if decision.decision == "approve" else "denied",
            who.user_id,
            decision.scope or "this_call",
        )
        return changed

    async def _decide_and_append(
        self, who: Principal, task_id: str, decide: Callable[[TaskState], Event | None]
    ) -> Changed:
        canonical = task_id.upper()
        if not is_task_id(canonical):
            raise TaskNotFound(f"task {task_id} not found")
        for attempt in range(1, self._max_attempts + 1):
            log = await self._read(canonical)
            state = log.state()
            if state is None or not who.may_see(state.user_id):
                raise TaskNotFound(f"task {canonical} not found")
            try:
                event = decide(state)
            except TaskAlreadyTerminalError as exc:
                raise TaskAlreadyTerminal(str(exc)) from None
            except TaskNotFoundError as exc:  # pragma: no cover - state is not None here
                raise TaskNotFound(str(exc)) from None
            except RequestNotFoundError as exc:
                raise TaskNotFound(str(exc)) from None
            except RequestAlreadyDecidedError as exc:
                raise RequestAlreadyDecided(str(exc)) from None
            except TaskNotAwaitingApprovalError as exc:
                raise TaskNotAwaitingApproval(str(exc)) from None
            except InvalidCommandError as exc:
                field, _, problem = str(exc).partition(": ")
                raise InvalidRequest(field, problem) from None
            if event is None:
                return Changed(state=state, seq=state.last_seq, event=None)
            try:
                seq = await self._append(canonical, event, expected_seq=log.last_seq)
            except ConcurrencyError as exc:
                logger.info("task %s changed under us (attempt %d): %s", canonical, attempt, exc)
                continue
            return Changed(state=self._after(state, event, seq), seq=seq, event=event)
        raise TooMuchContention(
            f"task {canonical} kept changing during {self._max_attempts} attempts; try again"
        )

    # --- store access ---------------------------------------------------------

    def _after(self, state: TaskState | None, event: Event, seq: int) -> TaskState:
        subject = task_subject(event.task_id, event_type(event), self._prefix)
        new = fold_recorded([Recorded(seq=seq, subject=subject, event=event)], state)
        assert new is not None
        return new

    async def _read(self, task_id: str) -> TaskLog:
        try:
            return await self._store.read(task_id)
        except (StoreUnavailableError, nats.errors.Error) as exc:
            raise BackendUnavailable(f"event store did not answer: {exc}") from exc

    async def _append(self, task_id: str, event: Event, *, expected_seq: int) -> int:
        try:
            (seq,) = await self._store.append(task_id, [event], expected_seq=expected_seq)
        except ConcurrencyError:
            raise
        except (StoreUnavailableError, nats.errors.Error) as exc:
            raise BackendUnavailable(f"event store did not answer: {exc}") from exc
        return seq


def _first_submitted(log: TaskLog) -> Recorded | None:
    for record in log.records:
        if isinstance(record.event, TaskSubmitted):
            return record
    return None


def _same_request(event: TaskSubmitted, command: CreateTask) -> bool:
    return (
        event.repo == command.repo
        and event.task_type == command.task_type
        and event.issue_number == command.issue_number
        and event.pr_number == command.pr_number
        and event.description == command.description
        and event.max_turns == command.max_turns
        and event.max_budget_usd == command.max_budget_usd
        and event.trace == command.trace
        and event.network == command.network
        and tuple(event.initial_approvals) == command.initial_approvals
        and event.approval_timeout_s == command.approval_timeout_s
    )
