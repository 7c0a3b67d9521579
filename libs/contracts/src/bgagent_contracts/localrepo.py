"""Where a local repository really is: the one rule admission and the runner apply on disk.

``submission.check_repo`` places a local path under a root *as text*. A symlink inside a root,
or a ``.git`` file or symlink, can still lead out of it, so before anything is appended
(admission) and before a clone and a push (runner) the path is resolved against the file
system: its realpath must lie under a root's realpath, it must hold a git repository (a
``.git`` directory, a ``.git`` file naming a worktree's git directory, or a bare repository),
and every git directory it uses must lie under a root too.

The decision is pure: the caller passes a :class:`Disk` (the services use the operating
system's). Answers are no oracle of the host's file system: a path that leads outside the
roots gets the same answer whether or not it exists; only inside the roots does the answer say
what is missing.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from typing import Protocol

from .submission import NOT_UNDER_ROOTS, local_path, under_roots

POINTER_MAX_BYTES = 4096


class Disk(Protocol):
    """The few file-system questions the rule asks (``os.path`` answers them)."""

    def realpath(self, path: str) -> str: ...
    def isdir(self, path: str) -> bool: ...
    def isfile(self, path: str) -> bool: ...
    def first_line(self, path: str) -> str | None:
        """The first line of a small file (at most POINTER_MAX_BYTES read), None if unreadable."""
        ...


class Refusal(enum.Enum):
    OUTSIDE = NOT_UNDER_ROOTS
    MISSING = "does not exist (or is not a directory) under the local repository roots"
    NOT_GIT = "is not a git repository (no .git, and not a bare repository)"


class LocalRepoRefused(Exception):
    """A local repository the rule refuses; ``reason`` says why in words safe to show a client."""

    def __init__(self, reason: Refusal) -> None:
        super().__init__(reason.value)
        self.reason = reason


def _join(base: str, target: str) -> str:
    return target if target.startswith("/") else f"{base.rstrip('/')}/{target}"


def _pointer(disk: Disk, path: str, prefix: str) -> str | None:
    first = disk.first_line(path)
    if first is None or not first.strip().startswith(prefix):
        return None
    return first.strip()[len(prefix) :].strip() or None


def git_dirs(repo_dir: str, disk: Disk) -> list[str] | None:
    """Real paths of the git directories ``repo_dir`` uses, or None when it is no repository."""
    dot_git = _join(repo_dir, ".git")
    if disk.isdir(dot_git):
        gitdir = disk.realpath(dot_git)
    elif disk.isfile(dot_git):
        target = _pointer(disk, dot_git, "gitdir:")
        if target is None:
            return None
        gitdir = disk.realpath(_join(repo_dir, target))
        if not disk.isdir(gitdir):
            return None
    elif (
        disk.isfile(_join(repo_dir, "HEAD"))
        and disk.isdir(_join(repo_dir, "objects"))
        and disk.isdir(_join(repo_dir, "refs"))
    ):
        gitdir = repo_dir  # a bare repository
    else:
        return None
    dirs = [gitdir]
    common = _join(gitdir, "commondir")
    if disk.isfile(common):
        target = _pointer(disk, common, "")
        if target is None:
            return None
        dirs.append(disk.realpath(_join(gitdir, target)))
    return dirs


def resolve_local_repo(repo: str, roots: Sequence[str], disk: Disk) -> str:
    """The real path of a local repository (``/p`` or ``file:///p``) that passes the rule.

    Raises LocalRepoRefused. ``repo`` must already have passed ``submission.check_repo``.
    """
    path = local_path(repo.strip())
    real_roots = [disk.realpath(root) for root in roots]
    if path is None or not real_roots:
        raise LocalRepoRefused(Refusal.OUTSIDE)
    real = disk.realpath(path)
    if not under_roots(real, real_roots):
        raise LocalRepoRefused(Refusal.OUTSIDE)
    if not disk.isdir(real):
        raise LocalRepoRefused(Refusal.MISSING)
    dirs = git_dirs(real, disk)
    if dirs is None:
        raise LocalRepoRefused(Refusal.NOT_GIT)
    if not all(under_roots(d, real_roots) for d in dirs):
        raise LocalRepoRefused(Refusal.OUTSIDE)
    return real


class OsDisk:
    """The operating system's answers (read-only: ``stat`` calls and one small read).

    The only file-system access in contracts, kept beside the rule so admission and the runner
    share one implementation; the rule itself takes any Disk (the tests pass a fake one).
    """

    def realpath(self, path: str) -> str:
        return os.path.realpath(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def isfile(self, path: str) -> bool:
        return os.path.isfile(path)

    def first_line(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read(POINTER_MAX_BYTES).partition("\n")[0]
        except OSError:
            return None
