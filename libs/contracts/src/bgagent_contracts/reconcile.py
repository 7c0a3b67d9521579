"""The reconciler's decision: what to do with a task nobody is visibly working on. Pure.

Every non-terminal task is, at every moment, one of:

- **queued**: its latest work message (``task_submitted`` or ``task_requeued``) has not been
  delivered to a runner yet;
- **held**: a live runner heartbeats it (a key in the heartbeat KV bucket, with a TTL);
- **waiting**: its runner was lost and the work consumer will redeliver its message within the
  ack wait (``runner_lost`` says so on the task).

A task in none of these states is handled: re-enqueued while attempts remain, otherwise failed
with ``RUNNER_LOST`` (attempts exhausted) or ``STRANDED`` (not claimable), with a message a user can
act on. The caller re-reads the task's log before deciding and appends through the same
optimistic-concurrency path as every writer, so two reconcilers never act twice.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from .state import TaskState

RUNNER_LOST = "RUNNER_LOST"
STRANDED = "STRANDED"


class Action(enum.StrEnum):
    MARK_LOST = "mark_lost"
    """Append ``runner_lost``: the user sees "runner lost at T, waiting for a runner"."""
    REQUEUE = "requeue"
    """Append ``task_requeued``: a new work message for the runners."""
    FAIL = "fail"
    """Append ``task_failed`` with ``code`` (RUNNER_LOST or STRANDED)."""


@dataclass(frozen=True)
class Policy:
    grace_s: float = 15.0
    """A task quiet for less than this is left alone (the heartbeat TTL: a claim just landed)."""
    redelivery_s: float = 90.0
    """After a runner is lost, the work consumer redelivers within its ack wait: wait this long."""
    max_attempts: int = 5
    """Attempts a task gets (the work consumer's ``max_deliver``)."""
    stranded_after_s: float = 1200.0
    """A queued task with no live runner anywhere for this long fails ``STRANDED``."""


@dataclass(frozen=True)
class Observation:
    """What the reconciler saw of one task, read just before it decides."""

    state: TaskState
    now: datetime
    held: bool
    """A heartbeat for the task's current attempt is in the KV bucket."""
    queued: bool
    """Its latest work message is not yet delivered (its stream seq is past the consumer's)."""
    exhausted: bool = False
    """JetStream dropped its work message (a max-deliveries advisory named it)."""
    live_runners: int = 1
    runner_seen_at: datetime | None = None
    """The last time any runner heartbeated (None: never, as far as the bucket remembers)."""


@dataclass(frozen=True)
class Decision:
    action: Action
    message: str
    code: str | None = None


def decide_reconcile(obs: Observation, policy: Policy) -> Decision | None:
    """The one action the task needs now, or None (it is queued, held, or still within grace)."""
    state = obs.state
    if state.terminal or obs.held:
        return None
    if obs.queued and not obs.exhausted:
        return _stranded_in_queue(obs, policy)
    quiet_s = _seconds(obs.now, state.last_event_at or state.created_at)
    if quiet_s < policy.grace_s and not obs.exhausted:
        return None
    if state.attempt >= policy.max_attempts:
        return _exhausted(state)  # no runner claims attempt n+1: nothing to wait for
    # The redelivery wait runs from the task's last event: the runner_lost or task_requeued itself.
    lost_or_unstarted = state.waiting_since is not None or state.attempt == 0
    redelivery_due = quiet_s >= policy.redelivery_s and lost_or_unstarted
    if obs.exhausted or redelivery_due:
        return _gone(obs)
    if state.attempt > 0 and state.waiting_since is None:
        who = f"runner {state.runner_id}" if state.runner_id else "its runner"
        return Decision(
            Action.MARK_LOST,
            f"{who} stopped heartbeating during attempt {state.attempt}; waiting for a runner "
            f"to start attempt {state.attempt + 1}",
        )
    return None


def _gone(obs: Observation) -> Decision:
    """Its work message will not be delivered again: requeue it, or end it with a reason."""
    state = obs.state
    if state.requeued_attempt == state.attempt:
        return Decision(
            Action.FAIL,
            f"requeued after attempt {state.attempt}, but no runner claimed it; check that runners "
            "are running and that the runner consumer exists ('bgagent admin init'), then resubmit it.",
            code=STRANDED,
        )
    why = "its work message was dropped" if obs.exhausted else "no runner picked it up again"
    return Decision(Action.REQUEUE, f"{why} after attempt {state.attempt}; requeued for a runner")


def _exhausted(state: TaskState) -> Decision:
    return Decision(
        Action.FAIL,
        f"the runner was lost in each of {state.attempt} attempts (the last one: "
        f"{state.runner_id or 'unknown'}); it will not be retried. Look at that runner's logs, "
        "then resubmit the task.",
        code=RUNNER_LOST,
    )


def _stranded_in_queue(obs: Observation, policy: Policy) -> Decision | None:
    state = obs.state
    if obs.live_runners > 0:
        return None
    since = state.waiting_since or state.created_at
    if obs.runner_seen_at is not None and obs.runner_seen_at > since:
        since = obs.runner_seen_at
    if _seconds(obs.now, since) < policy.stranded_after_s:
        return None
    return Decision(
        Action.FAIL,
        f"no runner was alive to take it for {policy.stranded_after_s:.0f} s; start a runner "
        "('bgagent dev up' locally) and resubmit it.",
        code=STRANDED,
    )


def _seconds(now: datetime, then: datetime) -> float:
    return (now - then).total_seconds()
