"""The sandbox through the runner: a real project's tests, hostile commands, network, a killed runner.

Real NATS, the scripted model server and local git repositories; the runner runs in this process
(its pid is the one the agent tries to kill) or, for the SIGKILL test, as its own process.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
from ulid import ULID

from bgagent_contracts import Status, TaskFailed, TaskStarted, ToolResult
from bgagent_eventstore import NatsSettings
from bgagent_runner.sandbox import SandboxSettings
from bgagent_testing.model_server import ModelServer
from bgagent_testing.servers import free_port

BUNDLE = Path("/work/shared/fixtures/cachetools.bundle")


def bash(command: str) -> dict[str, Any]:
    return {"name": "bash", "input": {"command": command}}


def marker() -> str:
    return f"{100000 + secrets.randbelow(800000)}.{secrets.randbelow(10**6):06d}"


def host_processes_with(text: str, *, program: str | None = None) -> list[int]:
    """Host pids whose command line holds ``text`` (and, given ``program``, runs that program)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if text in " ".join(argv) and (program is None or argv[0] == program):
                found.append(int(entry.name))
    return found


def tool_results_seen_by_the_model(model_server: ModelServer, tag: str) -> list[tuple[bool, str]]:
    """(is_error, full text) of every tool result, as the model received them."""
    messages = model_server.requests(tag)[-1]["body"]["messages"]
    return [
        (bool(block.get("is_error")), str(block["content"]))
        for message in messages
        if message["role"] == "user" and isinstance(message["content"], list)
        for block in message["content"]
        if block["type"] == "tool_result"
    ]


async def results(kit: Any, task_id: str) -> list[ToolResult]:
    return [e for e in await kit.events(task_id) if isinstance(e, ToolResult)]


async def started(kit: Any, task_id: str) -> TaskStarted:
    return next(e for e in await kit.events(task_id) if isinstance(e, TaskStarted))


# --- a real Python project -----------------------------------------------------------------------


@pytest.fixture
def cachetools(tmp_path: Path) -> Path:
    """tkem/cachetools from the fixture bundle, under the runner's local repository root."""
    if not BUNDLE.exists():
        pytest.fail(f"{BUNDLE} is missing (see /work/shared/fixtures/README.md)")
    repo = tmp_path / "repos" / "cachetools"
    subprocess.run(["git", "clone", "--quiet", str(BUNDLE), str(repo)], check=True, capture_output=True)
    return repo


UNITTEST = "PYTHONPATH=src python3 -m unittest discover -t . -s tests 2>&1 | tail -3"


@pytest.mark.integration
async def test_a_real_project_runs_its_tests_with_the_system_python_and_an_edit_is_committed(
    kit: Any, model_server: ModelServer, cachetools: Path
) -> None:
    tag = f"cachetools-{ULID()}"
    edit = {
        "command": "str_replace",
        "path": "src/cachetools/__init__.py",
        "old_str": '"""Extensible memoizing collections and decorators."""',
        "new_str": '"""Extensible memoizing collections and decorators (sandboxed edit)."""',
    }
    model_server.add_script(
        tag,
        [
            {"tool_uses": [bash(f"hostname; command -v python3; {UNITTEST}")]},
            {"tool_uses": [{"name": "str_replace_based_edit_tool", "input": edit}]},
            {"tool_uses": [bash(UNITTEST)]},
            {"text": "Reworded the package docstring; the test suite passes."},
        ],
    )
    await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(cachetools), f"{tag}: reword the docstring", trace=True)

    state = await kit.wait_terminal(task_id, timeout=60)

    assert state.status is Status.COMPLETED, (state.error_code, state.error_message)
    first, edited, again = await results(kit, task_id)
    assert not first.is_error, first.output_preview
    assert first.output_preview.startswith("bgagent\n/usr/bin/python3\n"), "inside the sandbox, system Python"
    assert "OK (skipped=2)" in first.output_preview
    assert not edited.is_error
    assert not again.is_error
    assert "OK (skipped=2)" in again.output_preview
    branch = f"bgagent/{task_id}"
    committed = kit.git(cachetools, "show", f"{branch}:src/cachetools/__init__.py")
    assert committed.startswith('"""Extensible memoizing collections and decorators (sandboxed edit)."""')
    changed = kit.git(cachetools, "diff", "--name-only", "master", branch).splitlines()
    assert changed == ["src/cachetools/__init__.py"], "nothing else (no caches, no venv) was committed"
    begun = await started(kit, task_id)
    assert (begun.sandbox, begun.network) == ("bwrap", False)


