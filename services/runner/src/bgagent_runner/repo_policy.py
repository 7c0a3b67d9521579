"""A repository's own policy rules: ``.bgagent/policies/`` in the cloned repository.

The repository may add hard-deny and hard-gate rules (``hard_deny.cedar``, ``hard_gate.cedar``)
and drop hard-gate rules by id (``disabled``, one id per line); it can never drop a hard-deny rule.
The files are read once, right after the clone, before the agent runs: each must be a regular file
(no link out of the repository, opened with ``O_NOFOLLOW``) of at most 64 KiB, and is copied into the
attempt's private folder, which the agent's sandbox cannot see, before the engine loads it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from bgagent_policy import DISABLED_FILE, REPO_POLICY_DIR, PolicyEngine, PolicyLoadError, read_disabled

from .errors import RunnerError
from .settings import Settings

MAX_POLICY_BYTES = 64 * 1024
POLICY_FILES = ("hard_deny.cedar", "hard_gate.cedar", DISABLED_FILE)


class RepoPolicyError(RunnerError):
    code = "POLICY_ERROR"


def task_engine(
    base: PolicyEngine, settings: Settings, repo_dir: Path, private: Path
) -> tuple[PolicyEngine, str | None]:
    """The engine of one task and a line saying what the repository changed (None: nothing).

    Without ``.bgagent/policies/`` it is the runner's own engine, unchanged.
    """
    source = repo_dir / REPO_POLICY_DIR
    if not os.path.lexists(source):
        return base, None
    for part in (repo_dir / Path(REPO_POLICY_DIR).parts[0], source):
        if part.is_symlink() or not part.is_dir():
            raise RepoPolicyError(f"{REPO_POLICY_DIR} must be a directory of the repository, not a link")
    private.mkdir(parents=True, exist_ok=True)
    copied = [name for name in POLICY_FILES if _copy(source / name, private / name)]
    if not copied:
        return base, None
    repo_disabled = read_disabled(private)
    try:
        engine = PolicyEngine.load(
            Path(settings.policy_dir) if settings.policy_dir else None,
            disabled=[*settings.policy_disable, *repo_disabled],
            more_dirs=[private],
        )
    except PolicyLoadError as exc:
        message = str(exc).replace(str(private), REPO_POLICY_DIR)
        raise RepoPolicyError(f"the repository's policies do not load: {message}") from exc
    added = sorted({r.rule_id for r in engine.rules()} - {r.rule_id for r in base.rules()})
    detail = f"{REPO_POLICY_DIR}: {len(added)} rule(s) added"
    if added:
        detail += f" ({', '.join(added[:10])})"
    if repo_disabled:
        detail += f"; disabled: {', '.join(repo_disabled[:10])}"
    return engine, detail


def _copy(path: Path, target: Path) -> bool:
    """Copy one regular file of at most 64 KiB, never through a link; False when it is absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RepoPolicyError(
                f"{REPO_POLICY_DIR}/{path.name} is a link; only regular files count"
            ) from exc
        raise RepoPolicyError(f"{REPO_POLICY_DIR}/{path.name} cannot be read: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise RepoPolicyError(f"{REPO_POLICY_DIR}/{path.name} is not a regular file")
        data = handle.read(MAX_POLICY_BYTES + 1)
    if len(data) > MAX_POLICY_BYTES:
        raise RepoPolicyError(f"{REPO_POLICY_DIR}/{path.name} is larger than {MAX_POLICY_BYTES // 1024} KiB")
    target.write_bytes(data)
    return True
