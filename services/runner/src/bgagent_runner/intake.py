"""Intake: what a delivered ``task_submitted`` (or ``task_requeued``) is before anyone claims it.

A delivery is *poison* when its bytes are not a valid event of the subject it came on
(recorded in the poison bucket, then terminated: it is never redelivered), and *invalid*
when it decodes but breaks a rule of ``bgagent_contracts.submission`` (the task fails with
``INVALID_SUBMISSION``). Admission applies the same rules; this is the defence in depth for
a submission published straight to NATS.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from bgagent_contracts import (
    Actor,
    InvalidSubmissionError,
    MalformedEventError,
    TaskFailed,
    TaskRequeued,
    TaskSubmitted,
    decode_recorded,
)
from bgagent_contracts.submission import check_submitted
from bgagent_eventstore import EventStore, TaskLog, record_poison

from .session import new_id, utcnow

logger = logging.getLogger(__name__)

INVALID_SUBMISSION = "INVALID_SUBMISSION"


async def delivered_task(msg: Msg, js: JetStreamContext, prefix: str) -> str | None:
    """The task id of a delivered submission, or None after recording it as poison."""
    seq = msg.metadata.sequence.stream
    try:
        record = decode_recorded(seq, msg.subject, msg.data, prefix)
    except MalformedEventError as exc:
        reason = str(exc)
    else:
        if isinstance(record.event, (TaskSubmitted, TaskRequeued)):
            return record.event.task_id
        reason = "not a task_submitted or task_requeued"
    await record_poison(
        js, prefix, reader="runner", seq=seq, subject=msg.subject, reason=reason, size_bytes=len(msg.data)
    )
    return None


def submission_problem(
    log: TaskLog, local_roots: Sequence[str], *, allow_network: bool = False
) -> str | None:
    """Why the task's ``task_submitted`` breaks a submission rule, or None when it is valid.

    ``network: true`` is a broken rule unless this runner allows it (``BGAGENT_SANDBOX_ALLOW_NETWORK``),
    whatever admission decided.
    """
    first = next((r.event for r in log.records if isinstance(r.event, TaskSubmitted)), None)
    if first is None:
        return "no readable task_submitted"
    try:
        check_submitted(first, local_roots=local_roots, allow_network=allow_network)
    except InvalidSubmissionError as exc:
        return str(exc)
    return None


async def fail_invalid(store: EventStore, log: TaskLog, problem: str) -> None:
    """Append ``task_failed`` (INVALID_SUBMISSION) after the log's last sequence.

    Raises the store's ConcurrencyError when the log moved meanwhile: the caller retries later.
    """
    state = log.state()
    assert state is not None
    failed = TaskFailed(
        task_id=state.task_id,
        event_id=new_id(),
        ts=utcnow(),
        actor=Actor.RUNNER,
        code=INVALID_SUBMISSION,
        message=f"the submission breaks a rule: {problem}",
    )
    await store.append(state.task_id, [failed], expected_seq=log.last_seq)
    logger.warning("task %s failed: invalid submission (%s)", state.task_id, problem)