# --- hostile commands through the runner ---------------------------------------------------------


@pytest.mark.integration
async def test_hostile_commands_are_contained_and_the_runner_finishes_the_task(
    kit: Any, model_server: ModelServer, origin: Path, nats_url: str
) -> None:
    tag = f"hostile-{ULID()}"
    nats_port = urlsplit(nats_url).port
    model_server.add_script(
        tag,
        [
            {"tool_uses": [bash(f"kill -9 {os.getpid()}; echo rc=$?")]},
            {"tool_uses": [bash("f(){ f | f & }; f; sleep 60")]},
            {"tool_uses": [bash("head -c 20G /dev/zero > /tmp/big.bin")]},
            {"tool_uses": [bash("while :; do :; done")]},
            {"tool_uses": [bash(f"echo > /dev/tcp/127.0.0.1/{nats_port}")]},
            {"tool_uses": [bash("echo ok > ok.txt")]},
            {"text": "Survived."},
        ],
    )
    limits = SandboxSettings(max_procs=64, max_file_mb=8, cpu_s=1)
    await kit.start_runner(msgspec.structs.replace(kit.settings, sandbox=limits, tool_timeout_s=60.0))
    task_id = await kit.submit(str(origin), f"{tag}: misbehave")

    state = await kit.wait_terminal(task_id, timeout=60)

    assert state.status is Status.COMPLETED, (state.error_code, state.error_message)
    kill, bomb, write, loop, connect, ok = tool_results_seen_by_the_model(model_server, tag)
    assert "No such process" in kill[1]
    assert bomb[0]
    assert "process limit of 64 processes and threads (BGAGENT_SANDBOX_MAX_PROCS)" in bomb[1]
    assert write[0]
    assert "file size limit of 8 MiB per file (BGAGENT_SANDBOX_MAX_FILE_MB)" in write[1]
    assert loop[0]
    assert "CPU time limit of 1s per process (BGAGENT_SANDBOX_CPU_S)" in loop[1]
    assert connect[0]
    assert "Connection refused" in connect[1]
    assert ok == (False, "(no output)")
    assert [r.is_error for r in await results(kit, task_id)] == [False, True, True, True, True, False]
    assert kit.git(origin, "show", f"bgagent/{task_id}:ok.txt") == "ok"


# --- network: refused unless the runner allows it, then the host's -------------------------------


@pytest.mark.integration
async def test_a_task_asking_for_network_fails_where_the_runner_does_not_allow_it(
    kit: Any, origin: Path
) -> None:
    await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(origin), "fetch the dependencies", network=True)

    state = await kit.wait_terminal(task_id)

    assert state.status is Status.FAILED
    assert state.attempt == 0, "refused before anyone claimed it"
    failed = (await kit.events(task_id))[-1]
    assert isinstance(failed, TaskFailed)
    assert failed.code == "INVALID_SUBMISSION"
    assert "network" in failed.message


@pytest.mark.integration
async def test_a_task_granted_network_reaches_the_hosts_network(
    kit: Any, model_server: ModelServer, origin: Path, nats_url: str
) -> None:
    tag = f"net-{ULID()}"
    port = urlsplit(nats_url).port
    model_server.add_script(
        tag, [{"tool_uses": [bash(f"echo > /dev/tcp/127.0.0.1/{port} && echo CONNECTED")]}, {"text": "ok"}]
    )
    open_sandbox = SandboxSettings(allow_network=True)
    await kit.start_runner(msgspec.structs.replace(kit.settings, sandbox=open_sandbox))
    task_id = await kit.submit(str(origin), f"{tag}: fetch", network=True)

    state = await kit.wait_terminal(task_id)

    assert state.status is Status.COMPLETED, state.error_message
    (connect,) = await results(kit, task_id)
    assert connect.output_preview.strip() == "CONNECTED"
    begun = await started(kit, task_id)
    assert (begun.sandbox, begun.network) == ("bwrap", True)


