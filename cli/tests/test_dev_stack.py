"""The dev stack's safety: a database per home, no secret in stack.json, only provable pids signalled."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from bgagent_cli.config import CliConfig, read_token, token_file, write_token
from bgagent_cli.main import app
from bgagent_cli.stack import (
    ProcInfo,
    Stack,
    StackRecord,
    StackSpec,
    StackState,
    home_database_name,
    proc_identity,
    public_client,
    without_password,
)
from bgagent_testing.servers import drop_database, ensure_database, with_database

IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


# --- one database per home ---------------------------------------------------------------------


def test_each_home_gets_its_own_valid_database_name(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    names = {
        home_database_name(str(a)),
        home_database_name(str(b)),
        home_database_name(str(a), "bgagent_demo"),
    }
    assert len(names) == 3
    for name in names:
        assert IDENTIFIER.fullmatch(name), name
        assert len(name.encode()) <= 63
    assert home_database_name(str(a)).startswith("bgagent_dev_")
    assert home_database_name(str(a)) == home_database_name(str(a)), "the same home keeps its database"


def test_a_home_reached_through_a_symlink_or_relative_path_is_the_same_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "link").symlink_to(home)
    monkeypatch.chdir(tmp_path)
    expected = home_database_name(str(home))
    assert home_database_name(str(tmp_path / "link")) == expected
    assert home_database_name("home") == expected
    assert home_database_name("./link/../home/") == expected


def test_a_database_prefix_must_be_a_plain_identifier() -> None:
    for bad in ("", "Bgagent", 'x"; DROP DATABASE y; --', "a-b", "1x", "x" * 42):
        with pytest.raises(ValueError, match="database prefix"):
            home_database_name("/tmp/h", bad)


# --- no secret in stack.json ---------------------------------------------------------------------


def test_public_client_drops_the_token_and_every_password() -> None:
    client = {
        "api_url": "http://127.0.0.1:1",
        "token": "s3cret-token",
        "database_url": "postgresql://app:pa55word@db:5432/x?sslmode=require&password=pa55word",
        "nats_url": "nats://u:natspass@127.0.0.1:4222",
        "stream": "S",
    }
    public = public_client(client)
    assert public == {
        "api_url": "http://127.0.0.1:1",
        "database_url": "postgresql://app@db:5432/x?sslmode=require",
        "nats_url": "nats://u@127.0.0.1:4222",
        "stream": "S",
    }
    assert (
        without_password("postgresql://postgres@127.0.0.1:5432/db")
        == "postgresql://postgres@127.0.0.1:5432/db"
    )
    assert without_password("postgresql://:only@h/db") == "postgresql://h/db"


def test_the_token_lives_in_a_0600_file_that_config_reads_and_the_environment_overrides(
    tmp_path: Path,
) -> None:
    stack = tmp_path / "dev" / "stack.json"
    stack.parent.mkdir(parents=True)
    stack.write_text(json.dumps({"client": {"api_url": "http://stack:1"}, "procs": []}))
    assert CliConfig.load({"BGAGENT_HOME": str(tmp_path)}).token is None

    path = write_token(tmp_path, "tok-123")
    assert path == token_file(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_token(tmp_path) == "tok-123"
    assert CliConfig.load({"BGAGENT_HOME": str(tmp_path)}).token == "tok-123"
    assert CliConfig.load({"BGAGENT_HOME": str(tmp_path), "BGAGENT_TOKEN": "env"}).token == "env"


def test_stack_json_holds_no_token_key_password_or_environment(tmp_path: Path) -> None:
    spec = StackSpec(
        home=str(tmp_path),
        database_url="postgresql://app:db-pass-42@127.0.0.1:5432/x",
        github_token="ghp_secret_github_token",
        extra_env={"ANTHROPIC_API_KEY": "sk-ant-secret-key"},
    )
    stack = Stack(spec)
    env = stack._service_env("nats://127.0.0.1:1")
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-secret-key", "the services get their secrets at spawn"
    client = {"api_url": "http://127.0.0.1:2", "token": spec.token, "database_url": spec.database_url}
    stack.state = StackState(spec=spec, procs=[], client=client, env=env)
    stack._save()
    text = (tmp_path / "dev" / "stack.json").read_text()
    assert set(json.loads(text)) == {"client", "procs", "repo_roots"}
    for secret in (spec.token, "db-pass-42", "ghp_secret_github_token", "sk-ant-secret-key"):
        assert secret not in text
    assert read_token(tmp_path) == spec.token
    assert CliConfig.load({"BGAGENT_HOME": str(tmp_path)}).api_url == "http://127.0.0.1:2"

    loaded = Stack.load(str(tmp_path))
    assert loaded is not None
    assert loaded.stop() == []
    assert not (tmp_path / "dev" / "stack.json").exists()
    assert not token_file(tmp_path).exists(), "dev down forgets the token with the stack"


# --- only provable pids are signalled ---------------------------------------------------------------


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _reap(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


WITNESS = """
import signal, sys, time
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGWINCH):
    signal.signal(sig, lambda n, _: print(signal.Signals(n).name, flush=True))
