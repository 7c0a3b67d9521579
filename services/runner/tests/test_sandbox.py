"""The bash tool's sandbox, for real: bubblewrap on this machine, each escape tried and checked from the host.

Every test runs real commands through ``BashTool`` with a real :class:`Sandbox` in an attempt directory
laid out like the runner's, then looks at the host (files, processes, ports) to see that nothing got
out. The test process plays the runner: its pid is the one the agent tries to kill.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bgagent_runner.cgroups import PidsCgroups
from bgagent_runner.sandbox import (
    SYSTEM_PATH,
    Sandbox,
    SandboxSettings,
    SandboxUnavailable,
    bwrap_argv,
    etc_snapshot,
    host_system,
    prelude_argv,
    probe,
)
from bgagent_runner.tools import BashTool, ToolOutput, scrubbed_env

GIT_ENV = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}


@pytest.fixture(autouse=True, scope="module")
def _bwrap_installed() -> None:
    if shutil.which("bwrap", path=SYSTEM_PATH) is None:
        pytest.fail("bubblewrap is not installed: run 'make sandbox-tools' (apt-get install bubblewrap)")


class Attempt:
    """``<work>/<task>/attempt-1/{repo,home,sandbox/home,sandbox/tmp}`` and a sibling task's attempt."""

    def __init__(self, tmp_path: Path) -> None:
        self.work = tmp_path / "work"
        self.root = self.work / "01TASK" / "attempt-1"
        self.repo = self.root / "repo"
        self.runner_home = self.root / "home"
        self.home = self.root / "sandbox" / "home"
        self.tmp = self.root / "sandbox" / "tmp"
        self.other = self.work / "01OTHER" / "attempt-1" / "repo"
        for path in (self.repo, self.runner_home, self.other):
            path.mkdir(parents=True)
        (self.other / "secret.txt").write_text("another task's file\n")
        (self.runner_home / ".gitconfig").write_text("[user]\n\tname = runner\n")
        subprocess.run(["git", "init", "--quiet", "-b", "main", str(self.repo)], check=True, env=GIT_ENV)
        (self.repo / "app.py").write_text("print('hi')\n")

    def tool(self, *, timeout_s: float = 60.0, network: bool = False, **limits: int) -> BashTool:
        settings = SandboxSettings(
            **{"max_procs": 64, "max_file_mb": 8, "memory_mb": 512, "cpu_s": 30, **limits}
        )
        return BashTool(
            self.repo,
            scrubbed_env(self.home, workspace=self.repo),
            timeout_s=timeout_s,
            output_cap=20_000,
            sandbox=Sandbox(settings),
            home=self.home,
            tmp=self.tmp,
            network=network,
        )


@pytest.fixture
def attempt(tmp_path: Path) -> Attempt:
    return Attempt(tmp_path)


async def run(tool: BashTool, command: str) -> ToolOutput:
    return await tool.run({"command": command})


def marker() -> str:
    """A unique ``sleep`` duration: it appears in the process's command line and nowhere else."""
    return f"{100000 + secrets.randbelow(800000)}.{secrets.randbelow(10**6):06d}"


