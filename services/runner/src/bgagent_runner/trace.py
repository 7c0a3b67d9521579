"""The full trace of an attempt (tasks submitted with ``trace: true``), stored in the Object Store.

Events carry previews only; the trace keeps the whole conversation: system
prompt, every model turn's text and tool inputs, every tool output (after the
output cap), nudges, and the end. Secrets are redacted (``bgagent_contracts.redact``,
with the runner's own secrets as exact values) from every string, dictionary keys
included, before anything is kept. The object is gzipped JSON lines named
``<task_id>/attempt-<n>.jsonl.gz`` in the ``<prefix>_traces`` bucket; ``trace_stored``
names it, just before the terminal event.
"""

from __future__ import annotations

import gzip
import logging
from datetime import UTC, datetime
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from bgagent_contracts import Event, TraceStored
from bgagent_contracts.preview import redact
from bgagent_contracts.subjects import traces_bucket

from .session import TaskSession

logger = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()


def object_name(task_id: str, attempt: int) -> str:
    return f"{task_id}/attempt-{attempt}.jsonl.gz"


class Trace:
    """Append-only record of one attempt; a no-op when the task did not ask for a trace."""

    def __init__(self, enabled: bool, secrets: tuple[str, ...]) -> None:
        self.enabled = enabled
        self.secrets = secrets
        self.entries: list[dict[str, Any]] = []

    def record(self, kind: str, **data: Any) -> None:
        if not self.enabled:
            return
        clean = {k: self._scrub(v) for k, v in data.items()}
        self.entries.append({"ts": datetime.now(UTC).isoformat(), "kind": kind, **clean})

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return redact(value, self.secrets)
        if isinstance(value, dict):
            return {redact(str(k), self.secrets): self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(v) for v in value]
        return value

    def encode(self) -> bytes:
        lines = b"".join(_encoder.encode(entry) + b"\n" for entry in self.entries)
        return gzip.compress(lines)


def attach(trace: Trace, session: TaskSession, js: JetStreamContext, prefix: str) -> None:
    """Store the trace and append ``trace_stored`` right before the attempt's terminal event."""
    if not trace.enabled:
        return

    async def store(terminal: Event) -> list[Event]:
        trace.record("end", event=type(terminal).__name__)
        data = trace.encode()
        name = object_name(session.task_id, session.attempt)
        try:
            bucket = await js.object_store(traces_bucket(prefix))
            await bucket.put(name, data)
        except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
            logger.warning(
                "could not store the trace of %s: %s", session.task_id, redact(str(exc), trace.secrets)
            )
            return []
        return [TraceStored(**session.common(), object_name=name, size_bytes=len(data))]

    session.before_terminal = store