@pytest.mark.integration
async def test_a_runner_without_sandbox_records_it_in_task_started(
    kit: Any, model_server: ModelServer, origin: Path
) -> None:
    tag = f"off-{ULID()}"
    model_server.add_script(tag, [{"tool_uses": [bash("hostname")]}, {"text": "ok"}])
    await kit.start_runner(msgspec.structs.replace(kit.settings, sandbox=SandboxSettings(mode="off")))
    task_id = await kit.submit(str(origin), f"{tag}: run")

    state = await kit.wait_terminal(task_id)

    assert state.status is Status.COMPLETED, state.error_message
    (result,) = await results(kit, task_id)
    assert result.output_preview.strip() != "bgagent", "no uts namespace: the host's name"
    begun = await started(kit, task_id)
    assert (begun.sandbox, begun.network) == ("off", True)


# --- a SIGKILLed runner process ------------------------------------------------------------------


@pytest.mark.integration
async def test_a_sigkilled_runner_leaves_no_tool_process_behind(
    kit: Any, provisioned: NatsSettings, model_server: ModelServer, origin: Path, tmp_path: Path
) -> None:
    tag = f"sigkill-{ULID()}"
    detached, waited = marker(), marker()
    model_server.add_script(tag, [{"tool_uses": [bash(f"setsid sleep {detached} & sleep {waited}")]}])
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

        await kit.wait_until(is_ready, timeout=20)
        await kit.submit(str(origin), f"{tag}: sleep for ever")

        async def sleeping() -> bool:  # the sleeps themselves, not just bwrap's argv naming them
            found = [host_processes_with(m, program="sleep") for m in (detached, waited)]
            return all(found)

        await kit.wait_until(sleeping, timeout=20)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

        async def all_gone() -> bool:
            return not host_processes_with(detached) and not host_processes_with(waited)

        await kit.wait_until(all_gone, timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        for m in (detached, waited):  # never leave a stray sleep behind, even when the test fails
            for pid in host_processes_with(m):
                os.kill(pid, signal.SIGKILL)


# --- start-up: a working sandbox or an explicit opt-out ------------------------------------------


def _run_main(**extra: str) -> subprocess.CompletedProcess[str]:
    """``python -m bgagent_runner`` as a process, against a NATS port nobody listens on.

    It gets as far as its start-up decisions (settings, the sandbox probe) and then stops at the
    NATS connection, so its exit code and log say what it decided.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BGAGENT_", "NATS_"))}
    env.update(NATS_URL=f"nats://127.0.0.1:{free_port()}", BGAGENT_LOG_LEVEL="INFO", **extra)
    return subprocess.run(
        [sys.executable, "-m", "bgagent_runner"], env=env, capture_output=True, text=True, timeout=60
    )


def test_the_runner_refuses_to_start_without_a_working_sandbox() -> None:
    done = _run_main(BGAGENT_SANDBOX_BWRAP="/nonexistent/bwrap")
    assert done.returncode == 1
    assert "runner not started" in done.stderr
    assert "apt-get install bubblewrap" in done.stderr
    assert "starting runner" not in done.stderr


def test_the_runner_probes_the_real_sandbox_before_it_starts() -> None:
    done = _run_main()
    log = done.stderr
    assert "bwrap sandbox ready" in log
    assert "starting runner" in log
    assert log.index("bwrap sandbox ready") < log.index("starting runner")


def test_bgagent_sandbox_off_starts_with_a_warning_and_no_probe() -> None:
    done = _run_main(BGAGENT_SANDBOX="off", BGAGENT_SANDBOX_BWRAP="/nonexistent/bwrap")
    log = done.stderr
    assert "BGAGENT_SANDBOX=off" in log
    assert "WITHOUT a sandbox" in log
    assert "bwrap sandbox ready" not in log
    assert "runner not started" not in log
    assert "starting runner" in log


def test_an_unknown_sandbox_mode_is_a_settings_error() -> None:
    done = _run_main(BGAGENT_SANDBOX="docker")
    assert done.returncode == 2
    assert "BGAGENT_SANDBOX" in done.stderr
