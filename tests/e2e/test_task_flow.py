"""End to end: tasks run through every service, driven only by the CLI and HTTP."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bgagent_cli.demo import DEMO_SCRIPT, make_demo_repo
from bgagent_contracts.subjects import task_filter
from bgagent_contracts.views import event_view
from bgagent_eventstore import connect, read_direct

from .conftest import E2E, wait_until

pytestmark = pytest.mark.e2e

FIX_TURNS: list[dict[str, Any]] = DEMO_SCRIPT[0]["turns"]


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)


def _submit(e2e: E2E, *args: str) -> str:
    lines = e2e.cli_json("submit", *args)
    task_id: str = lines[0]["task_id"]
    return task_id


def test_new_task_on_local_repo_completes_and_branch_holds_the_change(e2e: E2E, tmp_path: Path) -> None:
    repo = make_demo_repo(tmp_path)
    token = e2e.script(FIX_TURNS)
    done = e2e.cli(
        "submit", "--repo", str(repo), "--task", f"fix the failing test {token}", "--watch", "-o", "json"
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    task_id = lines[0]["task_id"]
    types = [line["type"] for line in lines[1:]]
    assert types[0] == "task_submitted"
    assert types[-1] == "task_completed"
    for expected in (
        "task_started",
        "workspace_ready",
        "agent_turn",
        "tool_called",
        "tool_result",
        "cost_updated",
    ):
        assert expected in types
    seqs = [line["seq"] for line in lines[1:]]
    assert seqs == sorted(set(seqs)), "watch printed events out of order or twice"
    calc = _git(repo, "show", f"bgagent/{task_id}:calc.py")
    assert calc.returncode == 0, calc.stderr
    assert "return a + b" in calc.stdout
    assert "return a - b" in _git(repo, "show", "main:calc.py").stdout
    task = e2e.wait_status(task_id, "COMPLETED")
    assert task["result"] == "branch_pushed"
    assert task["branch"] == f"bgagent/{task_id}"


def test_query_events_match_the_stream(e2e: E2E, tmp_path: Path) -> None:
    repo = make_demo_repo(tmp_path)
    token = e2e.script(FIX_TURNS)
    task_id = _submit(e2e, "--repo", str(repo), "--task", f"fix it {token}")
    assert e2e.cli("watch", task_id, "-o", "json").returncode == 0
    client = e2e.client

    async def stream_views() -> list[dict[str, Any]]:
        nc = await connect(client["nats_url"], name="e2e", auth=e2e.nats_auth("operator"))
        try:
            log = await read_direct(nc, client["stream"], task_filter(task_id, client["prefix"]))
        finally:
            await nc.close()
        return [event_view(r) for r in log.records]

    from_stream = json.loads(json.dumps(asyncio.run(stream_views())))
    wait_until(
        lambda: (t := e2e.task_or_none(task_id)) is not None and t["last_seq"] >= from_stream[-1]["seq"],
        what="query to project the whole task",
    )
    from_api = e2e.cli_json("events", task_id, "--limit", "1000")
    assert [v["seq"] for v in from_api] == [v["seq"] for v in from_stream]
    assert from_api == from_stream


def test_github_task_gets_one_pr_and_one_comment_ending_completed(e2e: E2E) -> None:
    e2e.github.create_repo(
        "acme", "calc", {"calc.py": "def add(a, b):\n    return a - b\n", "README.md": "x\n"}
    )
    issue = e2e.github.create_issue("acme", "calc", "add() subtracts")
    token = e2e.script(FIX_TURNS[2:])  # straight to the fix, then done
    done = e2e.cli(
        "submit",
        "--repo",
        "acme/calc",
        "--issue",
        str(issue),
        "--task",
        f"fix add {token}",
        "--watch",
        "-o",
        "json",
    )
    assert done.returncode == 0, done.stderr
    task_id = json.loads(done.stdout.splitlines()[0])["task_id"]
    state = e2e.github.state()
    prs = [p for p in state["pulls"] if p["head"]["ref"] == f"bgagent/{task_id}"]
    assert len(prs) == 1
    task = e2e.wait_status(task_id, "COMPLETED")
    assert task["pr_url"] == prs[0]["html_url"]

    def final_comment() -> list[dict[str, Any]] | None:
        comments = [
            c for c in e2e.github.state()["comments"] if not c["deleted"] and task_id in (c["body"] or "")
        ]
        return comments if comments and "COMPLETED" in comments[-1]["body"] else None

    comments = wait_until(final_comment, 20, "the issue comment to show COMPLETED")
    assert len(comments) == 1
    assert comments[0]["issue_number"] == issue
    assert prs[0]["html_url"] in comments[0]["body"]


def test_nudge_during_a_run_is_acknowledged_and_reaches_the_model(e2e: E2E, tmp_path: Path) -> None:
    repo = make_demo_repo(tmp_path)
    turns = [
        {"text": "Working.", "tool_uses": [{"name": "bash", "input": {"command": "sleep 3"}}]},
        *FIX_TURNS,
    ]
    token = e2e.script(turns)
    task_id = _submit(e2e, "--repo", str(repo), "--task", f"fix it {token}")
    e2e.wait_event(task_id, "tool_called")
    nudge = e2e.cli_json("nudge", task_id, "please also keep the docstring")
    nudge_id = nudge[0]["nudge_id"]
    ack = e2e.wait_event(task_id, "nudge_acknowledged")
    assert nudge_id in ack["event"]["nudge_ids"]
    assert e2e.cli("watch", task_id).returncode == 0
    requests = e2e.model_requests(token)
    assert len(requests) >= 2
    # The first request sent after the acknowledgement carries the nudge as a user message.
    last_user = requests[1]["body"]["messages"][-1]
    assert last_user["role"] == "user"
    assert "please also keep the docstring" in json.dumps(last_user)
    assert "please also keep the docstring" not in json.dumps(requests[0]["body"])


def _processes_running(marker: str) -> list[int]:
    """Live processes on this machine whose command line carries ``marker`` (a zombie's is empty)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_cancel_during_a_long_tool_call_kills_the_tool_ends_cancelled_and_pushes_nothing(
    e2e: E2E, tmp_path: Path
) -> None:
    repo = make_demo_repo(tmp_path)
    marker = f"long-build-{secrets.token_hex(6)}"
    long_build = {"name": "bash", "input": {"command": f"sleep 30; : {marker}"}}
    turns = [
        {"text": "Editing first.", "tool_uses": FIX_TURNS[2]["tool_uses"]},
        {"text": "Long build.", "tool_uses": [long_build]},
    ]
    token = e2e.script(turns)
    task_id = _submit(e2e, "--repo", str(repo), "--task", f"fix it {token}")
    watcher = e2e.cli_popen("watch", task_id, "-o", "json")
    wait_until(
        lambda: any(
            e["type"] == "tool_called" and "sleep 30" in e["event"]["input_preview"]
            for e in e2e.events(task_id)
        ),
        what="the long tool call to start",
    )
    wait_until(lambda: _processes_running(marker), what="the long tool's process")
    cancelled = e2e.cli_json("cancel", task_id)
    assert cancelled[0]["task_id"] == task_id
    out, err = watcher.communicate(timeout=15)
    assert watcher.returncode == 1, err
    views = [json.loads(line) for line in out.splitlines()]
    types = [v["type"] for v in views]
    assert types[-1] == "task_cancelled"
    # The running tool was interrupted: the cancel is followed by task_cancelled and nothing else
    # (no tool_result of the `sleep 30`, no further turn). The latency is bench/cancel_latency.py's.
    assert types[types.index("cancel_requested") + 1 :] == ["task_cancelled"], types
    wait_until(lambda: not _processes_running(marker), what="the interrupted tool's processes to be gone")
    task = e2e.wait_status(task_id, "CANCELLED")
    assert task["pr_url"] is None
    assert _git(repo, "branch", "--list", f"bgagent/{task_id}").stdout.strip() == ""
