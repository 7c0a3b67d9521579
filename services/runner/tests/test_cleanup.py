"""Workspace clean-up on disk: the start-up sweep, robust removal, the size report (no NATS)."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ulid import ULID

from bgagent_runner.cgroups import start_time
from bgagent_runner.cleanup import (
    NO_OWNER_GRACE_S,
    OWNER_FILE,
    owner_alive,
    remove_attempt,
    runner_identity,
    sweep,
    workspace_usage,
    write_owner,
)


@pytest.fixture
def live_owner() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def dead_identity() -> str:
    """The identity of a process that ran and is gone (its pid may be reused: the start time differs)."""
    proc = subprocess.Popen(["true"])
    identity = runner_identity(proc.pid)
    proc.wait()
    pid, started = identity.split()
    assert start_time(int(pid)) != started
    return identity


def attempt(work: Path, task_id: str, n: int, owner: str | None) -> Path:
    path = work / task_id / f"attempt-{n}"
    (path / "repo").mkdir(parents=True)
    (path / "repo" / "file.txt").write_text("x" * 5000)
    if owner is not None:
        write_owner(path, owner)
    return path


def test_sweep_removes_a_dead_owners_attempt_and_keeps_a_live_owners(
    tmp_path: Path, live_owner: subprocess.Popen[bytes], dead_identity: str
) -> None:
    work = tmp_path / "work"
    dead_task, live_task = str(ULID()), str(ULID())
    dead = attempt(work, dead_task, 1, dead_identity)
    live = attempt(work, live_task, 2, runner_identity(live_owner.pid))
    mine = attempt(work, live_task, 3, None)
    write_owner(mine)  # this very process: alive

    removed = sweep(work)

    assert removed == [dead]
    assert not (work / dead_task).exists(), "the task directory left empty is removed too"
    assert (live / "repo" / "file.txt").read_text() == "x" * 5000
    assert (mine / "repo" / "file.txt").exists()
    assert owner_alive(live) is True
    assert owner_alive(mine) is True


def test_sweep_leaves_unrelated_files_and_symlinks_alone(tmp_path: Path, dead_identity: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("keep")
    not_a_task = attempt(work, "scratch", 1, dead_identity)  # not a ULID: not a task directory
    task_id = str(ULID())
    stale = attempt(work, task_id, 1, dead_identity)
    (work / task_id / "README").write_text("keep")  # no attempt-<n> name
    odd = work / task_id / "attempt-x"
    odd.mkdir()
    outside = tmp_path / "outside"
    outside_attempt = attempt(outside, str(ULID()), 1, dead_identity)
    linked_task = str(ULID())
    (work / linked_task).symlink_to(outside_attempt.parent)  # a task "directory" that is a symlink
    (work / task_id / "attempt-9").symlink_to(outside_attempt)  # an attempt "directory" that is one
    (stale / "repo" / "escape").symlink_to(outside)  # a symlink inside a removed attempt

    assert sweep(work) == [stale]

    assert (work / "notes.txt").read_text() == "keep"
    assert (not_a_task / "repo" / "file.txt").exists()
    assert (work / task_id / "README").read_text() == "keep"
    assert odd.is_dir()
    assert (work / linked_task).is_symlink()
    assert (work / task_id / "attempt-9").is_symlink()
    assert (outside_attempt / "repo" / "file.txt").exists(), "a symlink was followed"
    assert (outside_attempt / OWNER_FILE).exists()


def test_an_attempt_without_owner_file_is_swept_only_after_the_grace_period(tmp_path: Path) -> None:
    work = tmp_path / "work"
    old, recent = attempt(work, str(ULID()), 1, None), attempt(work, str(ULID()), 1, None)
    now = os.lstat(recent).st_mtime
    os.utime(old, (now - NO_OWNER_GRACE_S - 60, now - NO_OWNER_GRACE_S - 60))
    (old.parent / "attempt-2").mkdir()
    (old.parent / "attempt-2" / OWNER_FILE).write_text("garbage\n")  # unreadable owner: by age too
    os.utime(old.parent / "attempt-2", (now - 10, now - 10))

    assert sweep(work, now=now) == [old]
    assert recent.exists()
    assert (old.parent / "attempt-2").exists()
    assert sorted(sweep(work, now=now + NO_OWNER_GRACE_S + 60)) == sorted([old.parent / "attempt-2", recent])
    assert list(work.iterdir()) == []


def test_removing_an_attempt_keeps_the_task_directory_while_another_attempt_is_there(tmp_path: Path) -> None:
    work = tmp_path / "work"
    task_id = str(ULID())
    first, second = attempt(work, task_id, 1, None), attempt(work, task_id, 2, None)

    remove_attempt(first)
    assert not first.exists()
    assert second.exists()
    remove_attempt(second)
    assert not (work / task_id).exists()
    assert work.is_dir(), "only the task directory goes, never the work dir"
    remove_attempt(second)  # gone already: nothing to do, no error


READ_ONLY_SCENARIO = """
import json, os, sys
from pathlib import Path
from bgagent_runner.cleanup import remove_attempt

