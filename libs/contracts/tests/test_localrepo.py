"""The disk rule for local repositories, over a fake disk (the real one is tested in the services)."""

from __future__ import annotations

import pytest

from bgagent_contracts.localrepo import LocalRepoRefused, Refusal, git_dirs, resolve_local_repo


class FakeDisk:
    """Directories, files (with a first line) and symlinks, as absolute paths."""

    def __init__(
        self, dirs: set[str], files: dict[str, str] | None = None, links: dict[str, str] | None = None
    ):
        self.dirs = dirs
        self.files = files or {}
        self.links = links or {}

    def realpath(self, path: str) -> str:
        parts = [p for p in path.split("/") if p]
        out = ""
        for part in parts:
            if part == "..":
                out = out.rsplit("/", 1)[0]
                continue
            out = f"{out}/{part}"
            while out in self.links:
                out = self.links[out]
        return out or "/"

    def isdir(self, path: str) -> bool:
        return self.realpath(path) in self.dirs

    def isfile(self, path: str) -> bool:
        return self.realpath(path) in self.files

    def first_line(self, path: str) -> str | None:
        return self.files.get(self.realpath(path))


ROOTS = ("/srv/repos",)


def test_a_repository_under_a_root_resolves_to_its_real_path() -> None:
    disk = FakeDisk({"/srv/repos", "/srv/repos/app", "/srv/repos/app/.git"})
    assert resolve_local_repo("file:///srv/repos/app", ROOTS, disk) == "/srv/repos/app"


def test_a_symlink_out_of_a_root_is_outside_whether_or_not_its_target_exists() -> None:
    exists = FakeDisk({"/srv/repos", "/etc", "/etc/.git"}, links={"/srv/repos/link": "/etc"})
    missing = FakeDisk({"/srv/repos"}, links={"/srv/repos/link": "/nowhere"})
    for disk in (exists, missing):
        with pytest.raises(LocalRepoRefused) as info:
            resolve_local_repo("/srv/repos/link", ROOTS, disk)
        assert info.value.reason is Refusal.OUTSIDE


def test_inside_the_roots_the_answer_says_what_is_missing() -> None:
    disk = FakeDisk({"/srv/repos", "/srv/repos/plain"})
    with pytest.raises(LocalRepoRefused) as missing:
        resolve_local_repo("/srv/repos/gone", ROOTS, disk)
    with pytest.raises(LocalRepoRefused) as plain:
        resolve_local_repo("/srv/repos/plain", ROOTS, disk)
    assert (missing.value.reason, plain.value.reason) == (Refusal.MISSING, Refusal.NOT_GIT)


def test_a_git_file_pointing_out_of_the_roots_is_outside() -> None:
    disk = FakeDisk(
        {"/srv/repos", "/srv/repos/wt", "/home/x/.git/worktrees/wt"},
        files={"/srv/repos/wt/.git": "gitdir: /home/x/.git/worktrees/wt"},
    )
    assert git_dirs("/srv/repos/wt", disk) == ["/home/x/.git/worktrees/wt"]
    with pytest.raises(LocalRepoRefused) as info:
        resolve_local_repo("/srv/repos/wt", ROOTS, disk)
    assert info.value.reason is Refusal.OUTSIDE


def test_a_worktree_common_dir_out_of_the_roots_is_outside() -> None:
    disk = FakeDisk(
        {"/srv/repos", "/srv/repos/wt", "/srv/repos/main/.git/worktrees/wt"},
        files={
            "/srv/repos/wt/.git": "gitdir: ../main/.git/worktrees/wt",
            "/srv/repos/main/.git/worktrees/wt/commondir": "/elsewhere/.git",
        },
    )
    with pytest.raises(LocalRepoRefused) as info:
        resolve_local_repo("/srv/repos/wt", ROOTS, disk)
    assert info.value.reason is Refusal.OUTSIDE


def test_a_bare_repository_is_a_repository() -> None:
    disk = FakeDisk(
        {"/srv/repos", "/srv/repos/b.git", "/srv/repos/b.git/objects", "/srv/repos/b.git/refs"},
        files={"/srv/repos/b.git/HEAD": "ref: refs/heads/main"},
    )
    assert resolve_local_repo("/srv/repos/b.git", ROOTS, disk) == "/srv/repos/b.git"


def test_no_roots_refuses_everything() -> None:
    disk = FakeDisk({"/srv/repos", "/srv/repos/app", "/srv/repos/app/.git"})
    with pytest.raises(LocalRepoRefused) as info:
        resolve_local_repo("/srv/repos/app", (), disk)
    assert info.value.reason is Refusal.OUTSIDE
