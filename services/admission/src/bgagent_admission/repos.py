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
from collections.abc import Sequence

from bgagent_contracts.localrepo import LocalRepoRefused, OsDisk, resolve_local_repo
from bgagent_contracts.submission import local_path

from .errors import InvalidRequest


def check_local_repo(repo: str, roots: Sequence[str]) -> None:
    """Raise InvalidRequest (field ``repo``) unless a local ``repo`` is a git repository inside the roots.

    ``repo`` is the output of the pure rule; ``owner/name`` and URLs pass untouched. Blocking I/O:
    call it through :func:`verify_local_repo` on the event loop.
    """
    if local_path(repo) is None:
        return
    try:
        resolve_local_repo(repo, roots, OsDisk())
    except LocalRepoRefused as exc:
        raise InvalidRequest("repo", exc.reason.value) from None


async def verify_local_repo(repo: str, roots: Sequence[str]) -> None:
    """:func:`check_local_repo` off the event loop (only local repositories touch the disk)."""
    if local_path(repo) is not None:
        await asyncio.to_thread(check_local_repo, repo, tuple(roots))
