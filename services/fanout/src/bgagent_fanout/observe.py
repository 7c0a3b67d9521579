"""Fanout's spans and metrics (``bgagent_eventstore.telemetry`` installs the providers).

A batch holds events of many tasks: its span LINKS to the trace context each event carries in
its headers (so every task's trace reaches the batch that rendered it); each task's comment
sync is a child span of the batch. Lag is recorded when a batch is acked.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol, TypeVar

from nats.aio.msg import Msg

from bgagent_eventstore.telemetry import linked_span, record_lag, tracer


class _Consumer(Protocol):
    last_acked_seq: int


C = TypeVar("C", bound=_Consumer)


def batch_span(
    fn: Callable[[C, Sequence[Msg]], Coroutine[Any, Any, None]],
) -> Callable[[C, Sequence[Msg]], Coroutine[Any, Any, None]]:
    """Wrap ``Fanout.handle_batch``: a span linked to the batch's events; lag once it is acked."""

    @functools.wraps(fn)
    async def traced(self: C, msgs: Sequence[Msg]) -> None:
        acked_before = self.last_acked_seq
        attributes = {"bgagent.batch.size": len(msgs)}
        with linked_span("fanout batch", (m.headers for m in msgs), attributes=attributes) as span:
            await fn(self, msgs)
            acked = self.last_acked_seq > acked_before
            span.set_attribute("bgagent.batch.acked", acked)
        if acked and msgs:
            oldest = min(m.metadata.timestamp.timestamp() for m in msgs)
            record_lag("fanout", seconds=time.time() - oldest, events=msgs[-1].metadata.num_pending)

    return traced


def sync_span(
    fn: Callable[[C, str], Coroutine[Any, Any, None]],
) -> Callable[[C, str], Coroutine[Any, Any, None]]:
    """Wrap ``Fanout._sync(task_id)``: one child span per task whose comment the batch renders."""

    @functools.wraps(fn)
    async def traced(self: C, task_id: str) -> None:
        with tracer().start_as_current_span("fanout sync", attributes={"bgagent.task_id": task_id}):
            await fn(self, task_id)

    return traced
