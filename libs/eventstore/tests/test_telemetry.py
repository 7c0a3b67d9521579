"""bgagent_eventstore.telemetry: W3C propagation through message headers, the JSON-lines file
exporter, JSON logs. The process-global providers are only ever installed in a subprocess, so
no other test in this process sees an SDK provider."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import Link

from bgagent_eventstore.telemetry import (
    FILE_ENV,
    JsonFormatter,
    bind_task_id,
    build_providers,
    context_from_headers,
    inject_headers,
    new_traceparent,
    span_context_from_headers,
    trace_headers,
)

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_span_context_survives_a_round_trip_through_message_headers() -> None:
    tracer_provider, meter_provider = build_providers("t", {}, shutdown_on_exit=False)
    tracer = tracer_provider.get_tracer("test")
    try:
        with tracer.start_as_current_span("publish") as span:
            headers: dict[str, str] = {"Nats-Msg-Id": "x"}
            inject_headers(headers)
        sent = span.get_span_context()
        assert headers["traceparent"].startswith(f"00-{sent.trace_id:032x}-{sent.span_id:016x}-")
        assert headers["Nats-Msg-Id"] == "x"

        received = span_context_from_headers(headers)
        assert received is not None
        assert (received.trace_id, received.span_id, received.is_remote) == (
            sent.trace_id,
            sent.span_id,
            True,
        )
        child = tracer.start_span("consume", context=context_from_headers(headers))
        child.end()
        assert child.get_span_context().trace_id == sent.trace_id
        assert child.parent is not None
        assert child.parent.span_id == sent.span_id
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()


def test_headers_without_a_context_give_an_empty_one() -> None:
    assert span_context_from_headers(None) is None
    assert span_context_from_headers({"traceparent": "garbage"}) is None
    assert not trace.get_current_span(context_from_headers({})).get_span_context().is_valid


def test_trace_headers_use_the_explicit_parent_else_the_current_span_else_a_fresh_root() -> None:
    assert trace_headers(PARENT)["traceparent"] == PARENT
    first, second = trace_headers()["traceparent"], trace_headers()["traceparent"]
    assert first != second  # outside any span: a new trace each time
    assert span_context_from_headers({"traceparent": first}) is not None
    assert span_context_from_headers({"traceparent": new_traceparent()}) is not None
    tracer_provider, meter_provider = build_providers("t", {}, shutdown_on_exit=False)
    try:
        with tracer_provider.get_tracer("test").start_as_current_span("request") as span:
            current = trace_headers()
            explicit = trace_headers(PARENT)
        ctx = span.get_span_context()
        assert current["traceparent"].startswith(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")
        assert explicit["traceparent"] == PARENT  # the explicit parent wins over the current span
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()


def test_the_file_exporter_writes_one_json_line_per_span_and_per_metric(tmp_path: Path) -> None:
    path = tmp_path / "otel" / "{service}.jsonl"
    tracer_provider, meter_provider = build_providers("query", {FILE_ENV: str(path)}, shutdown_on_exit=False)
    tracer = tracer_provider.get_tracer("test")
    linked = span_context_from_headers({"traceparent": PARENT})
    assert linked is not None
    with (
        tracer.start_as_current_span("batch", links=[Link(linked)], attributes={"n": 2}) as parent,
        tracer.start_as_current_span("child"),
    ):
        pass
    meter_provider.get_meter("test").create_counter("bgagent.test.things").add(3, {"kind": "a"})
    tracer_provider.shutdown()
    meter_provider.shutdown()

    rows = _lines(tmp_path / "otel" / "query.jsonl")
    spans = {r["name"]: r for r in rows if r["kind"] == "span"}
    batch, child = spans["batch"], spans["child"]
    ctx = parent.get_span_context()
    assert batch["trace_id"] == f"{ctx.trace_id:032x}"
    assert batch["span_id"] == f"{ctx.span_id:016x}"
    assert batch["parent"] is None
    assert batch["service"] == "query"
    assert batch["attributes"] == {"n": 2}
    assert batch["links"] == [
        {"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331", "attributes": {}}
    ]
    assert child["parent"] == batch["span_id"]
    assert child["trace_id"] == batch["trace_id"]
    [metric] = [r for r in rows if r["kind"] == "metric" and r["name"] == "bgagent.test.things"]
    [point] = metric["data"]["data_points"]
    assert (point["value"], point["attributes"]) == (3, {"kind": "a"})


def test_json_log_lines_carry_the_task_id_and_the_trace_id() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("runner"))
    log = logging.getLogger("bgagent.test.jsonlogs")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    tracer_provider, meter_provider = build_providers("runner", {}, shutdown_on_exit=False)

    def in_a_task() -> Any:
        bind_task_id("01JTASK")
        with tracer_provider.get_tracer("test").start_as_current_span("task") as span:
            log.warning("claimed %s", "it", extra={"seq": 7, "secret_text": "not kept"})
        return span.get_span_context()

    try:
        ctx = contextvars.copy_context().run(in_a_task)
        log.info("outside")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed", extra={"task_id": "01JOTHER"})
    finally:
        log.removeHandler(handler)
        tracer_provider.shutdown()
        meter_provider.shutdown()
    inside, outside, failed = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["message"] == "claimed it"
    assert inside["task_id"] == "01JTASK"
    assert inside["trace_id"] == f"{ctx.trace_id:032x}"
    assert inside["span_id"] == f"{ctx.span_id:016x}"
    assert (inside["level"], inside["service"], inside["seq"]) == ("WARNING", "runner", 7)
    assert "secret_text" not in inside
    assert "task_id" not in outside
    assert "trace_id" not in outside
    assert failed["task_id"] == "01JOTHER"
    assert "ValueError: boom" in failed["exception"]


SCRIPT = textwrap.dedent(
    """
    import logging, sys
    from bgagent_eventstore.telemetry import (
        bind_task_id, linked_span, record_reconciler_action, setup_telemetry, tracer,
    )
    logging.basicConfig(level="INFO", stream=sys.stderr, format="%(levelname)s %(message)s")
    telemetry = setup_telemetry("fanout")
    assert setup_telemetry("again") is telemetry
    bind_task_id("01JT")
    headers = [{"traceparent": sys.argv[1]}, {}, {"traceparent": sys.argv[1]}]
    with linked_span("fanout batch", headers, attributes={"bgagent.batch.size": 3}):
        with tracer().start_as_current_span("fanout sync"):
            logging.getLogger("x").info("synced")
    record_reconciler_action("requeued")
    """
)


def test_setup_telemetry_exports_linked_spans_metrics_and_json_logs(tmp_path: Path) -> None:
    path = tmp_path / "spans-{service}-{pid}.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "BGAGENT_"))}
    env.update({FILE_ENV: str(path), "BGAGENT_LOG_FORMAT": "json"})
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, PARENT], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    [written] = list(tmp_path.glob("spans-fanout-*.jsonl"))
    rows = _lines(written)
    spans = {r["name"]: r for r in rows if r["kind"] == "span"}
    batch, sync = spans["fanout batch"], spans["fanout sync"]
    assert batch["service"] == "fanout"
    assert batch["span_kind"] == "CONSUMER"
    assert [link["trace_id"] for link in batch["links"]] == ["0af7651916cd43dd8448eb211c80319c"]
    assert sync["parent"] == batch["span_id"]
    metrics = {r["name"]: r for r in rows if r["kind"] == "metric"}
    [point] = metrics["bgagent.reconciler.actions"]["data"]["data_points"]
    assert (point["value"], point["attributes"]) == (1, {"action": "requeued"})
    [line] = [json.loads(x) for x in done.stderr.splitlines() if '"synced"' in x]
    assert line["task_id"] == "01JT"
    assert line["trace_id"] == sync["trace_id"]
    assert line["span_id"] == sync["span_id"]


@pytest.mark.parametrize("value", ["", "text"])
def test_without_json_the_log_format_is_left_alone(tmp_path: Path, value: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "BGAGENT_"))}
    env["BGAGENT_LOG_FORMAT"] = value
    script = (
        "import logging, sys\n"
        "from bgagent_eventstore.telemetry import setup_telemetry\n"
        "logging.basicConfig(level='INFO', stream=sys.stderr, format='%(levelname)s %(message)s')\n"
        "setup_telemetry('query')\n"
        "logging.getLogger('x').info('plain')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["INFO plain"]
    assert not list(tmp_path.iterdir())
