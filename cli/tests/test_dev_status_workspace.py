"""``bgagent dev status`` reports the size of the runner's work dir and its attempt directories."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner
from ulid import ULID

from bgagent_cli.main import app
from bgagent_cli.stack import ProcInfo, StackRecord, proc_identity


@pytest.fixture
def runner_proc() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _record(home: Path, proc: subprocess.Popen[bytes]) -> None:
    identity = proc_identity(proc.pid)
    assert identity is not None
    info = ProcInfo(name="runner", pid=proc.pid, log=str(home / "runner.log"), args=[], identity=identity)
    path = home / "dev" / "stack.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.encode(StackRecord(client={}, procs=[info])))


def test_dev_status_prints_the_work_dir_size_and_attempt_count(
    tmp_path: Path, runner_proc: subprocess.Popen[bytes]
) -> None:
    _record(tmp_path, runner_proc)
    env = {"BGAGENT_HOME": str(tmp_path)}
    work = tmp_path / "dev" / "work"

    result = CliRunner().invoke(app, ["dev", "status"], env=env)
    assert result.exit_code == 0, result.output
    assert f"work dir {work}: not created yet, 0 attempt dir(s)" in result.stdout

    for n in (1, 2):
        repo = work / str(ULID()) / f"attempt-{n}" / "repo"
        repo.mkdir(parents=True)
        (repo / "big.bin").write_bytes(b"\1" * (3 << 20))
    result = CliRunner().invoke(app, ["dev", "status"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert re.fullmatch(rf"runner\s+{runner_proc.pid}\s+yes\s+-\s+\S+runner\.log", lines[1])
    match = re.fullmatch(rf"work dir {re.escape(str(work))}: ([0-9.]+) MiB, 2 attempt dir\(s\)", lines[2])
    assert match is not None, lines
    assert 6.0 <= float(match.group(1)) < 6.5


def test_dev_status_json_puts_the_work_dir_on_the_runner_line(
    tmp_path: Path, runner_proc: subprocess.Popen[bytes]
) -> None:
    _record(tmp_path, runner_proc)
    attempt = tmp_path / "dev" / "work" / str(ULID()) / "attempt-1"
    attempt.mkdir(parents=True)
    (attempt / "f").write_bytes(b"\1" * 10_000)

    result = CliRunner().invoke(app, ["dev", "status", "-o", "json"], env={"BGAGENT_HOME": str(tmp_path)})

    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert (row["name"], row["pid"], row["alive"]) == ("runner", runner_proc.pid, True)
    assert row["work_dir"] == str(tmp_path / "dev" / "work")
    assert row["attempt_dirs"] == 1
    assert row["work_dir_bytes"] >= 10_000
