"""One task submitted over HTTP is ONE trace across admission, runner, query and fanout.

Every service of the e2e stack writes its finished spans to ``<root>/otel/<service>.jsonl``
(``BGAGENT_OTEL_FILE``, see conftest.py). The trace context travels in the NATS headers of the
events: admission's request span → ``task_submitted`` → the runner's task span (a child) with its
turn / model call / tool call spans → every runner event → the projector's and fanout's batch
spans, which LINK to it (a batch holds events of many tasks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bgagent_cli.demo import DEMO_SCRIPT, make_demo_repo

from .conftest import E2E, wait_until

pytestmark = pytest.mark.e2e

FIX_TURNS: list[dict[str, Any]] = DEMO_SCRIPT[0]["turns"]


def _rows(e2e: E2E, service: str) -> list[dict[str, Any]]:
    path = e2e.home.parent / "otel" / f"{service}.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written right now
    return rows


def _spans(e2e: E2E, service: str) -> list[dict[str, Any]]:
    return [r for r in _rows(e2e, service) if r.get("kind") == "span"]


def _in_trace(span: dict[str, Any], trace_id: str) -> bool:
    return span["trace_id"] == trace_id or any(link["trace_id"] == trace_id for link in span["links"])


def test_one_task_is_one_trace_across_every_service(e2e: E2E, tmp_path: Path) -> None:
    repo = make_demo_repo(tmp_path)
    token = e2e.script(FIX_TURNS)
    [submitted] = e2e.cli_json("submit", "--repo", str(repo), "--task", f"fix the failing test {token}")
    task_id = submitted["task_id"]
    e2e.wait_status(task_id, "COMPLETED", timeout=60)

    def task_span() -> dict[str, Any] | None:
        return next(
            (
                s
                for s in _spans(e2e, "runner")
                if s["name"] == f"task {task_id}" and "bgagent.attempt" in s["attributes"]
            ),
            None,
        )

    task: dict[str, Any] = wait_until(task_span, 20, f"the runner's span of {task_id}")
    trace_id = task["trace_id"]
    assert task["attributes"]["bgagent.task_id"] == task_id
    assert task["attributes"]["bgagent.attempt"] == 1
    assert task["attributes"]["bgagent.status"] == "COMPLETED"

    # admission: the HTTP request span is the task span's parent (it came in task_submitted's headers)
    [request] = [s for s in _spans(e2e, "admission") if s["span_id"] == task["parent"]]
    assert request["trace_id"] == trace_id
    assert request["span_kind"] == "SERVER"
    assert request["parent"] is None
    assert request["name"].startswith("POST")
    assert task["parent_remote"] is True

    # runner: turns under the task span, a model call in each turn, the tools under their turns
    runner = [s for s in _spans(e2e, "runner") if s["trace_id"] == trace_id]
    turns = {s["span_id"]: s for s in runner if s["name"].startswith("turn ")}
    assert len(turns) == len(FIX_TURNS)
    assert all(t["parent"] == task["span_id"] for t in turns.values())
    calls = {s["span_id"]: s for s in runner if s["name"] == "model call"}
    assert len(calls) == len(FIX_TURNS)
    assert {c["parent"] for c in calls.values()} == set(turns)
    assert all(c["attributes"]["bgagent.model.output_tokens"] > 0 for c in calls.values())
    # the anthropic SDK's own HTTP span of each call (when the SDK emits one) sits under ours
    sdk = [s for s in runner if s["name"] == "anthropic.messages.create"]
    assert {s["parent"] for s in sdk} <= set(calls)
    tools = [s for s in runner if s["name"].startswith("tool ")]
    expected_tools = sum(len(turn.get("tool_uses", [])) for turn in FIX_TURNS)
    assert len(tools) == expected_tools
    assert {t["name"] for t in tools} == {"tool bash", "tool str_replace_based_edit_tool"}
    assert all(t["parent"] in turns for t in tools)

    # query and fanout: batch spans linked to the task's trace (each event carried it)
    projected = wait_until(
        lambda: [s for s in _spans(e2e, "query") if s["name"] == "project batch" and _in_trace(s, trace_id)],
        20,
        "a projector batch linked to the task's trace",
    )
    fanned = wait_until(
        lambda: [s for s in _spans(e2e, "fanout") if s["name"] == "fanout batch" and _in_trace(s, trace_id)],
        20,
        "a fanout batch linked to the task's trace",
    )
    linked_spans = {
        link["span_id"] for s in [*projected, *fanned] for link in s["links"] if link["trace_id"] == trace_id
    }
    known = {request["span_id"], *(s["span_id"] for s in runner)}
    assert linked_spans <= known, "a batch links to a span that is not part of the task's trace"
    assert request["span_id"] in linked_spans  # task_submitted itself
    assert linked_spans & {s["span_id"] for s in runner}  # the runner's events


def test_services_export_their_metrics(e2e: E2E, tmp_path: Path) -> None:
    repo = make_demo_repo(tmp_path)
    token = e2e.script(FIX_TURNS)
    [submitted] = e2e.cli_json("submit", "--repo", str(repo), "--task", f"fix it {token}")
    e2e.wait_status(submitted["task_id"], "COMPLETED", timeout=60)

    def points(service: str, name: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for row in _rows(e2e, service):
            if row.get("kind") == "metric" and row.get("name") == name:
                found = row["data"]["data_points"]  # cumulative: the last export holds the totals
        return found

    def completed() -> list[dict[str, Any]]:
        return [
            p for p in points("query", "bgagent.tasks.terminal") if p["attributes"]["status"] == "COMPLETED"
        ]

    assert wait_until(completed, 20, "the projector's count of completed tasks")[0]["value"] >= 1
    tokens = wait_until(lambda: points("runner", "bgagent.model.tokens"), 20, "the runner's token counter")
    assert {p["attributes"]["type"] for p in tokens} >= {"input", "output"}
    assert wait_until(lambda: points("runner", "bgagent.runner.queue_depth"), 20, "the queue depth gauge")
    assert wait_until(lambda: points("query", "bgagent.projection.lag"), 20, "the projection lag")
    assert wait_until(lambda: points("fanout", "bgagent.fanout.lag_events"), 20, "the fanout lag")
