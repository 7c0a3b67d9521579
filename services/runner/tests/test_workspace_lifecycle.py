"""A finished task leaves nothing in the work dir; a starting runner sweeps dead runners' workspaces."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ulid import ULID

from bgagent_contracts import CancelRequested, Status, ToolCalled
from bgagent_runner.cleanup import OWNER_FILE, runner_identity, write_owner
from bgagent_testing.model_server import ModelServer

pytestmark = pytest.mark.integration


def bash(command: str) -> dict[str, Any]:
    return {"name": "bash", "input": {"command": command}}


async def _job_done(kit: Any, handle: Any, task_id: str) -> None:
    """Wait until the runner's job for the task returned (its ``finally`` clean-up included)."""

    async def done() -> bool:
        return task_id not in handle.runner.active

    await kit.wait_until(done)


async def test_a_completed_task_leaves_no_task_directory_even_with_read_only_files(
    kit: Any, model_server: ModelServer, origin: Path
) -> None:
    tag = f"clean-done-{ULID()}"
    model_server.add_script(
        tag,
        [
            {
                "tool_uses": [
                    bash("mkdir -p locked && echo x > locked/f && chmod 0444 locked/f && chmod 0555 locked")
                ]
            },
            {"text": "Done."},
        ],
    )
    runner = await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(origin), f"{tag} go")

    state = await kit.wait_terminal(task_id)
    await _job_done(kit, runner, task_id)  # the job's clean-up runs after the terminal event

    assert state.status is Status.COMPLETED, (state.error_code, state.error_message)
    work = Path(kit.settings.work_dir)
    assert not (work / task_id).exists()
    assert kit.git(origin, "show", f"bgagent/{task_id}:locked/f") == "x"


async def test_a_failed_task_leaves_no_task_directory(
    kit: Any, model_server: ModelServer, origin: Path
) -> None:
    tag = f"clean-fail-{ULID()}"
    model_server.add_script(tag, [{"tool_uses": [bash(f"echo {i} > f{i}")]} for i in range(4)])
    runner = await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(origin), f"{tag} loop", max_turns=1)

    state = await kit.wait_terminal(task_id)
    await _job_done(kit, runner, task_id)

    assert (state.status, state.error_code) == (Status.FAILED, "MAX_TURNS")
    assert not (Path(kit.settings.work_dir) / task_id).exists()


async def test_a_cancelled_task_leaves_no_task_directory_and_was_owned_while_it_ran(
    kit: Any, model_server: ModelServer, origin: Path
) -> None:
    tag = f"clean-cancel-{ULID()}"
    model_server.add_script(tag, [{"tool_uses": [bash("sleep 30")]}])
    runner = await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(origin), f"{tag} long")

    async def called() -> bool:
        return any(isinstance(e, ToolCalled) for e in await kit.events(task_id))

    await kit.wait_until(called)
    owner = Path(kit.settings.work_dir) / task_id / "attempt-1" / OWNER_FILE
    assert owner.read_text().strip() == runner_identity()
    state = await kit.state(task_id)
    cancel = CancelRequested(
        task_id=task_id,
        event_id=str(ULID()),
        ts=datetime.now(UTC),
        actor="admission",
        requested_by="alice",
    )
    await kit.store.append(task_id, [cancel], expected_seq=state.last_seq)

    state = await kit.wait_terminal(task_id)
    await _job_done(kit, runner, task_id)

    assert state.status is Status.CANCELLED
    assert not (Path(kit.settings.work_dir) / task_id).exists()


async def test_a_starting_runner_sweeps_a_dead_runners_workspace_and_keeps_a_live_ones(
    kit: Any, tmp_path: Path
) -> None:
    work = Path(kit.settings.work_dir)
    gone = subprocess.Popen(["true"])
    gone_identity = runner_identity(gone.pid)
    gone.wait()
    live = subprocess.Popen(["sleep", "60"])
    try:
        dead_attempt = work / str(ULID()) / "attempt-1"
        live_attempt = work / str(ULID()) / "attempt-1"
        for path, identity in ((dead_attempt, gone_identity), (live_attempt, runner_identity(live.pid))):
            (path / "repo").mkdir(parents=True)
            write_owner(path, identity)
        (work / "unrelated.txt").write_text("keep")

        await kit.start_runner(kit.settings)  # ready only after the sweep

        assert not dead_attempt.parent.exists()
        assert (live_attempt / "repo").is_dir()
        assert (work / "unrelated.txt").read_text() == "keep"
    finally:
        live.kill()
        live.wait()


async def test_keep_workspaces_keeps_the_workspace_and_skips_the_sweep(
    kit: Any, model_server: ModelServer, origin: Path
) -> None:
    tag = f"clean-keep-{ULID()}"
    model_server.add_script(tag, [{"text": "Nothing to do."}])
    settings = kit.make_settings(
        kit.settings.nats, model_server.url, Path(kit.settings.work_dir), keep_workspaces=True
    )
    gone = subprocess.Popen(["true"])
    identity = runner_identity(gone.pid)
    gone.wait()
    kept = Path(settings.work_dir) / str(ULID()) / "attempt-1"
    kept.mkdir(parents=True)
    write_owner(kept, identity)
    runner = await kit.start_runner(settings)
    task_id = await kit.submit(str(origin), f"{tag} keep")

    state = await kit.wait_terminal(task_id)
    await _job_done(kit, runner, task_id)

    assert state.status is Status.COMPLETED
    assert (Path(settings.work_dir) / task_id / "attempt-1" / "repo" / "README.md").exists()
    assert kept.is_dir()
