"""The comment body: every status, sanitised links, escaped cells, bounded size."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from bgagent_contracts import Status, TaskState, TaskType
from bgagent_fanout.render import (
    MAX_BODY_CHARS,
    code_cell,
    format_duration,
    marker,
    render_comment,
    safe_url,
    target_of,
    text_cell,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
TASK = "01JNQ8Z6V3W6Y1K9T2B4C5D6E7"


def state(**changes: object) -> TaskState:
    base = TaskState(
        task_id=TASK,
        user_id="alice",
        repo="acme/widgets",
        task_type=TaskType.NEW_TASK,
        issue_number=7,
        pr_number=None,
        description="fix it",
        max_turns=50,
        max_budget_usd=None,
        trace=False,
        channel="api",
        created_at=T0,
        last_event_type="task_submitted",
        last_event_at=T0,
    )
    return msgspec.structs.replace(base, **changes)


def table_rows(body: str) -> dict[str, str]:
    rows = {}
    for line in body.splitlines():
        if line.startswith("| ") and not line.startswith("| |"):
            cells = line.strip("|").split(" | ", 1)
            rows[cells[0].strip()] = cells[1].rstrip(" |").strip()
    return rows


@pytest.mark.parametrize("status", list(Status))
def test_every_status_renders_heading_marker_and_bold_status(status: Status) -> None:
    done = T0 + timedelta(minutes=3, seconds=5) if status.terminal else None
    body = render_comment(
        state(status=status, completed_at=done, error_code="X", error_message="boom", started_at=T0)
    )
    lines = body.splitlines()
    assert lines[0] == f"<!-- bgagent:task-id={TASK} -->"
    assert lines[1] == f"### bgagent — {status.value}"
    rows = table_rows(body)
    assert rows["Status"] == f"**{status.value}**"
    assert rows["Task"] == f"`{TASK}`"
    assert rows["Repo"] == "`acme/widgets`"
    assert rows["Turn"] == "0/50"
    if status.terminal:
        assert rows["Duration"] == "3m 05s"
    if status in (Status.FAILED, Status.TIMED_OUT):
        assert rows["Error"] == "`X: boom`"
    else:
        assert "Error" not in rows


def test_running_task_shows_last_event_cost_turn_and_pr_link() -> None:
    body = render_comment(
        state(
            status=Status.RUNNING,
            started_at=T0,
            turn=4,
            cost_usd=0.123456,
            max_budget_usd=5.0,
            pr_number_opened=12,
            pr_url="https://github.com/acme/widgets/pull/12",
            last_event_type="agent_turn",
            last_event_at=T0 + timedelta(seconds=30),
        )
    )
    rows = table_rows(body)
    assert rows["Last event"] == "agent\\_turn @ 2025-03-01 12:00:30 UTC"
    assert rows["Cost"] == "$0.1235 of $5.00 budget"
    assert rows["Turn"] == "4/50"
    assert rows["Pull request"] == "[#12](https://github.com/acme/widgets/pull/12)"
    assert rows["Duration"] == "running since 2025-03-01 12:00:00 UTC"


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "ftp://example.com/x",
        "https://example.com/a b",
        "https://example.com/a)(evil",
        "https://example.com/a|b",
        "https://example.com/a]b",
        'https://example.com/"x',
        "https://example.com/<script>",
        "https://example.com/`x`",
        "https://example.com/\nx",
    ],
)
def test_unsafe_pr_urls_are_never_links(url: str) -> None:
    assert safe_url(url) is None
    body = render_comment(state(status=Status.RUNNING, pr_number_opened=3, pr_url=url))
    cell = table_rows(body)["Pull request"]
    assert "](" not in cell
    assert cell.startswith("#3 `")
    assert "\n" not in cell


def test_safe_urls_pass() -> None:
    assert safe_url("https://github.com/a/b/pull/1") == "https://github.com/a/b/pull/1"
    assert safe_url("http://127.0.0.1:9/a/b/pull/1") == "http://127.0.0.1:9/a/b/pull/1"


def test_cells_escape_pipes_newlines_and_backticks() -> None:
    nasty = "line1\nline2 | col `code` <b>@octocat [x](http://e)"
    code = code_cell(nasty)
    assert "\n" not in code
    assert code.count("`") == 2  # only the span's own delimiters
    assert "\\|" in code
    text = text_cell(nasty)
    assert "\n" not in text
    assert "\\|" in text
    assert "\\`" in text
    assert "\\<b\\>" in text
    assert "\\[x\\]\\(http://e\\)" in text
    assert "@octocat" not in text  # no mention pings


def test_failed_task_error_is_escaped_inside_the_table() -> None:
    body = render_comment(
        state(
            status=Status.FAILED,
            completed_at=T0 + timedelta(seconds=2),
            error_code="TESTS_FAILED",
            error_message="2 failed\n| x | y |\n`rm -rf /`",
        )
    )
    rows = table_rows(body)
    assert rows["Error"].startswith("`TESTS_FAILED: 2 failed \\| x \\| y \\|")
    table = [line for line in body.splitlines() if line.startswith("|")]
    assert all(len(re.split(r"(?<!\\)\|", line)) == 4 for line in table)  # two cells on every row
    assert len(table) == len(rows) + 2


GH_TOKEN = "ghp_" + "A1b2C3d4E5f6" * 3


def test_secrets_in_error_messages_are_redacted() -> None:
    message = f"push failed: https://x:{GH_TOKEN}@github.com/a/b and Authorization: Bearer abc123"
    body = render_comment(
        state(status=Status.FAILED, completed_at=T0, error_code="GIT_ERROR", error_message=message)
    )
    assert GH_TOKEN not in body
    assert "abc123" not in body
    assert "REDACTED" in table_rows(body)["Error"]


@pytest.mark.parametrize("cell", [code_cell, text_cell])
def test_every_cell_is_redacted(cell: Callable[[str], str]) -> None:
    out = cell(f"token {GH_TOKEN} and PASSWORD=hunter2")
    assert GH_TOKEN not in out
    assert "hunter2" not in out


def test_a_pr_url_with_credentials_is_no_link_and_is_redacted() -> None:
    url = "https://bot:s3cret@github.com/a/b/pull/1"
    assert safe_url(url) is None
    body = render_comment(state(status=Status.COMPLETED, completed_at=T0, pr_number_opened=1, pr_url=url))
    cell = table_rows(body)["Pull request"]
    assert "](" not in cell
    assert "s3cret" not in body


def test_cancelled_task_shows_reason() -> None:
    body = render_comment(
        state(status=Status.CANCELLED, completed_at=T0, error_code="CANCELLED", error_message="by alice")
    )
    assert table_rows(body)["Reason"] == "`CANCELLED: by alice`"


def test_body_is_capped() -> None:
    huge = "x" * 200_000
    failed = state(status=Status.FAILED, completed_at=T0, error_code="E", error_message=huge)
    body = render_comment(msgspec.structs.replace(failed, repo="a/" + "b" * 999))
    assert len(body) <= MAX_BODY_CHARS
    assert table_rows(body)["Error"].endswith("…`")


def test_marker_cannot_close_the_html_comment() -> None:
    assert marker("abc-->evil") == "<!-- bgagent:task-id=abcevil -->"


def test_target_prefers_pr_then_issue_and_rejects_bad_repos() -> None:
    assert target_of(state(pr_number=5, issue_number=7)) == ("acme/widgets", 5)
    assert target_of(state()) == ("acme/widgets", 7)
    assert target_of(state(issue_number=None)) is None
    assert target_of(state(repo="not-a-repo")) is None
    assert target_of(state(repo="a/b/c")) is None
    assert target_of(state(repo="../etc")) is None


def test_format_duration() -> None:
    assert format_duration(None) == "—"
    assert format_duration(4.25) == "4.2s"
    assert format_duration(65) == "1m 05s"
    assert format_duration(3723) == "1h 02m 03s"
