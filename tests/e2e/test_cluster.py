"""On a 3-node NATS cluster (R3), the stream leader SIGKILLed mid-task loses and doubles nothing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bgagent_cli.demo import DEMO_SCRIPT
from bgagent_contracts import TERMINAL_EVENT_TYPES
from bgagent_contracts.subjects import task_filter
from bgagent_eventstore import connect, read_direct
from bgagent_testing.servers import stream_leader

from .conftest import E2E, wait_until
from .test_query_recovery import _checkpoint, _snapshot

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

FIX_TURNS: list[dict[str, Any]] = DEMO_SCRIPT[0]["turns"]


def _nats(e2e: E2E, fn: Any) -> Any:
    """Run ``fn(nc)`` on a fresh operator connection to every node of the cluster."""

    async def go() -> Any:
        nc = await connect(e2e.client["nats_url"], name="e2e-cluster", auth=e2e.nats_auth("operator"))
        try:
            return await fn(nc)
        finally:
            await nc.close()

    return asyncio.run(go())


def _leader(e2e: E2E) -> str:
    result: str = _nats(e2e, lambda nc: stream_leader(nc.jetstream(), e2e.client["stream"]))
    return result


def _stream_seqs(e2e: E2E, task_id: str) -> list[int]:
    async def read(nc: Any) -> list[int]:
        log = await read_direct(nc, e2e.client["stream"], task_filter(task_id, e2e.client["prefix"]))
        return [r.seq for r in log.records]

    result: list[int] = _nats(e2e, read)
    return result


def _last_stream_seq(e2e: E2E) -> int:
    async def last(nc: Any) -> int:
        return int((await nc.jetstream().stream_info(e2e.client["stream"])).state.last_seq)

    result: int = _nats(e2e, last)
    return result


def test_stream_leader_killed_mid_task_the_task_completes_once_and_nothing_is_lost(
    e2e_cluster: E2E,
) -> None:
    e2e = e2e_cluster
    status = e2e.cli_json("dev", "status")  # exit 0: every process runs
    assert [row["name"] for row in status][:3] == ["nats-n1", "nats-n2", "nats-n3"]
    assert len(e2e.client["nats_url"].split(",")) == 3
    info = _nats(e2e, lambda nc: nc.jetstream().stream_info(e2e.client["stream"]))
    assert info.config.num_replicas == 3
    assert len(info.cluster.replicas) == 2
    init = e2e.cli_json("admin", "init")[0]  # on this stack it provisions at R3 too: nothing to change
    assert init["created"] == []
    assert init["updated"] == []
    e2e.github.create_repo(
        "acme", "calc", {"calc.py": "def add(a, b):\n    return a - b\n", "README.md": "x\n"}
    )
    issue = e2e.github.create_issue("acme", "calc", "add() subtracts")
    slow = {"text": "Building first.", "tool_uses": [{"name": "bash", "input": {"command": "sleep 3"}}]}
    token = e2e.script([slow, *FIX_TURNS[2:]])
    submitted = e2e.cli_json(
        "submit", "--repo", "acme/calc", "--issue", str(issue), "--task", f"fix add {token}"
    )
    task_id: str = submitted[0]["task_id"]
    watchers = {t: e2e.cli_popen("watch", task_id, "--transport", t, "-o", "json") for t in ("sse", "nats")}
    try:
        e2e.wait_event(task_id, "tool_called")  # the `sleep 3` runs: the task is mid-flight
        leader = _leader(e2e)
        e2e.stack.kill(f"nats-{leader}")  # SIGKILL the node that leads the task stream
        assert not e2e.stack.owns(e2e.stack.proc(f"nats-{leader}"))
        outputs = {t: w.communicate(timeout=60) for t, w in watchers.items()}
    finally:
        for w in watchers.values():
            if w.poll() is None:
                w.kill()
                w.communicate()
    assert _leader(e2e) != leader  # the two others elected a new one

    stream_seqs = _stream_seqs(e2e, task_id)
    for transport, (out, err) in outputs.items():
        assert watchers[transport].returncode == 0, f"{transport}: {err}"
        views = [json.loads(line) for line in out.splitlines() if line.strip()]
        seqs = [v["seq"] for v in views]
        assert seqs == stream_seqs, f"{transport} watch is not the task's log, once each, in order: {err}"
        assert views[-1]["type"] == "task_completed", transport

    task = e2e.wait_status(task_id, "COMPLETED")
    prs = [p for p in e2e.github.state()["pulls"] if p["head"]["ref"] == f"bgagent/{task_id}"]
    assert len(prs) == 1
    assert task["pr_url"] == prs[0]["html_url"]
    events = e2e.events(task_id)
    assert [e["seq"] for e in events] == stream_seqs
    assert [e["type"] for e in events if e["type"] in TERMINAL_EVENT_TYPES] == ["task_completed"]
    assert [e["type"] for e in events].count("pr_opened") == 1

    # The read models the projector built through the failover equal a rebuild from the stream.
    db = e2e.client["database_url"]
    last = _last_stream_seq(e2e)
    wait_until(lambda: asyncio.run(_checkpoint(db)) >= last, 30, "the projector to reach the stream's end")
    incremental = asyncio.run(_snapshot(db))
    done = e2e.cli("admin", "rebuild")
    assert done.returncode == 0, done.stderr
    assert asyncio.run(_snapshot(db)) == incremental

    # The killed node comes back on its store and ports and rejoins.
    e2e.stack.restart(f"nats-{leader}")
    assert e2e.stack.owns(e2e.stack.proc(f"nats-{leader}"))
