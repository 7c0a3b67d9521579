"""The JSON-lines file exporters behind ``BGAGENT_OTEL_FILE`` (imported only when it is set).

One line per finished span (``"kind": "span"``) and, at each metric export, one line per
metric (``"kind": "metric"``). Several threads export (the span processor runs where a span
ends, the metric reader on its own thread), so every line is written whole under a lock.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


class JsonLinesFile:
    """An append-only file shared by the span and metric exporters of one process."""

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._out: IO[str] | None = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._users = 0

    def use(self) -> JsonLinesFile:
        """One more exporter writes here; the file closes when the last one shuts down."""
        with self._lock:
            self._users += 1
        return self

    def write(self, rows: Sequence[dict[str, Any]]) -> bool:
        text = "".join(json.dumps(row, default=str, separators=(",", ":")) + "\n" for row in rows)
        with self._lock:
            if self._out is None:
                return False
            self._out.write(text)
            self._out.flush()
        return True

    def close(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users <= 0 and self._out is not None:
                self._out.close()
                self._out = None


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def span_row(span: ReadableSpan) -> dict[str, Any]:
    """The JSON form of one finished span."""
    ctx = span.get_span_context()
    assert ctx is not None
    parent = span.parent
    start, end = span.start_time or 0, span.end_time or 0
    return {
        "kind": "span",
        "service": span.resource.attributes.get(SERVICE_NAME),
        "name": span.name,
        "trace_id": _hex(ctx.trace_id, 32),
        "span_id": _hex(ctx.span_id, 16),
        "parent": _hex(parent.span_id, 16) if parent is not None and parent.is_valid else None,
        "parent_remote": bool(parent is not None and parent.is_remote),
        "span_kind": span.kind.name,
        "start_ns": start,
        "duration_ms": round((end - start) / 1e6, 3),
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "links": [
            {
                "trace_id": _hex(link.context.trace_id, 32),
                "span_id": _hex(link.context.span_id, 16),
                "attributes": dict(link.attributes or {}),
            }
            for link in span.links
        ],
        "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events],
    }


class FileSpanExporter(SpanExporter):
    def __init__(self, out: JsonLinesFile) -> None:
        self._out = out.use()
        self._shut = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        ok = self._out.write([span_row(s) for s in spans])
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        if not self._shut:
            self._shut = True
            self._out.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class FileMetricExporter(MetricExporter):
    def __init__(self, out: JsonLinesFile, service: str) -> None:
        super().__init__()
        self._out = out.use()
        self._service = service
        self._shut = False

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        rows: list[dict[str, Any]] = []
        for resource_metrics in metrics_data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    data = json.loads(metric.to_json(indent=None))
                    rows.append({"kind": "metric", "service": self._service, **data})
        ok = self._out.write(rows) if rows else True
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if not self._shut:
            self._shut = True
            self._out.close()
