"""The projector's spans and metrics (``bgagent_eventstore.telemetry`` installs the providers).

A batch spans many tasks, so its span is not a child of any of them: it LINKS to the trace
context each event carries in its headers, which puts the batch into every task's trace.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence

from opentelemetry.trace import Span

from bgagent_contracts import TaskState
from bgagent_eventstore import Delivered
from bgagent_eventstore.telemetry import linked_span, record_lag, record_task_outcome


@contextlib.contextmanager
def batch_span(batch: Sequence[Delivered]) -> Iterator[Span]:
    """The span of one projected batch, linked to its events' traces; lag recorded on success."""
    attributes = {
        "bgagent.batch.size": len(batch),
        "bgagent.seq.first": batch[0].seq if batch else 0,
        "bgagent.seq.last": batch[-1].seq if batch else 0,
    }
    with linked_span("project batch", (m.headers for m in batch), attributes=attributes) as span:
        yield span
    stored = [m.stored_at for m in batch if m.stored_at]
    record_lag(
        "projection",
        seconds=time.time() - min(stored) if stored else None,
        events=batch[-1].num_pending if batch else None,
    )


def count_outcomes(before: Mapping[str, TaskState], after: Mapping[str, TaskState]) -> None:
    """Count each task that a committed batch moved into a terminal state."""
    for task_id, state in after.items():
        prior = before.get(task_id)
        if state.status.terminal and (prior is None or not prior.status.terminal):
            record_task_outcome(state.status.value, state.error_code)
