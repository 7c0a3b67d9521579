"""The HTTP services' request spans: one per request, named per route, current in the handler (what
the handler appends carries it), and JSON logs that survive Litestar's own logging config.

The SDK providers are installed process-wide, so this runs in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from bgagent_web.telemetry import span_details

SCRIPT = textwrap.dedent(
    """
    import json, logging, sys
    from litestar import Litestar, get
    from litestar.testing import TestClient
    from bgagent_eventstore.telemetry import reapply_log_format, setup_telemetry, trace_headers
    from bgagent_web import health_handlers
    from bgagent_web.telemetry import otel_plugin

    logging.basicConfig(level="INFO", stream=sys.stderr, format="%(levelname)s %(message)s")
    setup_telemetry("admission")

    @get("/v1/tasks/{task_id:str}", sync_to_thread=False)
    def task(task_id: str) -> dict[str, str]:
        logging.getLogger("bgagent_admission").info("handling %s", task_id, extra={"task_id": task_id})
        return trace_headers()  # what an append from this handler would carry

    async def ready() -> bool:
        return True

    app = Litestar([task, *health_handlers(ready)], plugins=[otel_plugin()])
    reapply_log_format()
    with TestClient(app) as client:
        print(json.dumps(client.get("/v1/tasks/01J0000000000000000000000A").json()))
        assert client.get("/healthz").status_code == 200
    """
)


def test_a_request_span_is_current_in_the_handler_and_logs_stay_json(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "BGAGENT_"))}
    env.update({"BGAGENT_OTEL_FILE": str(tmp_path / "{service}.jsonl"), "BGAGENT_LOG_FORMAT": "json"})
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    headers = json.loads(done.stdout.splitlines()[-1])
    rows = [json.loads(line) for line in (tmp_path / "admission.jsonl").read_text().splitlines()]
    [span] = [r for r in rows if r["kind"] == "span"]  # /healthz is not traced
    assert span["name"] == "GET /v1/tasks/{id}"
    assert span["span_kind"] == "SERVER"
    assert headers["traceparent"].startswith(f"00-{span['trace_id']}-{span['span_id']}-")
    logs = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    [handled] = [line for line in logs if line["message"].startswith("handling")]
    assert handled["task_id"] == "01J0000000000000000000000A"
    assert handled["trace_id"] == span["trace_id"]
    assert handled["service"] == "admission"


def test_span_names_hold_the_route_not_the_ids() -> None:
    def name(method: str, path: str) -> str:
        return span_details({"type": "http", "method": method, "path": path})[0]  # type: ignore[typeddict-item]

    assert name("POST", "/v1/tasks") == "POST /v1/tasks"
    assert name("GET", "/v1/tasks/01J8ZK3Q5W9XJ2M4N6P8R0T2V4/events") == "GET /v1/tasks/{id}/events"
    assert name("POST", "/v1/tasks/01J8ZK3Q5W9XJ2M4N6P8R0T2V4/approvals/12") == (
        "POST /v1/tasks/{id}/approvals/{id}"
    )
    assert name("GET", "/ui") == "GET /ui"
