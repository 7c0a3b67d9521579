"""The task workspace: clone, branch, commit, push.

The GitHub token never touches disk, argv or logs: git gets it as an
``http.<git-url>/.extraHeader`` through ``GIT_CONFIG_COUNT`` environment
variables, scoped to the GitHub git URL so no other host ever sees it.

Local repositories (an absolute path or ``file://`` URL) must lie under one of the runner's
``local_repo_roots``, checked on disk (symlinks resolved, ``.git`` pointers followed) when the
repository is parsed, again right before the clone and again right before the push. The push
goes to the URL decided here, never to whatever ``origin`` the agent may have rewritten in the
workspace. Refusals say nothing about the host's file system beyond the roots.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import msgspec

from bgagent_contracts.localrepo import LocalRepoRefused, OsDisk, Refusal, resolve_local_repo
from bgagent_contracts.preview import redact
from bgagent_contracts.submission import local_path
from bgagent_contracts.text import clean

from .cleanup import remove_attempt, remove_tree, write_owner
from .errors import GitError, RepoNotAllowedError, WorkspaceError
from .settings import Settings

logger = logging.getLogger(__name__)

GIT_TIMEOUT_S = 300.0
# Never committed, even in repositories without a .gitignore (written to .git/info/exclude).
DEFAULT_EXCLUDES = ("__pycache__/", "*.py[cod]", ".pytest_cache/", ".mypy_cache/", ".ruff_cache/")
IDENTITY = ("bgagent", "bgagent@localhost")
NOT_UNDER_ROOTS = (
    "the repository is not under a local repository root this runner allows (BGAGENT_LOCAL_REPO_ROOTS)"
)


class RepoRef(msgspec.Struct, frozen=True, kw_only=True):
    """Where a task's repository lives and whether a forge serves it."""

    kind: Literal["github", "local", "remote"]
    clone_url: str
    owner: str | None = None
    name: str | None = None

    @property
    def is_github(self) -> bool:
        return self.kind == "github"


def _owner_name(path: str) -> tuple[str, str] | None:
    parts = path.strip("/").removesuffix(".git").split("/")
    if len(parts) == 2 and all(p and p not in (".", "..") for p in parts):
        return parts[0], parts[1]
    return None


def parse_repo(repo: str, settings: Settings) -> RepoRef:
    """``owner/name``, GitHub URLs → GitHub; paths, ``file://`` → local (under a root); https → remote.

    A local repository is checked on disk (:func:`local_repo`): its ``clone_url`` is the real
    path that passed, in the form it was given (plain path or ``file://``).
    """
    text = repo.strip()
    if text.startswith(("/", "file://")):
        real = local_repo(text, settings.local_repo_roots)
        return RepoRef(kind="local", clone_url=f"file://{real}" if text.startswith("file://") else real)
    git_base = settings.github_git_url.rstrip("/")
    if text.startswith(git_base + "/"):
        pair = _owner_name(text[len(git_base) :])
        if pair is None:
            raise RepoNotAllowedError(f"repository URL {text!r} is not {git_base}/<owner>/<name>")
        return RepoRef(
            kind="github", clone_url=f"{git_base}/{pair[0]}/{pair[1]}.git", owner=pair[0], name=pair[1]
        )
    if text.startswith("https://"):
        if not urlsplit(text).hostname:
            raise RepoNotAllowedError(f"repository URL {text!r} has no host")
        return RepoRef(kind="remote", clone_url=text)
    pair = _owner_name(text) if "://" not in text and ":" not in text else None
    if pair is None:
        raise RepoNotAllowedError(
            f"repository {text!r} is neither owner/name, an https URL, nor a local path or file:// URL"
        )
    return RepoRef(
        kind="github", clone_url=f"{git_base}/{pair[0]}/{pair[1]}.git", owner=pair[0], name=pair[1]
    )