def host_processes_with(text: str, *, program: str | None = None) -> list[int]:
    """Host pids whose command line holds ``text`` (and, given ``program``, runs that program)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if text in " ".join(argv) and (program is None or argv[0] == program):
            found.append(int(entry.name))
    return found


async def wait_for(predicate: object, timeout: float = 10.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


async def assert_healthy(tool: BashTool) -> None:
    """The runner (this process) still runs commands normally after the hostile one."""
    out = await run(tool, "echo still-here")
    assert (out.is_error, out.text.strip()) == (False, "still-here")


# --- argv: pure construction ---------------------------------------------------------------------


def _argv(network: bool = False) -> list[str]:
    return bwrap_argv(
        "make test",
        workspace=Path("/w/t/attempt-1/repo"),
        home=Path("/w/t/attempt-1/sandbox/home"),
        tmp=Path("/w/t/attempt-1/sandbox/tmp"),
        etc=Path("/w/t/attempt-1/sandbox/etc"),
        env={"PATH": "/usr/bin", "HOME": "/w/t/attempt-1/sandbox/home"},
        network=network,
        system=(("--ro-bind", "/usr", "/usr"), ("--symlink", "usr/bin", "/bin")),
    )


def _binds(argv: list[str]) -> dict[str, tuple[str, str]]:
    """destination → (kind, source) for every bind in argv."""
    out = {}
    for i, arg in enumerate(argv):
        if arg in ("--bind", "--ro-bind", "--ro-bind-try"):
            out[argv[i + 2]] = (arg, argv[i + 1])
    return out


def test_argv_unshares_every_namespace_and_dies_with_the_runner() -> None:
    argv = _argv()
    for flag in ("--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net"):
        assert flag in argv
    for flag in ("--die-with-parent", "--new-session", "--disable-userns", "--clearenv"):
        assert flag in argv
    assert argv[argv.index("--proc") + 1] == "/proc"
    assert argv[-4:] == ["--", "/bin/bash", "-c", "make test"]


def test_argv_keeps_the_host_network_only_when_granted() -> None:
    assert "--unshare-net" in _argv(network=False)
    assert "--unshare-net" not in _argv(network=True)


def test_argv_binds_the_workspace_home_and_tmp_and_nothing_else_writable() -> None:
    binds = _binds(_argv())
    writable = {dest: src for dest, (kind, src) in binds.items() if kind == "--bind"}
    assert writable == {
        "/tmp": "/w/t/attempt-1/sandbox/tmp",
        "/var/tmp": "/w/t/attempt-1/sandbox/tmp",
        "/w/t/attempt-1/sandbox/home": "/w/t/attempt-1/sandbox/home",
        "/w/t/attempt-1/repo": "/w/t/attempt-1/repo",
    }
    assert binds["/w/t/attempt-1/repo/.git"] == ("--ro-bind-try", "/w/t/attempt-1/repo/.git")
    assert binds["/usr"] == ("--ro-bind", "/usr")
    assert binds["/etc"] == ("--ro-bind", "/w/t/attempt-1/sandbox/etc")
    argv = _argv()
    assert argv.index("--remount-ro") > argv.index("/w/t/attempt-1/repo")  # after every mount


def test_argv_sets_exactly_the_given_environment() -> None:
    argv = _argv()
    pairs = {argv[i + 1]: argv[i + 2] for i, a in enumerate(argv) if a == "--setenv"}
    assert pairs == {"PATH": "/usr/bin", "HOME": "/w/t/attempt-1/sandbox/home"}


def test_host_system_shows_no_runner_or_secret_paths() -> None:
    sources = {option[1] for option in host_system() if option[0] == "--ro-bind"}
    assert "/usr" in sources
    forbidden = ("/etc", "/root", "/work", "/home", "/tmp", "/var", "/run", sys.prefix)
    assert not [s for s in sources if s.startswith(forbidden) or s == "/"]


def test_the_sandboxs_etc_is_the_allow_list_only(tmp_path: Path) -> None:
    etc = etc_snapshot(tmp_path / "etc")
    names = {p.name for p in etc.iterdir()}
    assert {"passwd", "group", "hosts", "resolv.conf", "ssl", "alternatives", "mtab"} <= names
    assert not names & {"shadow", "gshadow", "ssh", "sudoers", "mysql", "postgresql", "gitconfig"}
    assert not (etc / "ssl" / "private").exists()
    assert os.readlink(etc / "mtab") == "../proc/self/mounts"
    assert (etc / "passwd").read_text() == Path("/etc/passwd").read_text()


def test_prelude_sets_limits_in_the_units_sh_expects() -> None:
    settings = SandboxSettings(max_file_mb=8, memory_mb=512, cpu_s=30, max_procs=64)
    argv = prelude_argv(settings, "/sys/fs/cgroup/pids/x/cgroup.procs")
    assert argv[4:] == [str(8 * 2048), str(512 * 1024), "30", "31", "/sys/fs/cgroup/pids/x/cgroup.procs"]
    off = prelude_argv(SandboxSettings(max_file_mb=0, memory_mb=0, cpu_s=0), None)
    assert off[4:] == ["unlimited", "unlimited", "unlimited", "unlimited", ""]


def test_the_probe_names_the_package_and_the_opt_out_when_bwrap_is_missing() -> None:
    with pytest.raises(SandboxUnavailable) as info:
        probe(SandboxSettings(bwrap="/nonexistent/bwrap"))
    assert "apt-get install bubblewrap" in str(info.value)
    assert "BGAGENT_SANDBOX=off" in str(info.value)


def test_the_probe_runs_a_command_in_the_real_sandbox() -> None:
    report = probe(SandboxSettings())
    assert report.startswith("bwrap sandbox ready")
    assert "network off" in report


# --- what the agent sees -------------------------------------------------------------------------


async def test_the_agent_runs_unprivileged_in_its_own_namespaces(attempt: Attempt) -> None:
    out = await run(
        attempt.tool(),
        "id -u; hostname; grep CapEff /proc/self/status; ls /proc | grep -c '^[0-9]'; "
        "unshare -U true && echo USERNS || echo NO-USERNS",
    )
    lines = out.text.splitlines()
    assert lines[:3] == ["1000", "bgagent", "CapEff:\t0000000000000000"]
    assert int(lines[3]) < 10, "a fresh /proc shows only the sandbox's own processes"
    assert "NO-USERNS" in lines


async def test_home_path_and_python_are_the_attempts_and_the_systems(attempt: Attempt) -> None:
    out = await run(
        attempt.tool(), 'echo "$HOME"; echo "$PATH"; command -v python3; env | grep -c VIRTUAL_ENV'
    )
    home, path, python, venv = out.text.splitlines()[:4]
    assert home == str(attempt.home)
    assert path == f"{attempt.repo}/.venv/bin:{attempt.home}/.local/bin:/usr/local/bin:/usr/bin:/bin"
    assert python == "/usr/bin/python3"
    assert venv == "0"


async def test_a_venv_and_pip_work_inside_the_workspace(attempt: Attempt) -> None:
    tool = attempt.tool(timeout_s=120, cpu_s=120)
    out = await run(tool, "python3 -m venv .venv && .venv/bin/pip --version")
    assert not out.is_error, out.text
    assert f"from {attempt.repo}/.venv/lib/python3" in out.text
    assert (attempt.repo / ".venv" / "bin" / "pip").exists()
    found = await run(tool, "command -v python3 pip")  # the next command finds the venv first on PATH
    assert found.text.splitlines() == [f"{attempt.repo}/.venv/bin/python3", f"{attempt.repo}/.venv/bin/pip"]


async def test_git_history_is_readable_but_not_writable_inside(attempt: Attempt) -> None:
    config = (attempt.repo / ".git" / "config").read_text()
    out = await run(
        attempt.tool(),
        "git status --short; echo '[core]' >> .git/config; git config core.fsmonitor 'touch /tmp/x'; "
        "touch .git/hooks/pre-commit",
    )
    assert "?? app.py" in out.text
    assert out.text.count("Read-only file system") >= 2
    assert (attempt.repo / ".git" / "config").read_text() == config
    assert not (attempt.repo / ".git" / "hooks" / "pre-commit").exists()


# --- escapes: files ------------------------------------------------------------------------------


async def test_writes_outside_the_workspace_never_reach_the_host(attempt: Attempt) -> None:
    canary = f"canary-{secrets.token_hex(4)}"
    targets = [
        Path("/tmp") / canary,
        Path(sys.prefix) / canary,
        Path("/work") / canary,
        Path("/root") / canary,
        Path("/usr") / canary,
        Path("/etc") / canary,
        attempt.runner_home / canary,
        attempt.other / canary,
    ]
    command = "; ".join(f"echo x > {t} 2>/dev/null && echo WROTE {t}" for t in targets)
    out = await run(attempt.tool(), command + "; echo home > ~/" + canary)
    for target in targets:
        assert not target.exists(), target
    assert (attempt.tmp / canary).exists(), "/tmp inside is the attempt's private tmp"
    assert (attempt.home / canary).read_text() == "home\n"
    assert f"WROTE /tmp/{canary}" in out.text
    assert "WROTE" not in out.text.replace(f"WROTE /tmp/{canary}", "")


async def test_the_runners_files_are_invisible(attempt: Attempt) -> None:
    paths = [sys.prefix, "/work", "/root/.pyenv", "/etc/shadow", "/etc/ssl/private", attempt.runner_home]
    paths += [attempt.other, os.path.expanduser("~/.bgagent")]
    out = await run(attempt.tool(), " ".join(["ls -d", *map(str, paths), "2>&1; true"]))
    for path in paths:
        assert f"cannot access '{path}': No such file or directory" in out.text


# --- escapes: the runner's processes and environment --------------------------------------------


@pytest.fixture
def runner_like() -> Iterator[subprocess.Popen[bytes]]:
    """A host process whose environment holds a secret, like the runner's holds GITHUB_TOKEN."""
    secret = f"ghp_canary{secrets.token_hex(12)}"
    proc = subprocess.Popen(["sleep", "300"], env={"PATH": SYSTEM_PATH, "GITHUB_TOKEN": secret})
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


