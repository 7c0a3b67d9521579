"""``python -m bgagent_runner`` as a process: ready file, runs a task, exits cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ulid import ULID

from bgagent_contracts import Status
from bgagent_eventstore import NatsSettings
from bgagent_testing.model_server import ModelServer

pytestmark = pytest.mark.integration


async def test_runner_process_runs_a_task_and_stops_on_sigterm(
    kit: Any, provisioned: NatsSettings, model_server: ModelServer, origin: Path, tmp_path: Path
) -> None:
    tag = f"proc-{ULID()}"
    model_server.add_script(tag, [{"tool_uses": [{"name": "bash", "input": {"command": "echo x > x.txt"}}]}])
    ready = tmp_path / "ready"
    env = {
        **os.environ,
        "NATS_URL": provisioned.url,
        "BGAGENT_STREAM": provisioned.stream,
        "BGAGENT_PREFIX": provisioned.prefix,
        "BGAGENT_READY_FILE": str(ready),
        "BGAGENT_WORK_DIR": str(tmp_path / "work"),
        "BGAGENT_LOCAL_REPO_ROOTS": str(origin.parent),
        "ANTHROPIC_API_KEY": "test",
        "ANTHROPIC_BASE_URL": model_server.url,
        "BGAGENT_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bgagent_runner"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:

        async def is_ready() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            return ready.exists()

        await kit.wait_until(is_ready, timeout=15)
        task_id = await kit.submit(str(origin), f"{tag} as a process")
        state = await kit.wait_terminal(task_id, timeout=15)
        assert state.status is Status.COMPLETED
        assert state.result == "branch_pushed"
        assert kit.git(origin, "show", f"bgagent/{task_id}:x.txt") == "x"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0  # the timeout only bounds a failure: it exits cleanly when idle
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