def local_repo(repo: str, roots: tuple[str, ...]) -> str:
    """The real path of a local repository that lies, with its git directories, under a root.

    RepoNotAllowedError when local repositories are off or the path leads (through any symlink
    or ``.git`` pointer) outside every root: one message whether or not the path exists. Inside
    the roots, a missing path or a plain directory is a WorkspaceError. Blocking I/O.
    """
    if not roots:
        raise RepoNotAllowedError(
            "local repositories are disabled on this runner (BGAGENT_LOCAL_REPO_ROOTS is empty)"
        )
    path = local_path(repo.strip())
    if path is None or not path.startswith("/") or ".." in path.split("/"):
        raise RepoNotAllowedError("a local repository must be an absolute path or file:// URL without '..'")
    try:
        return resolve_local_repo(repo, roots, OsDisk())
    except LocalRepoRefused as exc:
        if exc.reason is Refusal.OUTSIDE:
            raise RepoNotAllowedError(NOT_UNDER_ROOTS) from None
        raise WorkspaceError(f"the local repository {exc.reason.value}") from None


async def _recheck(ref: RepoRef, roots: tuple[str, ...]) -> None:
    """Resolve a local repository again (a symlink may have changed since it was parsed)."""
    if ref.kind != "local":
        return
    real = await asyncio.to_thread(local_repo, ref.clone_url, roots)
    if real != ref.clone_url.removeprefix("file://"):
        raise RepoNotAllowedError("the local repository moved while the task ran (a symlink changed)")


def git_env(settings: Settings, home: Path) -> dict[str, str]:
    """Environment for the runner's own git commands (carries the token only for the GitHub URL)."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": IDENTITY[0],
        "GIT_AUTHOR_EMAIL": IDENTITY[1],
        "GIT_COMMITTER_NAME": IDENTITY[0],
        "GIT_COMMITTER_EMAIL": IDENTITY[1],
    }
    env["PATH"] = os.environ.get("PATH", env["PATH"])
    if settings.github_token:
        basic = base64.b64encode(f"x-access-token:{settings.github_token}".encode()).decode()
        env.update(
            GIT_CONFIG_COUNT="1",
            GIT_CONFIG_KEY_0=f"http.{settings.github_git_url.rstrip('/')}/.extraHeader",
            GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}",
        )
    return env


class Git:
    """Runs git in one directory; failures raise GitError with redacted output."""

    def __init__(
        self,
        cwd: Path,
        env: dict[str, str],
        secrets: tuple[str, ...],
        *,
        origin: RepoRef | None = None,
        local_roots: tuple[str, ...] = (),
    ) -> None:
        self.cwd = cwd
        self.env = env
        self.secrets = secrets
        # where this checkout came from, and where push() sends it (None: the "origin" remote)
        self.origin = origin
        self.local_roots = local_roots

    async def run(self, *args: str, cwd: Path | None = None, ok_codes: tuple[int, ...] = (0,)) -> str:
        proc = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=cwd or self.cwd,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(GIT_TIMEOUT_S):
                out, err = await proc.communicate()
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await asyncio.shield(proc.wait())
            raise
        if proc.returncode not in ok_codes:
            detail = redact(err.decode(errors="replace").strip()[-500:], self.secrets)
            raise GitError(f"git {args[0]} failed (exit {proc.returncode}): {detail}")
        return out.decode(errors="replace").strip()

    async def code(self, *args: str) -> int:
        proc = await asyncio.create_subprocess_exec(
            "git", *args, cwd=self.cwd, env=self.env, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        return await proc.wait()


class Workspace(msgspec.Struct, kw_only=True):
    """A prepared checkout for one attempt."""

    root: Path
    """``<work_dir>/<task_id>/attempt-<n>``: holds ``repo/`` and the agent's ``home/``."""
    repo_dir: Path
    home: Path
    ref: RepoRef
    branch: str
    base_branch: str
    base_sha: str
    push: bool = True
    """False for pr_review tasks: never push."""


def attempt_dir(settings: Settings, task_id: str, attempt: int) -> Path:
    return Path(settings.work_dir) / task_id / f"attempt-{attempt}"