print("ready", flush=True)
while True:
    time.sleep(60)
"""


@pytest.fixture
def witness() -> Iterator[subprocess.Popen[str]]:
    """A process that prints the name of every SIGTERM/SIGINT/SIGHUP/SIGWINCH it gets, and survives them."""
    proc = subprocess.Popen([sys.executable, "-c", WITNESS], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        yield proc
    finally:
        _reap(proc)


def signals_before_now(proc: subprocess.Popen[str]) -> list[str]:
    """The signals ``proc`` got so far, without waiting and hoping: send SIGWINCH (28) and read up to it.

    A signal sent earlier was either handled already or is pending with it, and pending signals are
    handled lowest number first (SIGTERM is 15): anything sent before shows up before WINCH.
    """
    assert proc.stdout is not None
    proc.send_signal(signal.SIGWINCH)
    got: list[str] = []
    while (line := proc.stdout.readline().strip()) != "SIGWINCH":
        assert line, "the witness died"
        got.append(line)
    return got


def _record(home: Path, *procs: ProcInfo) -> None:
    path = home / "dev" / "stack.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.encode(StackRecord(client={}, procs=list(procs))))


def _info(name: str, proc: subprocess.Popen[bytes] | subprocess.Popen[str], home: Path) -> ProcInfo:
    identity = proc_identity(proc.pid)
    assert identity is not None
    return ProcInfo(name=name, pid=proc.pid, log=str(home / f"{name}.log"), args=[], identity=identity)


def _running(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> bool:
    return proc.poll() is None


def test_identity_is_the_start_time_and_command_line_of_the_live_process(
    sleeper: subprocess.Popen[bytes],
) -> None:
    identity = proc_identity(sleeper.pid)
    assert identity is not None
    assert identity.cmdline == ["sleep", "60"]
    assert abs(identity.started_at.timestamp() - time.time()) < 60
    assert identity.same_process(identity)
    sleeper.kill()
    sleeper.wait()
    assert proc_identity(sleeper.pid) is None


def test_the_witness_does_see_a_signal(witness: subprocess.Popen[str]) -> None:
    witness.send_signal(signal.SIGTERM)
    assert signals_before_now(witness) == ["SIGTERM"]


def test_a_record_whose_start_time_differs_is_not_signalled(
    tmp_path: Path, sleeper: subprocess.Popen[bytes], witness: subprocess.Popen[str]
) -> None:
    # the record says: this pid, started one tick earlier (the process it named is gone, the pid reused)
    for proc in (sleeper, witness):
        info = _info("runner", proc, tmp_path)
        assert info.identity is not None
        _record(
            tmp_path,
            msgspec.structs.replace(
                info,
                identity=msgspec.structs.replace(info.identity, start_ticks=info.identity.start_ticks - 1),
            ),
        )
        stack = Stack.load(str(tmp_path))
        assert stack is not None
        assert [row["alive"] for row in stack.status()] == [False]
        assert [outcome for _, outcome in stack.stop(grace=5.0)] == ["gone"]
    assert signals_before_now(witness) == [], "a pid whose start time differs from the record was signalled"
    assert _running(sleeper)


def test_a_record_whose_command_line_differs_is_not_signalled(
    tmp_path: Path, witness: subprocess.Popen[str]
) -> None:
    info = _info("runner", witness, tmp_path)
    assert info.identity is not None
    other = msgspec.structs.replace(info.identity, cmdline=[sys.executable, "-m", "bgagent_runner"])
    _record(tmp_path, msgspec.structs.replace(info, identity=other))
    stack = Stack.load(str(tmp_path))
    assert stack is not None
    assert [outcome for _, outcome in stack.stop(grace=5.0)] == ["gone"]
    assert signals_before_now(witness) == []


def test_a_record_without_identity_is_never_signalled(tmp_path: Path, witness: subprocess.Popen[str]) -> None:
    # what a stack.json written before identities were recorded holds (then with its secrets)
    path = tmp_path / "dev" / "stack.json"
    path.parent.mkdir(parents=True)
    procs = [{"name": "runner", "pid": witness.pid, "log": "x", "args": []}]
    old = {"spec": {"home": str(tmp_path)}, "env": {"X": "y"}, "client": {"token": "t"}, "procs": procs}
    path.write_text(json.dumps(old))
    stack = Stack.load(str(tmp_path))
    assert stack is not None
    assert [outcome for _, outcome in stack.stop(grace=5.0)] == ["gone"]
    assert signals_before_now(witness) == []
    assert not path.exists()


def test_a_matching_record_is_stopped(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    _record(tmp_path, _info("runner", sleeper, tmp_path))
    stack = Stack.load(str(tmp_path))
    assert stack is not None
    assert [row["alive"] for row in stack.status()] == [True]
    assert [outcome for _, outcome in stack.stop(grace=10.0)] == ["stopped"]
    assert sleeper.wait(timeout=5) == -signal.SIGTERM


def _stubborn_peer(me: int, markers: Path) -> subprocess.Popen[str]:
    """Ignores SIGTERM; on it, marks itself and prints 'saw-other' once its peer got SIGTERM too."""
    code = (
        "import os, signal, sys, time\n"
        f"mine, other = {str(markers / f'term-{me}')!r}, {str(markers / f'term-{1 - me}')!r}\n"
        "def on_term(*_):\n"
        "    open(mine, 'w').close()\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        "print('ready', flush=True)\n"
        "while not os.path.exists(mine): time.sleep(0.01)\n"
        "while not os.path.exists(other): time.sleep(0.01)\n"
        "print('saw-other', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    return proc


def test_stop_kills_after_the_grace_period_and_stops_processes_in_parallel(tmp_path: Path) -> None:
    # In parallel, each process gets SIGTERM while the other is still alive within its grace
    # period, so each sees the other's mark before SIGKILL; one after the other, the first would
    # be killed before the second was ever signalled.
    procs = [_stubborn_peer(i, tmp_path) for i in (0, 1)]
    try:
        _record(tmp_path, *(_info(f"p{i}", p, tmp_path) for i, p in enumerate(procs)))
        stack = Stack.load(str(tmp_path))
        assert stack is not None
        outcomes = [outcome for _, outcome in stack.stop(grace=3.0)]
        assert outcomes == ["killed", "killed"]
        assert [p.wait(timeout=5) for p in procs] == [-signal.SIGKILL, -signal.SIGKILL]
        assert [p.stdout.read() if p.stdout else "" for p in procs] == ["saw-other\n", "saw-other\n"]
    finally:
        for p in procs:
            _reap(p)


# --- dev status / dev down / dev logs --------------------------------------------------------------


def test_dev_status_and_down_report_what_they_can_prove(
    tmp_path: Path, sleeper: subprocess.Popen[bytes], witness: subprocess.Popen[str]
) -> None:
    mine = _info("runner", sleeper, tmp_path)
    mine.port = 8123
    recycled = msgspec.structs.replace(_info("query", witness, tmp_path), identity=mine.identity)
    _record(tmp_path, mine, recycled)
    env = {"BGAGENT_HOME": str(tmp_path)}

    result = CliRunner().invoke(app, ["dev", "status", "-o", "json"], env=env)
    assert result.exit_code == 1, "not every process runs"
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["name"], r["pid"], r["alive"], r["port"]) for r in rows] == [
        ("runner", sleeper.pid, True, 8123),
        ("query", witness.pid, False, None),
    ]
    assert rows[0]["log"] == str(tmp_path / "runner.log")

    result = CliRunner().invoke(app, ["dev", "down"], env=env)
    assert result.exit_code == 0, result.output
    assert re.search(rf"query\s+{witness.pid}\s+already gone \(not signalled\)", result.stdout)
    assert re.search(rf"runner\s+{sleeper.pid}\s+stopped", result.stdout)
    assert sleeper.wait(timeout=5) == -signal.SIGTERM
    assert signals_before_now(witness) == []

    result = CliRunner().invoke(app, ["dev", "status"], env=env)
    assert result.exit_code == 1
    assert "no stack is recorded" in result.stderr


def _logs(home: Path) -> Path:
    logs = home / "dev" / "logs"
    logs.mkdir(parents=True)
    (logs / "query.log").write_text(
        "2025-01-02 03:04:05,100 INFO q: first\n"
        "2025-01-02 03:04:05,300 ERROR q: boom\n"
        "Traceback (most recent call last):\n"
        "2025-01-02 03:04:05,500 INFO q: \x1b[2Jlast\n"
    )
    (logs / "nats-server.log").write_text(
        "[42] 2025/01/02 03:04:05.200000 [INF] second\n[42] 2025/01/02 03:04:05.400000 [INF] fourth\n"
    )
    return logs


def test_dev_logs_interleaves_every_log_by_time_with_a_name_prefix(tmp_path: Path) -> None:
    _logs(tmp_path)
    result = CliRunner().invoke(app, ["dev", "logs"], env={"BGAGENT_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "query        | 2025-01-02 03:04:05,100 INFO q: first",
        "nats-server  | [42] 2025/01/02 03:04:05.200000 [INF] second",
        "query        | 2025-01-02 03:04:05,300 ERROR q: boom",
        "query        | Traceback (most recent call last):",
        "nats-server  | [42] 2025/01/02 03:04:05.400000 [INF] fourth",
        "query        | 2025-01-02 03:04:05,500 INFO q: \ufffd[2Jlast",
    ]


def test_dev_logs_of_one_service_shows_its_last_lines(tmp_path: Path) -> None:
    _logs(tmp_path)
    env = {"BGAGENT_HOME": str(tmp_path)}
    result = CliRunner().invoke(app, ["dev", "logs", "nats-server", "-n", "1"], env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout == "[42] 2025/01/02 03:04:05.400000 [INF] fourth\n"
    result = CliRunner().invoke(app, ["dev", "logs", "fanout"], env=env)
    assert result.exit_code == 2
    assert "one of: nats-server, query" in result.stderr


def test_dev_logs_follow_prints_new_lines_until_ctrl_c(tmp_path: Path) -> None:
    logs = _logs(tmp_path)
    exe = str(Path(sys.executable).parent / "bgagent")
    env = dict(os.environ, BGAGENT_HOME=str(tmp_path))
    proc = subprocess.Popen(
        [exe, "dev", "logs", "-f", "-n", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "query        | 2025-01-02 03:04:05,500 INFO q: \ufffd[2Jlast\n"
        with open(logs / "runner.log", "a") as f:  # a log that appears while following
            f.write("2025-01-02 03:04:06,000 INFO r: ")
            f.flush()
            f.write("new\n")
        with open(logs / "query.log", "a") as f:
            f.write("2025-01-02 03:04:07,000 INFO q: more\n")
        got = {proc.stdout.readline(), proc.stdout.readline()}
        assert got == {
            "runner       | 2025-01-02 03:04:06,000 INFO r: new\n",
            "query        | 2025-01-02 03:04:07,000 INFO q: more\n",
        }
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
    finally:
        _reap(proc)


def test_a_spawned_process_is_recorded_with_its_full_command_line(tmp_path: Path) -> None:
    # Popen returns while execve is still setting up the new program: /proc/<pid>/cmdline may read empty
    stack = Stack(StackSpec(home=str(tmp_path), database_url="postgresql://x/y"))
    stack.logs.mkdir(parents=True)
    try:
        for i in range(100):
            info = stack._spawn(f"sleep{i}", ["sleep", "30"], {"PATH": os.environ["PATH"]})
            assert info.identity is not None
            assert info.identity.cmdline == ["sleep", "30"]
            assert stack.owns(info)
    finally:
        for proc in stack._popen.values():
            proc.kill()
            proc.wait()


@pytest.mark.integration
async def test_ensure_database_says_whether_it_created_the_database(postgres_server_url: str) -> None:
    url = with_database(postgres_server_url, f"bgagent_test_{secrets.token_hex(4)}")
    assert await ensure_database(url) is True
    try:
        assert await ensure_database(url) is False, "an existing database is someone else's: not ours to drop"
    finally:
        await drop_database(url)
    for bad in ('x"; DROP DATABASE postgres; --', "x" * 64):
        with pytest.raises(ValueError, match="not a usable database name"):
            await ensure_database(with_database(postgres_server_url, bad))
