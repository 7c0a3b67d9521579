"""OpenTelemetry for every bgagent service: providers, exporters, NATS header propagation, metrics, JSON logs.

Each service calls ``setup_telemetry("<service>")`` once in its entrypoint, after
``logging.basicConfig``. It installs an SDK TracerProvider and MeterProvider and exports to:

- OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set
  (the exporter reads the standard ``OTEL_EXPORTER_OTLP_*`` variables itself);
- a JSON-lines file when ``BGAGENT_OTEL_FILE=<path>`` is set (``{service}`` and ``{pid}`` in the path are
  replaced): one line per finished span, one line per metric at each metric export
  (``OTEL_METRIC_EXPORT_INTERVAL``, milliseconds) and at exit;
- nowhere otherwise (spans still get real ids, so logs and message headers carry them).

Trace context crosses NATS in the message headers (W3C ``traceparent``/``tracestate``) through the
SDK's global propagator: ``inject_headers`` on publish, ``context_from_headers`` on receipt.

``BGAGENT_LOG_FORMAT=json`` turns every log line into one JSON object with ``task_id`` and
``trace_id`` when known; the default stays each service's text format.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import sys
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

__all__ = [
    "FILE_ENV",
    "LOG_FORMAT_ENV",
    "JsonFormatter",
    "Telemetry",
    "bind_task_id",
    "build_providers",
    "context_from_headers",
    "current_task_id",
    "inject_headers",
    "linked_span",
    "meter",
    "new_traceparent",
    "reapply_log_format",
    "record_attempt_outcome",
    "record_github_error",
    "record_lag",
    "record_model_usage",
    "record_reconciler_action",
    "record_task_outcome",
    "setup_telemetry",
    "span_context_from_headers",
    "trace_headers",
    "tracer",
    "use_json_logs",
]

INSTRUMENTATION = "bgagent"
FILE_ENV = "BGAGENT_OTEL_FILE"
LOG_FORMAT_ENV = "BGAGENT_LOG_FORMAT"
_OTLP_ENVS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

logger = logging.getLogger(__name__)


def tracer() -> trace.Tracer:
    """bgagent's tracer (the global provider's; a no-op one before ``setup_telemetry``)."""
    return trace.get_tracer(INSTRUMENTATION)


def meter() -> metrics.Meter:
    return metrics.get_meter(INSTRUMENTATION)


# --- propagation over NATS headers ---------------------------------------------------------------


def inject_headers(
    headers: MutableMapping[str, str], context: Context | None = None
) -> MutableMapping[str, str]:
    """Write the W3C trace headers of ``context`` (default: the current one) into ``headers``."""
    propagate.inject(headers, context=context)
    return headers


def context_from_headers(headers: Mapping[str, str] | None) -> Context:
    """The trace context a message carries (an empty context when it carries none)."""
    return propagate.extract(dict(headers or {}))


def span_context_from_headers(headers: Mapping[str, str] | None) -> SpanContext | None:
    """The (remote) span context in ``headers``, or None when there is no valid one."""
    ctx = trace.get_current_span(context_from_headers(headers)).get_span_context()
    return ctx if ctx.is_valid else None


def _fresh_root() -> Context:
    span_context = SpanContext(
        trace_id=secrets.randbits(128) or 1,
        span_id=secrets.randbits(64) or 1,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context))


def trace_headers(traceparent: str | None = None) -> dict[str, str]:
    """The trace headers for a message: of ``traceparent`` when given (its span is the parent), else
    of the current span, else of a fresh root (so that every message carries a ``traceparent``)."""
    explicit = context_from_headers({"traceparent": traceparent}) if traceparent else None
    headers: dict[str, str] = {}
    inject_headers(headers, explicit)
    if "traceparent" not in headers:
        inject_headers(headers, _fresh_root())
    return headers


def new_traceparent() -> str:
    """A W3C traceparent that starts a new trace (for a message sent outside any span)."""
    headers: dict[str, str] = {}
    inject_headers(headers, _fresh_root())
    return headers["traceparent"]


@contextlib.contextmanager
def linked_span(
    name: str,
    headers: Iterable[Mapping[str, str] | None],
    *,
    attributes: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.CONSUMER,
    max_links: int = 64,
) -> Iterator[Span]:
    """A span (current while the block runs) LINKED to the trace context of each message's headers.

    For consumers that handle many tasks at once (projector, fanout): one span per batch whose
    links lead to every distinct producer span in it, so each task's trace reaches the batch.
    """
    links: list[Link] = []
    seen: set[tuple[int, int]] = set()
    for one in headers:
        ctx = span_context_from_headers(one)
        if ctx is None or (ctx.trace_id, ctx.span_id) in seen:
            continue
        seen.add((ctx.trace_id, ctx.span_id))
        links.append(Link(ctx))
        if len(links) >= max_links:
            break
    with tracer().start_as_current_span(
        name, kind=kind, links=links, attributes=dict(attributes or {})
    ) as span:
        yield span


# --- task id in logs ------------------------------------------------------------------------------

_TASK_ID: ContextVar[str | None] = ContextVar("bgagent_task_id", default=None)


def bind_task_id(task_id: str | None) -> None:
    """Log lines of the current asyncio task (and tasks it starts later) carry ``task_id``."""
    _TASK_ID.set(task_id)


def current_task_id() -> str | None:
    return _TASK_ID.get()


# --- metrics --------------------------------------------------------------------------------------
# The API's proxy meter hands out instruments before setup_telemetry and binds them when it runs.

_meter = meter()
_task_outcomes = _meter.create_counter(
    "bgagent.tasks.terminal", unit="{task}", description="Tasks that reached a terminal state, by status"
)
_attempt_outcomes = _meter.create_counter(
    "bgagent.runner.attempts",
    unit="{attempt}",
    description="Task attempts a runner finished, by final status",
)
_model_tokens = _meter.create_counter(
    "bgagent.model.tokens", unit="{token}", description="Model tokens, by model and type"
)
_model_cost = _meter.create_counter("bgagent.model.cost", unit="USD", description="Model cost in US dollars")
_github_errors = _meter.create_counter(
    "bgagent.github.errors",
    unit="{error}",
    description="GitHub API answers >= 400 and transport failures, by service, method and status",
)
_reconciler_actions = _meter.create_counter(
    "bgagent.reconciler.actions", unit="{action}", description="Reconciler actions, by action"
)
_lag_seconds = {
    "projection": _meter.create_histogram(
        "bgagent.projection.lag", unit="s", description="Time from storing an event to projecting it"
    ),
    "fanout": _meter.create_histogram(
        "bgagent.fanout.lag", unit="s", description="Time from storing an event to fanout acking it"
    ),
}
_lag_events = {
    "projection": _meter.create_gauge(
        "bgagent.projection.lag_events", unit="{event}", description="Events stored but not yet projected"
    ),
    "fanout": _meter.create_gauge(
        "bgagent.fanout.lag_events", unit="{event}", description="Events pending for the fanout consumer"
    ),
}


def record_task_outcome(status: str, code: str | None = None) -> None:
    """A task reached terminal ``status`` (counted once, by the projector)."""
    attributes = {"status": status, **({"code": code} if code else {})}
    _task_outcomes.add(1, attributes)


def record_attempt_outcome(status: str) -> None:
    _attempt_outcomes.add(1, {"status": status})


def record_model_usage(
    model: str,
    *,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    cost_usd: float = 0.0,
) -> None:
    for kind, count in (
        ("input", input_tokens),
        ("output", output_tokens),
        ("cache_read", cache_read_tokens),
        ("cache_write", cache_write_tokens),
    ):
        if count:
            _model_tokens.add(count, {"model": model, "type": kind})
    if cost_usd:
        _model_cost.add(cost_usd, {"model": model})


def record_github_error(service: str, method: str, status: int | str) -> None:
    """A GitHub API call answered ``status`` >= 400 (or failed: status ``"transport"``)."""
    _github_errors.add(1, {"service": service, "method": method, "status": str(status)})


def record_reconciler_action(action: str) -> None:
    """The reconciler did ``action`` (e.g. ``failed_runner_lost``, ``requeued``)."""
    _reconciler_actions.add(1, {"action": action})


def record_lag(consumer: str, *, seconds: float | None, events: int | None) -> None:
    """Lag of ``consumer`` (``projection`` or ``fanout``): age of the oldest event just handled, and
    how many events are still waiting behind it."""
    if seconds is not None:
        _lag_seconds[consumer].record(max(0.0, seconds))
    if events is not None:
        _lag_events[consumer].set(events)


# --- JSON logs ------------------------------------------------------------------------------------

_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_STRING_EXTRAS = frozenset({"task_id", "subject", "event_type", "runner_id", "request_id"})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, service, message, task_id, trace_id, span_id, …

    Works under the runner's RedactingFilter (it formats the already-redacted message and
    traceback). Extra fields are kept when they are numbers or booleans, and for a few known
    string keys (``task_id``, ``subject``, …): arbitrary strings could hold what redaction misses.
    """

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        row: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "service": self.service,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key in _RECORD_FIELDS or key.startswith("_"):
                continue
            if isinstance(value, bool | int | float) or (key in _STRING_EXTRAS and isinstance(value, str)):
                row[key] = value
        task_id = row.get("task_id") or current_task_id()
        if task_id:
            row["task_id"] = task_id
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            row.setdefault("trace_id", format(span.trace_id, "032x"))
            row.setdefault("span_id", format(span.span_id, "016x"))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            row["exception"] = record.exc_text
        if record.stack_info:
            row["stack"] = self.formatStack(record.stack_info)
        return json.dumps(row, default=str, ensure_ascii=False)