async def test_no_host_process_and_no_environment_is_readable(
    attempt: Attempt, runner_like: subprocess.Popen[bytes]
) -> None:
    secret_env = Path(f"/proc/{runner_like.pid}/environ").read_bytes()
    assert b"ghp_canary" in secret_env, "readable from the host: the test would prove nothing otherwise"
    me = os.getpid()
    out = await run(
        attempt.tool(),
        f"cat /proc/{runner_like.pid}/environ /proc/{me}/environ; cat /proc/1/environ /proc/*/environ "
        f"| tr '\\0' '\\n' | sort -u; ls /proc/{me} /proc/{runner_like.pid}",
    )
    assert "ghp_canary" not in out.text
    assert f"ls: cannot access '/proc/{me}': No such file or directory" in out.text


async def test_the_agent_cannot_kill_the_runner(
    attempt: Attempt, runner_like: subprocess.Popen[bytes]
) -> None:
    tool = attempt.tool()
    out = await run(tool, f"kill -9 {os.getpid()} {runner_like.pid}; echo rc=$?; kill -9 -1")
    assert "No such process" in out.text
    assert runner_like.poll() is None
    await assert_healthy(tool)


# --- escapes: the network ------------------------------------------------------------------------


@pytest.fixture
async def listener() -> AsyncIterator[int]:
    """A service on 127.0.0.1 standing in for admission or query."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def _reachable(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return True


@pytest.mark.integration
async def test_no_host_service_is_reachable_without_network(
    attempt: Attempt, nats_url: str, postgres_server_url: str, listener: int
) -> None:
    ports = [urlsplit(nats_url).port or 4222, urlsplit(postgres_server_url).port or 5432, listener]
    assert all(_reachable(p) for p in ports), "each service answers on the host"
    probes = "; ".join(
        f"(echo > /dev/tcp/127.0.0.1/{p}) 2>/dev/null && echo OPEN-{p} || echo CLOSED-{p}" for p in ports
    )
    out = await run(attempt.tool(), probes)
    assert [line for line in out.text.splitlines() if line.startswith(("OPEN", "CLOSED"))] == [
        f"CLOSED-{p}" for p in ports
    ]
    granted = await run(attempt.tool(network=True), probes)
    assert f"OPEN-{ports[0]}" in granted.text, "a task granted network shares the host's"


# --- limits --------------------------------------------------------------------------------------


async def test_a_fork_bomb_hits_the_process_limit_and_leaves_nothing(attempt: Attempt) -> None:
    assert PidsCgroups.find() is not None, "this machine has a writable pids cgroup"
    tool = attempt.tool(max_procs=64)
    name = f"bomb-{secrets.token_hex(4)}.sh"
    (attempt.repo / name).write_text("f(){ f | f & }; f\nsleep 300\n")
    out = await run(tool, f"bash {name}")
    assert out.is_error
    assert "process limit of 64" in out.text
    assert "BGAGENT_SANDBOX_MAX_PROCS" in out.text
    await wait_for(lambda: not host_processes_with(name))
    await assert_healthy(tool)


async def test_a_huge_write_stops_at_the_file_size_limit(attempt: Attempt) -> None:
    tool = attempt.tool(max_file_mb=8)
    out = await run(tool, "head -c 20G /dev/zero > big.bin")
    assert out.is_error
    assert "file size limit of 8 MiB" in out.text
    assert "BGAGENT_SANDBOX_MAX_FILE_MB" in out.text
    assert (attempt.repo / "big.bin").stat().st_size == 8 * 1024 * 1024
    await assert_healthy(tool)


async def test_an_endless_loop_hits_the_cpu_limit(attempt: Attempt) -> None:
    tool = attempt.tool(cpu_s=1)
    out = await run(tool, "while :; do :; done")
    assert out.is_error
    assert "CPU time limit of 1s" in out.text
    assert "BGAGENT_SANDBOX_CPU_S" in out.text
    await assert_healthy(tool)


async def test_a_memory_hog_hits_the_memory_limit(attempt: Attempt) -> None:
    tool = attempt.tool(memory_mb=256)
    out = await run(tool, "python3 -c 'b = bytearray(1 << 30)'")
    assert out.is_error
    assert "memory limit of 256 MiB" in out.text
    await assert_healthy(tool)


async def test_a_timeout_kills_every_process_the_command_started(attempt: Attempt) -> None:
    a, b, c, d = (marker() for _ in range(4))
    command = f"setsid sleep {a} & (sleep {b} &); nohup sleep {c} >/dev/null 2>&1 & sleep {d}"
    out = await run(attempt.tool(timeout_s=1.5), command)
    assert out.is_error
    assert "timed out after 1.5s" in out.text
    await wait_for(lambda: not any(host_processes_with(m) for m in (a, b, c, d)))


async def test_a_cancel_kills_every_process_the_command_started(attempt: Attempt) -> None:
    a, b = marker(), marker()
    task = asyncio.create_task(run(attempt.tool(), f"setsid sleep {a} & sleep {b}"))
    await wait_for(
        lambda: host_processes_with(a, program="sleep") and host_processes_with(b, program="sleep")
    )
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(lambda: not host_processes_with(a) and not host_processes_with(b))


async def test_background_processes_end_with_the_command(attempt: Attempt) -> None:
    a = marker()
    out = await run(attempt.tool(), f"nohup setsid sleep {a} >/dev/null 2>&1 & echo started")
    assert out.text.strip() == "started"
    await wait_for(lambda: not host_processes_with(a))


async def test_command_cgroups_are_removed_after_each_command(attempt: Attempt) -> None:
    cgroups = PidsCgroups.find()
    assert cgroups is not None
    before = set(cgroups.parent.glob("cmd-*"))
    tool = attempt.tool()
    await run(tool, "true")
    await run(tool, "sleep 0.2 & exit 3")
    assert set(cgroups.parent.glob("cmd-*")) <= before


async def test_the_sweep_kills_sandboxes_of_a_dead_runner_and_spares_a_live_ones() -> None:
    cgroups = PidsCgroups.find()
    assert cgroups is not None
    dead_owner = cgroups.parent / f"cmd-999999-0-{secrets.token_hex(8)}"  # no process 999999 started at 0
    dead_owner.mkdir()
    live = cgroups.create(16)
    orphan_mark, live_mark = marker(), marker()
    procs = []
    for cgroup, mark in ((dead_owner / "cgroup.procs", orphan_mark), (Path(live.procs_file), live_mark)):
        script = 'echo $$ > "$0" && exec sleep "$1"'
        procs.append(subprocess.Popen(["/bin/sh", "-c", script, str(cgroup), mark], start_new_session=True))
    try:
        await wait_for(lambda: host_processes_with(orphan_mark, program="sleep"))
        await wait_for(lambda: host_processes_with(live_mark, program="sleep"))

        assert cgroups.sweep() >= 1

        await wait_for(lambda: procs[0].poll() is not None)
        assert not dead_owner.exists()
        assert procs[1].poll() is None, "a live runner's command is left alone"
        assert live.path.exists()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        live.remove()
