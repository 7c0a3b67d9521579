"""Local repositories are opt-in roots: what admission accepts, and that its answers are no oracle.

The API tests run the real app over real JetStream with one root (``repo_root``, holding the git
repository ``demo``); the unit tests call the disk check directly.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bgagent_admission.errors import InvalidRequest
from bgagent_admission.repos import check_local_repo
from bgagent_contracts.localrepo import OsDisk, Refusal, git_dirs

ALICE = {"Authorization": "Bearer alice-token"}
Count = Callable[[], Awaitable[int]]


def _git(*args: str) -> None:
    subprocess.run(["git", *args], check=True, capture_output=True)


def _payload(repo: str) -> dict[str, Any]:
    return {"repo": repo, "description": "fix it"}


async def _refused(client: httpx.AsyncClient, repo: str, *, secrets: tuple[str, ...] = ()) -> str:
    """POST the repo; assert a 400 naming ``repo`` that reveals no host path; return the message."""
    resp = await client.post("/v1/tasks", json=_payload(repo), headers=ALICE)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    message: str = error["message"]
    assert message.startswith("repo: "), message
    # no path at all: only the two fixed forms the rule itself names may carry a '/'
    assert "/" not in message.replace("owner/name", "").replace("file:///path", ""), message
    for secret in (repo, *secrets):
        assert secret not in message
    return message


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A git repository next to the root, not inside it (what a task must never reach)."""
    repo = tmp_path / "elsewhere" / "victim"
    repo.mkdir(parents=True)
    _git("init", "--quiet", str(repo))
    return repo


# --- the API -----------------------------------------------------------------------


@pytest.mark.integration
async def test_a_git_repository_under_the_root_is_accepted_in_normal_form(
    local_client: httpx.AsyncClient, repo_root: Path, stream_count: Count
) -> None:
    demo = repo_root / "demo"
    (repo_root / "alias").symlink_to(demo)  # a symlink that stays inside the root is fine
    sent = {
        str(demo): str(demo),
        f"file://{demo}": f"file://{demo}",
        f"{demo}/": str(demo),
        f"{repo_root}/./demo": str(demo),
        str(repo_root / "alias"): str(repo_root / "alias"),
    }
    for repo, recorded in sent.items():
        resp = await local_client.post("/v1/tasks", json=_payload(repo), headers=ALICE)
        assert resp.status_code == 201, (repo, resp.text)
        assert resp.json()["data"]["repo"] == recorded
    assert await stream_count() == len(sent)


@pytest.mark.integration
@pytest.mark.parametrize("repo", ["/etc", "/proc/self/cwd", "/", "file:///etc", "file:///proc/self/cwd"])
async def test_host_paths_outside_the_root_are_refused(
    local_client: httpx.AsyncClient, repo: str, stream_count: Count
) -> None:
    assert await _refused(local_client, repo) == f"repo: {Refusal.OUTSIDE.value}"
    assert await stream_count() == 0


@pytest.mark.integration
async def test_outside_the_root_existing_and_missing_paths_get_the_same_answer(
    local_client: httpx.AsyncClient, repo_root: Path, outside: Path, tmp_path: Path, stream_count: Count
) -> None:
    (repo_root / "to-victim").symlink_to(outside)
    (repo_root / "to-etc").symlink_to("/etc")
    (repo_root / "to-nothing").symlink_to(tmp_path / "no-such-dir")
    (repo_root / "to-proc").symlink_to("/proc/self/cwd")
    secrets = (str(tmp_path), str(outside), "/etc", "/proc")
    answers = {
        await _refused(local_client, repo, secrets=secrets)
        for repo in (
            str(outside),
            str(tmp_path / "no-such-dir"),
            "/etc",
            "/no-such-dir-anywhere",
            str(repo_root / "to-victim"),
            str(repo_root / "to-etc"),
            str(repo_root / "to-nothing"),
            str(repo_root / "to-proc"),
            f"file://{repo_root}/to-victim",
            f"{repo_root}/to-victim/",
        )
    }
    assert answers == {f"repo: {Refusal.OUTSIDE.value}"}
    assert await stream_count() == 0


@pytest.mark.integration
@pytest.mark.parametrize(
    "repo",
    [
        "{root}/../elsewhere/victim",
        "{root}/demo/../../elsewhere/victim",
        "{root}/demo/..",
        "file://{root}/../elsewhere/victim",
    ],
)
async def test_dot_dot_is_refused(
    local_client: httpx.AsyncClient, repo_root: Path, outside: Path, repo: str, stream_count: Count
) -> None:
    message = await _refused(local_client, repo.format(root=repo_root), secrets=(str(outside),))
    assert "'..'" in message
    assert await stream_count() == 0


