"""CLI contracts a user relies on: idempotent provisioning, Ctrl-C exit code, errors on stderr."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from bgagent_cli.demo import make_demo_repo

from .conftest import E2E

pytestmark = pytest.mark.e2e


def test_admin_init_twice_changes_nothing(e2e: E2E) -> None:
    first = e2e.cli_json("admin", "init")
    second = e2e.cli_json("admin", "init")
    assert second[0]["created"] == []
    assert second[0]["updated"] == []
    assert sorted(second[0]["unchanged"]) == sorted(
        first[0]["created"] + first[0]["updated"] + first[0]["unchanged"]
    )
    assert any(name.startswith("stream ") for name in second[0]["unchanged"])


def test_watch_exits_130_on_ctrl_c_and_the_task_keeps_running(e2e: E2E, tmp_path: Path) -> None:
    repo = make_demo_repo(tmp_path)
    token = e2e.script(
        [{"text": "Thinking.", "tool_uses": [{"name": "bash", "input": {"command": "sleep 20"}}]}]
    )
    task_id = e2e.cli_json("submit", "--repo", str(repo), "--task", f"wait {token}")[0]["task_id"]
    watcher = e2e.cli_popen("watch", task_id, "-o", "json")
    assert watcher.stdout is not None
    first = json.loads(watcher.stdout.readline())
    assert first["type"] == "task_submitted"
    e2e.wait_event(task_id, "tool_called")
    watcher.send_signal(signal.SIGINT)
    _, err = watcher.communicate(timeout=10)
    assert watcher.returncode == 130, err
    assert e2e.task(task_id)["status"] == "RUNNING"  # Ctrl-C stops watching, not the task
    assert e2e.cli("cancel", task_id).returncode == 0
    e2e.wait_status(task_id, "CANCELLED")


def test_errors_go_to_stderr_with_a_hint_and_json_stdout_stays_clean(e2e: E2E) -> None:
    done = e2e.cli(
        "submit",
        "--repo",
        "acme/x",
        "--task",
        "y",
        "--max-turns",
        "5",
        "--output",
        "json",
        "--idempotency-key",
        "bad key!",
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert "VALIDATION_ERROR" in done.stderr
    assert "Idempotency-Key" in done.stderr
    assert "hint:" in done.stderr
    missing = e2e.cli("status", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert missing.returncode == 2
    assert "NOT_FOUND" in missing.stderr
