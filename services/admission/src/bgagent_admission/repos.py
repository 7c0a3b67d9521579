"""Local repositories at the I/O edge: what the pure rule cannot see without the file system.

``bgagent_contracts.submission.check_repo`` has already normalised a local path and placed it
under one of the configured roots *as text*. Here, on disk, before anything is appended:

- the path's realpath (every symlink resolved, the roots' too) must still lie under a root's
  realpath, so a symlink inside a root cannot lead out of it;
- it must be a directory holding a git repository (a ``.git`` directory, a ``.git`` file naming
  the git directory of a worktree, or a bare repository), and that git directory must lie under a
  root as well (a ``.git`` file or symlink could point anywhere).

The answers are no oracle of the server's file system: a path that leads outside the roots gets
the same message whether or not it exists; only inside the roots does a message say what is
missing. The value recorded is the one the caller sent (normalised); the runner resolves it again
before it clones and before it pushes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

from bgagent_contracts.submission import local_path, under_roots

from .errors import InvalidRequest

NOT_UNDER_ROOTS = "is not under a local repository root this server allows"
"""The pure rule's own message, so the text check and the disk check cannot be told apart."""

MISSING = "does not exist (or is not a directory) under the local repository roots"
_GITDIR_FILE_MAX = 4096


def git_dirs(repo_dir: str) -> list[str] | None:
    """The real paths of the git directories ``repo_dir`` uses, or None when it is no repository.

    One entry for a plain or bare repository; for a worktree (``.git`` is a file), its git
    directory and, when that has a ``commondir``, the shared one. Reads a few small files.
    """
    dot_git = os.path.join(repo_dir, ".git")
    if os.path.isdir(dot_git):
        gitdir = os.path.realpath(dot_git)
    elif os.path.isfile(dot_git):
        target = _read_pointer(dot_git, prefix="gitdir:")
        if target is None:
            return None
        gitdir = os.path.realpath(os.path.join(repo_dir, target))
        if not os.path.isdir(gitdir):
            return None
    elif _is_bare(repo_dir):
        gitdir = repo_dir
    else:
        return None
    dirs = [gitdir]
    common = os.path.join(gitdir, "commondir")
    if os.path.isfile(common):
        target = _read_pointer(common)
        if target is None:
            return None
        dirs.append(os.path.realpath(os.path.join(gitdir, target)))
    return dirs


def _read_pointer(path: str, *, prefix: str = "") -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            first = f.read(_GITDIR_FILE_MAX).partition("\n")[0].strip()
    except OSError:
        return None
    if not first.startswith(prefix):
        return None
    target = first[len(prefix) :].strip()
    return target or None


def _is_bare(path: str) -> bool:
    return (
        os.path.isfile(os.path.join(path, "HEAD"))
        and os.path.isdir(os.path.join(path, "objects"))
        and os.path.isdir(os.path.join(path, "refs"))
    )


def check_local_repo(repo: str, roots: Sequence[str]) -> None:
    """Raise InvalidRequest (field ``repo``) unless a local ``repo`` is a git repository inside the roots.

    ``repo`` is the output of the pure rule; ``owner/name`` and URLs pass untouched. Blocking I/O:
    call it through :func:`verify_local_repo` on the event loop.
    """
    path = local_path(repo)
    if path is None:
        return
    real_roots = [os.path.realpath(root) for root in roots]
    real = os.path.realpath(path)
    if not real_roots or not under_roots(real, real_roots):
        raise InvalidRequest("repo", NOT_UNDER_ROOTS)
    if not os.path.isdir(real):
        raise InvalidRequest("repo", MISSING)
    dirs = git_dirs(real)
    if dirs is None:
        raise InvalidRequest("repo", "is not a git repository (no .git, and not a bare repository)")
    if not all(under_roots(d, real_roots) for d in dirs):
        raise InvalidRequest("repo", NOT_UNDER_ROOTS)


async def verify_local_repo(repo: str, roots: Sequence[str]) -> None:
    """:func:`check_local_repo` off the event loop (only local repositories touch the disk)."""
    if local_path(repo) is not None:
        await asyncio.to_thread(check_local_repo, repo, tuple(roots))
