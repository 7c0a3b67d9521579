"""Workspace clean-up: remove attempt directories robustly, sweep those of dead runners, measure.

Layout: ``<work_dir>/<task_id>/attempt-<n>/`` (:func:`workspace.attempt_dir`). Each attempt
directory holds an ``owner`` file naming the runner process that made it (pid and start time, as
the sandbox's cgroups name their runner: :func:`cgroups.start_time`). A starting runner removes
the attempt directories whose owner process is gone, then every task directory left empty, so
several runners may share one work dir: an attempt of a live runner is never touched. A directory
without a readable owner file (made before owner files existed, or one being created right now)
is removed only once it is older than :data:`NO_OWNER_GRACE_S`.

Nothing here follows a symlink: a symlink where a task or attempt directory should be is left
alone by the sweep, and removal unlinks a link rather than entering it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from bgagent_contracts.subjects import is_task_id

from .cgroups import start_time

logger = logging.getLogger(__name__)

OWNER_FILE = "owner"
NO_OWNER_GRACE_S = 3600.0
"""An attempt directory without an owner file is swept only once it is this old (seconds)."""
_ATTEMPT = re.compile(r"attempt-[0-9]+")


# --- owner ------------------------------------------------------------------------------------------


def runner_identity(pid: int | None = None) -> str:
    """``"<pid> <start time>"`` of a process (this one by default): unique on this machine."""
    pid = os.getpid() if pid is None else pid
    return f"{pid} {start_time(pid)}"


def write_owner(attempt: Path, identity: str | None = None) -> None:
    """Record this process (or ``identity``) as the owner of ``attempt`` (atomically: write, rename)."""
    tmp = attempt / f"{OWNER_FILE}.tmp"
    tmp.write_text((identity or runner_identity()) + "\n", encoding="ascii")
    os.replace(tmp, attempt / OWNER_FILE)


def owner_alive(attempt: Path) -> bool | None:
    """True when the process named in ``attempt``'s owner file runs; False when it is gone.

    None when there is no readable, well-formed owner file (the caller decides by age).
    """
    try:
        fields = (attempt / OWNER_FILE).read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    if len(fields) != 2 or not fields[0].isdigit() or fields[1] == "gone":
        return None
    return start_time(int(fields[0])) == fields[1]


# --- removal ----------------------------------------------------------------------------------------


def remove_tree(path: Path) -> None:
    """Remove ``path`` and everything under it; a missing path is fine, a symlink is unlinked.

    Entries the sandbox left read-only (files of directories with mode 0555, directories with
    mode 0) are made writable by their owner and removed on a second try. Raises OSError when
    something still cannot be removed.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    _rmtree(str(path))


def _rmtree(path: str) -> None:
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=_retry_writable)
    else:
        shutil.rmtree(path, onerror=lambda func, p, info: _retry_writable(func, p, info[1]))


def _retry_writable(func: Callable[..., Any], path: str, exc: BaseException) -> None:
    """``rmtree``'s error hook: make the entry and its directory writable and remove it again."""
    if isinstance(exc, FileNotFoundError):
        return
    if not isinstance(exc, PermissionError):
        raise exc
    _make_writable(os.path.dirname(path))
    _make_writable(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        _rmtree(path)  # a directory the walk could not open, read or remove: walk it again
    else:
        os.unlink(path)


def _make_writable(path: str) -> None:
    """``chmod u+rwx`` a directory (never through a symlink: anything but a directory is left)."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_IRWXU != stat.S_IRWXU:
        os.chmod(path, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)


def remove_attempt(attempt: Path, wait_s: float = 2.0) -> None:
    """Remove an attempt directory, then its task directory if that is now empty.

    A cancelled attempt may still have a worker thread writing into it for a few milliseconds
    (the sandbox's ``/etc`` copy), so a failure is retried until ``wait_s`` has passed. Never
    raises: what cannot be removed is logged and left to the next start-up sweep. Blocking I/O.
    """
    deadline = time.monotonic() + wait_s
    delay = 0.005
    while True:
        try:
            remove_tree(attempt)
            break
        except OSError as exc:
            if time.monotonic() >= deadline:
                logger.warning("workspace %s not fully removed (swept at the next start): %s", attempt, exc)
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
    _rmdir_if_empty(attempt.parent)


def _rmdir_if_empty(path: Path) -> bool:
    """rmdir (only an empty directory, never a symlink's target); False when it stays."""
    try:
        os.rmdir(path)
    except OSError:  # not empty, gone, a symlink (ENOTDIR), or not ours to remove
        return False
    return True


# --- sweep ------------------------------------------------------------------------------------------


def sweep(work_dir: Path, *, grace_s: float = NO_OWNER_GRACE_S, now: float | None = None) -> list[Path]:
    """Remove the attempt directories under ``work_dir`` no live runner owns; returns them.

    Only ``<task id>/attempt-<n>`` directories are considered (a task id is a ULID); other files
    and directories are left alone. Task directories left empty are removed too. Blocking I/O.
    """
    now = time.time() if now is None else now
    removed: list[Path] = []
    for task in _dirs(work_dir, is_task_id):
        for attempt in _dirs(task, _ATTEMPT.fullmatch):
            if _owned(attempt, now, grace_s):
                continue
            try:
                remove_tree(attempt)
            except OSError as exc:
                logger.warning("could not remove the stale workspace %s: %s", attempt, exc)
                continue
            removed.append(attempt)
        _rmdir_if_empty(task)
    return removed


def _dirs(parent: Path, name_ok: Callable[[str], object]) -> list[Path]:
    """The real directories (not symlinks) in ``parent`` whose names pass ``name_ok``."""
    try:
        with os.scandir(parent) as entries:
            return [Path(e.path) for e in entries if name_ok(e.name) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _owned(attempt: Path, now: float, grace_s: float) -> bool:
    alive = owner_alive(attempt)
    if alive is not None:
        return alive
    try:
        age = now - os.lstat(attempt).st_mtime
    except OSError:
        return True  # gone already, or not ours to look at: leave it
    return age < grace_s


# --- size -------------------------------------------------------------------------------------------


class WorkspaceUsage(msgspec.Struct, frozen=True, kw_only=True):
    work_dir: str
    exists: bool
    size_bytes: int
    """Disk space taken (allocated blocks; a file hard-linked several times counts once)."""
    attempt_dirs: int
    """How many ``<task id>/attempt-<n>`` directories there are."""


def workspace_usage(work_dir: Path) -> WorkspaceUsage:
    """Size and attempt count of a work dir, walked with ``os.scandir`` without following symlinks.

    Unreadable directories count as what could be read. Blocking I/O.
    """
    try:
        exists = stat.S_ISDIR(os.stat(work_dir).st_mode)
    except OSError:
        exists = False
    if not exists:
        return WorkspaceUsage(work_dir=str(work_dir), exists=False, size_bytes=0, attempt_dirs=0)
    attempts = sum(len(_dirs(task, _ATTEMPT.fullmatch)) for task in _dirs(work_dir, is_task_id))
    seen: set[tuple[int, int]] = set()
    size = 0
    stack = [str(work_dir)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                        key = (st.st_dev, st.st_ino)
                        if key in seen:
                            continue
                        seen.add(key)
                    size += st.st_blocks * 512
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
        except OSError:
            continue
    return WorkspaceUsage(work_dir=str(work_dir), exists=True, size_bytes=size, attempt_dirs=attempts)
