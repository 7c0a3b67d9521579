"""The pure rule for local repositories: roots compared as normalised paths, no disk, no oracle."""

from __future__ import annotations

import pytest

from bgagent_contracts import InvalidSubmissionError
from bgagent_contracts.submission import check_repo, local_path, under_roots

ROOTS = ("/srv/repos", "/home/ci/checkouts/")
OUTSIDE = "is not under a local repository root this server allows"


def _problem(repo: str, roots: tuple[str, ...] = ROOTS) -> str:
    with pytest.raises(InvalidSubmissionError) as info:
        check_repo(repo, local_roots=roots)
    assert info.value.field == "repo"
    return info.value.problem


@pytest.mark.parametrize(
    ("repo", "path"),
    [("/a/b", "/a/b"), ("file:///a/b", "/a/b"), ("file://a/b", "a/b"), ("acme/widgets", None), ("x", None)],
)
def test_local_path_names_the_path_of_a_local_form(repo: str, path: str | None) -> None:
    assert local_path(repo) == path


@pytest.mark.parametrize(
    ("path", "inside"),
    [
        ("/srv/repos", True),
        ("/srv/repos/a", True),
        ("/srv/repos/a/b/c", True),
        ("/home/ci/checkouts/x", True),  # a root's trailing slash does not matter
        ("/srv/repos-evil/a", False),  # a name prefix is not a parent
        ("/srv/repo", False),
        ("/srv", False),
        ("/", False),
        ("/etc", False),
    ],
)
def test_under_roots_is_a_parent_relation(path: str, inside: bool) -> None:
    assert under_roots(path, ROOTS) is inside


def test_slash_as_a_root_holds_everything() -> None:
    assert under_roots("/etc", ("/",))
    assert not under_roots("/etc", ())


@pytest.mark.parametrize(
    ("repo", "normal"),
    [
        ("/srv/repos/a", "/srv/repos/a"),
        ("/srv/repos/a/", "/srv/repos/a"),
        ("/srv/repos/./a", "/srv/repos/a"),
        ("/srv//repos///a", "/srv/repos/a"),
        ("//srv/repos/a", "/srv/repos/a"),
        ("file:///srv/repos/a/", "file:///srv/repos/a"),
        ("file:///home/ci/checkouts/x", "file:///home/ci/checkouts/x"),
        ("  /srv/repos/a  ", "/srv/repos/a"),
        ("acme/widgets", "acme/widgets"),
    ],
)
def test_accepted_values_come_back_in_normal_form(repo: str, normal: str) -> None:
    assert check_repo(repo, local_roots=ROOTS) == normal


@pytest.mark.parametrize(
    "repo",
    ["/etc", "/proc/self/cwd", "/", "/srv/repos-evil/a", "/srv", "file:///etc", "//etc", "/srv/./x"],
)
def test_outside_the_roots_one_message_that_names_no_path(repo: str) -> None:
    problem = _problem(repo)
    assert problem == OUTSIDE
    assert "/" not in problem


@pytest.mark.parametrize("repo", ["/srv/repos/../etc", "/srv/repos/a/..", "file:///srv/repos/../../etc"])
def test_dot_dot_is_refused_before_normalising(repo: str) -> None:
    assert "'..'" in _problem(repo)


@pytest.mark.parametrize("repo", ["file://srv/repos/a", "file://localhost/srv/repos/a", "file://"])
def test_a_file_url_must_carry_an_absolute_path(repo: str) -> None:
    assert "absolute path" in _problem(repo)


@pytest.mark.parametrize("repo", ["/srv/repos/a", "file:///srv/repos/a", "/etc"])
def test_no_roots_disables_every_local_form(repo: str) -> None:
    assert "disabled" in _problem(repo, roots=())


@pytest.mark.parametrize("repo", ["./x", "../x", "~/x", "x/", "relative/path/x"])
def test_relative_forms_never_pass_as_local_repositories(repo: str) -> None:
    problem = _problem(repo)
    assert "owner/name" in problem or "'.' or '..'" in problem