attempt = Path(sys.argv[1])
objects = attempt / "repo" / ".git" / "objects"
objects.mkdir(parents=True)
(objects / "pack").write_text("x")
os.chmod(objects / "pack", 0o444)
os.chmod(objects, 0o555)
locked = attempt / "sandbox" / "tmp" / "locked"
locked.mkdir(parents=True)
(locked / "f").write_text("y")
os.chmod(locked, 0)
try:
    os.unlink(objects / "pack")
    blocked = False
except PermissionError:
    blocked = True
remove_attempt(attempt)
print(json.dumps({"blocked": blocked, "attempt": attempt.exists(), "task": attempt.parent.exists()}))
"""

_CAPS_THAT_BYPASS_PERMISSIONS = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
_PR_CAPBSET_DROP = 24


def _drop_permission_bypass() -> None:
    """In the child before exec: as root, give up the capabilities that ignore file modes."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in _CAPS_THAT_BYPASS_PERMISSIONS:
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_read_only_files_and_directories_do_not_stop_removal(tmp_path: Path) -> None:
    # Root ignores file modes, so as root the scenario runs in a child without those capabilities;
    # it first checks that the read-only entries really block a plain unlink.
    attempt_dir = tmp_path / "work" / str(ULID()) / "attempt-1"
    done = subprocess.run(
        [sys.executable, "-c", READ_ONLY_SCENARIO, str(attempt_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_drop_permission_bypass if os.geteuid() == 0 else None,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"blocked": True, "attempt": False, "task": False}


def test_workspace_usage_counts_bytes_and_attempt_dirs_without_following_symlinks(tmp_path: Path) -> None:
    work = tmp_path / "work"
    assert workspace_usage(work).exists is False
    first = attempt(work, str(ULID()), 1, None)
    attempt(work, str(ULID()), 2, None)
    empty = workspace_usage(work)
    big = tmp_path / "big"
    big.write_bytes(os.urandom(1 << 20))
    (first / "repo" / "link").symlink_to(big)
    (work / "stray.txt").write_text("not an attempt")

    usage = workspace_usage(work)

    assert (usage.exists, usage.attempt_dirs, usage.work_dir) == (True, 2, str(work))
    assert usage.size_bytes >= 2 * 5000
    assert usage.size_bytes - empty.size_bytes < 1 << 20, "the symlinked file was counted"
    (first / "repo" / "real").write_bytes(os.urandom(1 << 20))
    (first / "repo" / "hardlink").hardlink_to(first / "repo" / "real")
    grown = workspace_usage(work).size_bytes - usage.size_bytes
    assert 1 << 20 <= grown < 2 << 20, "a file linked twice counts once"