async def clone(settings: Settings, ref: RepoRef, root: Path) -> tuple[Git, Path, Path]:
    """A fresh clone in ``root/repo`` with the bgagent identity configured."""
    roots = settings.local_repo_roots
    await _recheck(ref, roots)
    await asyncio.to_thread(_fresh_dir, root)
    home = root / "home"
    repo_dir = root / "repo"
    git = Git(repo_dir, git_env(settings, home), settings.secrets, origin=ref, local_roots=roots)
    await git.run("clone", "--quiet", "--no-tags", ref.clone_url, str(repo_dir), cwd=root)
    await git.run("config", "user.name", IDENTITY[0])
    await git.run("config", "user.email", IDENTITY[1])
    await asyncio.to_thread(_add_excludes, repo_dir)
    return git, repo_dir, home


async def head_sha(git: Git) -> str:
    return await git.run("rev-parse", "HEAD")


async def default_branch(git: Git) -> str:
    try:
        return await git.run("symbolic-ref", "--short", "HEAD")
    except GitError as exc:
        raise GitError(f"cannot tell the default branch of the repository: {exc}") from exc


async def checkout_new_branch(git: Git, branch: str) -> None:
    await git.run("checkout", "--quiet", "-B", branch)


async def checkout_remote_branch(git: Git, branch: str) -> None:
    await git.run("fetch", "--quiet", "origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}")
    await git.run("checkout", "--quiet", "-B", branch, f"origin/{branch}")


async def commit_all(git: Git, message: str) -> bool:
    """Stage everything and commit; False when there was nothing to commit.

    The message is redacted and cleaned here too: argv cannot carry a NUL, and git would refuse
    an empty message.
    """
    await git.run("add", "-A")
    if await git.code("diff", "--cached", "--quiet") == 0:
        return False
    text = clean(redact(clean(message), git.secrets)).strip() or "bgagent: changes"
    await git.run("commit", "--quiet", "--no-verify", "-m", text)
    return True


async def commits_ahead(git: Git, base_sha: str) -> int:
    return int(await git.run("rev-list", "--count", f"{base_sha}..HEAD") or "0")


async def push(git: Git, branch: str, *, force: bool) -> None:
    """Push HEAD to ``branch`` of the repository the checkout came from, checked once more.

    The agent had a shell in this checkout: it may have pointed ``origin`` elsewhere, added a
    ``url.<base>.insteadOf`` rewrite or a pre-push hook. So the push names the URL itself, refuses
    any URL rewrite in effect, and skips hooks (``--no-verify``).
    """
    target = "origin"
    if git.origin is not None:
        await _recheck(git.origin, git.local_roots)
        rewrites = await git.run(
            "config", "--name-only", "--get-regexp", r"^url\..*\.(insteadof|pushinsteadof)$", ok_codes=(0, 1)
        )
        if rewrites:
            raise RepoNotAllowedError(
                "the workspace's git configuration rewrites remote URLs (url.<base>.insteadOf); not pushing"
            )
        target = git.origin.clone_url
    args = ["push", "--quiet", "--no-verify", target, f"HEAD:refs/heads/{branch}"]
    if force:
        args.insert(1, "--force")
    await git.run(*args)


def _add_excludes(repo_dir: Path) -> None:
    exclude = repo_dir / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with exclude.open("a", encoding="utf-8") as f:
        f.write("\n# bgagent defaults\n" + "\n".join(DEFAULT_EXCLUDES) + "\n")


def _fresh_dir(root: Path) -> None:
    """An empty attempt directory with ``home/``, owned by this runner (``cleanup.write_owner``)."""
    remove_tree(root)
    for tries_left in (2, 1, 0):
        try:
            (root / "home").mkdir(parents=True)
            break
        except FileNotFoundError:
            # another runner removed the (then empty) task directory between our two mkdirs
            if not tries_left:
                raise
    write_owner(root)


def remove(root: Path) -> None:
    """Remove an attempt directory and its task directory when that is left empty (never raises)."""
    remove_attempt(root)