_json_service: str | None = None


def use_json_logs(service: str) -> None:
    """Format the lines of every handler (the root's, and those of loggers with their own) as JSON;
    adds a stderr handler to the root when it has none."""
    global _json_service
    _json_service = service
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    loggers = [root, *(x for x in logging.root.manager.loggerDict.values() if isinstance(x, logging.Logger))]
    for one in loggers:
        for handler in one.handlers:
            handler.setFormatter(JsonFormatter(service))


def reapply_log_format() -> None:
    """JSON logs again, after a framework replaced the handlers (Litestar's default logging config
    does, when the app is built): a no-op unless ``BGAGENT_LOG_FORMAT=json``."""
    if _json_service is not None:
        use_json_logs(_json_service)


# --- setup ----------------------------------------------------------------------------------------


class Telemetry:
    """The installed providers (``shutdown()`` flushes and closes the exporters)."""

    def __init__(self, service: str, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
        self.service = service
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


_installed: Telemetry | None = None


def build_providers(
    service: str, env: Mapping[str, str] | None = None, *, shutdown_on_exit: bool = True
) -> tuple[TracerProvider, MeterProvider]:
    """A TracerProvider and a MeterProvider for ``service`` with the exporters ``env`` asks for."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    env = os.environ if env is None else env
    resource = Resource.create({"service.name": service, "service.namespace": "bgagent"})
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=shutdown_on_exit)
    readers: list[MetricReader] = []
    if any(env.get(name) for name in _OTLP_ENVS):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    path = env.get(FILE_ENV)
    if path:
        from ._otel_export import FileMetricExporter, FileSpanExporter, JsonLinesFile

        out = JsonLinesFile(path.replace("{service}", service).replace("{pid}", str(os.getpid())))
        tracer_provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(out)))
        readers.append(PeriodicExportingMetricReader(FileMetricExporter(out, service)))
    meter_provider = MeterProvider(
        resource=resource, metric_readers=readers, shutdown_on_exit=shutdown_on_exit
    )
    return tracer_provider, meter_provider


def setup_telemetry(service: str, env: Mapping[str, str] | None = None) -> Telemetry:
    """Install bgagent's providers and propagation as the process globals (once; later calls return
    the first installation), and JSON logs when ``BGAGENT_LOG_FORMAT=json``."""
    global _installed
    if _installed is not None:
        return _installed
    env = os.environ if env is None else env
    tracer_provider, meter_provider = build_providers(service, env)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    if env.get(LOG_FORMAT_ENV, "").strip().lower() == "json":
        use_json_logs(service)
    _installed = Telemetry(service, tracer_provider, meter_provider)
    targets = [name for name in (FILE_ENV, *_OTLP_ENVS) if env.get(name)]
    logger.debug("telemetry for %s exports to %s", service, ", ".join(targets) or "nothing")
    return _installed
