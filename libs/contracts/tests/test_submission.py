"""The submission rules shared by admission and the runner."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from bgagent_contracts import InvalidSubmissionError, TaskSubmitted, TaskType
from bgagent_contracts.submission import (
    MAX_DESCRIPTION_CHARS,
    check_repo,
    check_submission,
    check_submitted,
    check_text,
    check_user_id,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  fix it  ", "fix it"),
        ("line 1\r\nline 2\tend", "line 1\nline 2\tend"),
        ("   ", None),
        (None, None),
        ("é ü 漢字 🙂", "é ü 漢字 🙂"),
    ],
)
def test_check_text_normalises(raw: str | None, expected: str | None) -> None:
    assert check_text("description", raw, max_chars=100) == expected


@pytest.mark.parametrize("bad", ["a\x00b", "a\x1b[31mred", "a\x7fb", "a\x85b", "a\u2028b"])
def test_check_text_refuses_control_characters_naming_the_field(bad: str) -> None:
    with pytest.raises(InvalidSubmissionError) as info:
        check_text("description", bad, max_chars=100)
    assert info.value.field == "description"
    assert "control character U+" in info.value.problem


def test_check_text_one_line_refuses_newlines_and_tabs() -> None:
    with pytest.raises(InvalidSubmissionError, match=r"U\+000A"):
        check_text("title", "a\nb", max_chars=100, one_line=True)


def test_check_text_bounds_the_length() -> None:
    with pytest.raises(InvalidSubmissionError, match="at most 5 characters"):
        check_text("reason", "x" * 6, max_chars=5)


@pytest.mark.parametrize("bad", ["", "a b", "al\x00ice", "x" * 129, "a/b", "ä"])
def test_user_ids_are_plain_names(bad: str) -> None:
    with pytest.raises(InvalidSubmissionError, match="user_id"):
        check_user_id(bad)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (None, "is required"),
        ("  ", "must not be empty"),
        ("acme/../x", "must be owner/name"),
        ("../widgets", "may not be '.' or '..'"),
        ("acme/wid\x00gets", "is not a repository name"),
        ("x" * 1025, "is not a repository name"),
        ("https://example.com/acme/widgets", "must be owner/name"),
        ("/srv/repos/app", "local repositories are disabled"),
    ],
)
def test_check_repo_refuses(raw: str | None, problem: str) -> None:
    with pytest.raises(InvalidSubmissionError, match=problem):
        check_repo(raw)


def test_check_repo_accepts_a_slug_and_a_path_under_a_root() -> None:
    assert check_repo(" acme/widgets ") == "acme/widgets"
    assert check_repo("/srv/repos/./app/", local_roots=("/srv/repos",)) == "/srv/repos/app"
    assert check_repo("file:///srv/repos/app", local_roots=("/srv/repos/",)) == "file:///srv/repos/app"


@pytest.mark.parametrize("raw", ["/etc", "/srv/repos-evil/app", "/proc/self/cwd", "/srv/repos/../etc"])
def test_check_repo_refuses_paths_outside_the_roots(raw: str) -> None:
    with pytest.raises(InvalidSubmissionError) as info:
        check_repo(raw, local_roots=("/srv/repos",))
    assert info.value.field == "repo"
    assert "/etc" not in info.value.problem


def test_check_submission_applies_defaults() -> None:
    s = check_submission(repo="acme/widgets", description="fix it")
    assert (s.task_type, s.max_turns, s.trace, s.max_budget_usd) == (TaskType.NEW_TASK, 100, False, None)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"task_type": "explode"}, "task_type"),
        ({"max_turns": 0}, "max_turns"),
        ({"max_turns": 501}, "max_turns"),
        ({"max_budget_usd": 0.0}, "max_budget_usd"),
        ({"max_budget_usd": float("inf")}, "max_budget_usd"),
        ({"issue_number": 0}, "issue_number"),
        ({"issue_number": 2**31}, "issue_number"),
        ({"pr_number": 3}, "pr_number"),
        ({"description": None}, "description"),
        ({"description": "x" * (MAX_DESCRIPTION_CHARS + 1)}, "description"),
        ({"description": "fix\x00it"}, "description"),
        ({"task_type": "pr_iteration"}, "pr_number"),
    ],
)
def test_check_submission_names_the_broken_field(fields: dict[str, Any], field: str) -> None:
    values: dict[str, Any] = {"repo": "acme/widgets", "description": "fix it", **fields}
    with pytest.raises(InvalidSubmissionError) as info:
        check_submission(**values)
    assert info.value.field == field


def _submitted(make: Any, **fields: Any) -> TaskSubmitted:
    event: TaskSubmitted = make(TaskSubmitted, user_id="alice", repo="acme/widgets", description="fix it")
    return msgspec.structs.replace(event, **fields)


def test_check_submitted_accepts_what_admission_appends(make: Any) -> None:
    assert check_submitted(_submitted(make)).description == "fix it"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"max_turns": 0}, "max_turns"),
        ({"user_id": "bob smith"}, "user_id"),
        ({"channel": "carrier-pigeon"}, "channel"),
        ({"description": "  fix it  "}, "description"),
        ({"description": "fix\x00it"}, "description"),
        ({"repo": "/etc"}, "repo"),
        ({"repo": "/srv/repos/./app"}, "repo"),
    ],
)
def test_check_submitted_refuses_what_admission_would_not_append(
    make: Any, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidSubmissionError) as info:
        check_submitted(_submitted(make, **fields), local_roots=("/srv/repos",))
    assert info.value.field == field