@pytest.mark.integration
async def test_inside_the_root_a_missing_path_or_a_plain_directory_is_named(
    local_client: httpx.AsyncClient, repo_root: Path, stream_count: Count
) -> None:
    (repo_root / "plain").mkdir()
    (repo_root / "file.txt").write_text("x")
    missing = await _refused(local_client, str(repo_root / "missing"))
    assert missing == f"repo: {Refusal.MISSING.value}"
    assert await _refused(local_client, f"file://{repo_root}/missing") == missing
    assert await _refused(local_client, str(repo_root / "file.txt")) == missing
    plain = await _refused(local_client, str(repo_root / "plain"))
    assert plain.startswith("repo: is not a git repository")
    assert await stream_count() == 0


@pytest.mark.integration
@pytest.mark.parametrize(
    "repo", ["file://relative/path", "file://localhost/etc", "file:", "file:/etc", "./demo", "~/demo"]
)
async def test_malformed_local_forms_are_refused(
    local_client: httpx.AsyncClient, repo: str, stream_count: Count
) -> None:
    await _refused(local_client, repo)
    assert await stream_count() == 0


@pytest.mark.integration
async def test_a_git_pointer_leading_out_of_the_root_is_refused(
    local_client: httpx.AsyncClient, repo_root: Path, outside: Path, stream_count: Count
) -> None:
    worktree = repo_root / "worktree"
    worktree.mkdir()
    (worktree / ".git").write_text(f"gitdir: {outside / '.git'}\n")
    linked = repo_root / "linked"
    linked.mkdir()
    (linked / ".git").symlink_to(outside / ".git")
    for repo in (worktree, linked):
        refused = await _refused(local_client, str(repo), secrets=(str(outside),))
        assert refused == f"repo: {Refusal.OUTSIDE.value}"
    assert await stream_count() == 0


@pytest.mark.integration
async def test_without_roots_every_local_form_is_refused(client: httpx.AsyncClient, repo_root: Path) -> None:
    for repo in (str(repo_root / "demo"), f"file://{repo_root}/demo", "/etc"):
        message = await _refused(client, repo)
        assert message == "repo: local repositories are disabled on this server; use owner/name"


# --- the disk check on its own ------------------------------------------------------


def _refusal(repo: str, roots: tuple[str, ...]) -> str:
    with pytest.raises(InvalidRequest) as info:
        check_local_repo(repo, roots)
    assert info.value.field == "repo"
    return info.value.message


def test_slugs_and_urls_never_touch_the_disk() -> None:
    assert check_local_repo("acme/widgets", ()) is None
    assert check_local_repo("https://example.com/x.git", ()) is None


def test_a_root_reached_through_a_symlink_compares_by_its_realpath(tmp_path: Path) -> None:
    real_root = tmp_path / "real"
    (real_root / "r").mkdir(parents=True)
    _git("init", "--quiet", str(real_root / "r"))
    link_root = tmp_path / "link"
    link_root.symlink_to(real_root)
    for repo, root in ((link_root, link_root), (real_root, link_root), (link_root, real_root)):
        assert check_local_repo(str(repo / "r"), (str(root),)) is None, (repo, root)


def test_a_bare_repository_and_a_worktree_inside_the_root_are_repositories(tmp_path: Path) -> None:
    root = tmp_path / "root"
    main = root / "main"
    main.mkdir(parents=True)
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x", GIT_COMMITTER_NAME="t")
    env.update(GIT_COMMITTER_EMAIL="t@x")
    subprocess.run(["git", "init", "--quiet", "-b", "main"], cwd=main, check=True, env=env)
    subprocess.run(["git", "commit", "--quiet", "--allow-empty", "-m", "x"], cwd=main, check=True, env=env)
    subprocess.run(["git", "worktree", "add", "--quiet", str(root / "wt")], cwd=main, check=True, env=env)
    _git("init", "--quiet", "--bare", str(root / "bare.git"))
    for name in ("main", "wt", "bare.git"):
        check_local_repo(str(root / name), (str(root),))
    dirs = git_dirs(str(root / "wt"), OsDisk())
    assert dirs is not None
    assert dirs[-1] == os.path.realpath(main / ".git")  # the worktree's commondir is checked too


def test_a_worktree_whose_common_dir_is_outside_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    _git("init", "--quiet", str(outside))
    gitdir = root / "gitdir"
    gitdir.mkdir(parents=True)
    (gitdir / "commondir").write_text(f"{outside / '.git'}\n")
    (root / "wt").mkdir()
    (root / "wt" / ".git").write_text("gitdir: ../gitdir\n")
    assert _refusal(str(root / "wt"), (str(root),)) == f"repo: {Refusal.OUTSIDE.value}"


def test_a_root_prefix_is_not_a_root(tmp_path: Path) -> None:
    (tmp_path / "repos-evil" / "x").mkdir(parents=True)
    _git("init", "--quiet", str(tmp_path / "repos-evil" / "x"))
    message = _refusal(str(tmp_path / "repos-evil" / "x"), (str(tmp_path / "repos"),))
    assert message == f"repo: {Refusal.OUTSIDE.value}"


def test_no_roots_refuses_everything_local(tmp_path: Path) -> None:
    assert _refusal(str(tmp_path), ()) == f"repo: {Refusal.OUTSIDE.value}"
