"""Text for commits, pull requests and reviews: control characters, one-line titles, bounded bodies."""

from __future__ import annotations

import pytest

from bgagent_contracts.text import (
    BODY_MAX,
    ELLIPSIS,
    PR_TITLE_MAX,
    TRUNCATED_NOTE,
    bounded,
    clean,
    cut,
    title_line,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a\x00b", "ab"),
        ("tab\tand\nnewline", "tab\tand\nnewline"),
        ("crlf\r\nline\rcr", "crlf\nline\ncr"),
        ("bell\x07 esc\x1b[31mred\x1b[0m del\x7f", "bell esc[31mred[0m del"),
        ("c1\x9b and nel\x85end", "c1 and nel\nend"),
        ("lone \ud800 surrogate", "lone  surrogate"),
        ("bidi \u202eevil\u202c and \u2066isolate\u2069", "bidi evil and isolate"),
        ("line\u2028separator", "line\nseparator"),
        ("émoji 🎉 and 中文", "émoji 🎉 and 中文"),
    ],
)
def test_clean_keeps_newlines_and_tabs_and_drops_other_controls(raw: str, expected: str) -> None:
    out = clean(raw)
    assert out == expected
    out.encode("utf-8")  # always encodable


def test_cut_leaves_short_text_alone_and_cuts_long_text_at_a_word() -> None:
    assert cut("short", 10) == "short"
    assert cut("exactly ten", 11) == "exactly ten"
    out = cut("the quick brown fox jumps", 16)
    assert out == "the quick brown" + ELLIPSIS
    assert len(out) <= 16


def test_cut_falls_back_to_a_hard_cut_for_one_long_word() -> None:
    out = cut("x" * 300, 256)
    assert out == "x" * 255 + ELLIPSIS
    assert len(out) == 256


def test_cut_at_a_space_keeps_the_whole_last_word() -> None:
    assert cut("alpha beta gamma", 11) == "alpha beta" + ELLIPSIS


def test_title_line_is_one_clean_line_of_at_most_the_limit() -> None:
    title = title_line("Fix\x00 the\nlogin\r\n\tpage   now")
    assert title == "Fix the login page now"
    long = title_line("word " * 100)
    assert "\n" not in long
    assert len(long) <= PR_TITLE_MAX
    assert long.endswith("word" + ELLIPSIS)


def test_title_line_of_nothing_is_empty() -> None:
    assert title_line("\x00\x01 \n\t") == ""


def test_bounded_keeps_short_bodies_and_cuts_long_ones_with_a_note() -> None:
    assert bounded("para\n\npara\x00") == "para\n\npara"
    body = bounded("line of text\n" * 10_000)
    assert len(body) <= BODY_MAX
    assert body.endswith(TRUNCATED_NOTE)
    assert len(bounded("y" * 100, 50)) == 50
