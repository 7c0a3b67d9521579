"""Text that leaves the platform (commit messages, pull request titles and bodies, reviews): pure helpers.

Whatever an agent or a user writes must still make a valid commit message and pull request:
``clean`` drops NUL (git refuses it in ``-m`` and Python refuses it in argv) and every other control
character except newline and tab, lone surrogates (not encodable as UTF-8) and bidirectional
override characters (they make text display differently from what it is); ``title_line`` makes one
bounded line cut at a word boundary; ``bounded`` caps a body. Redact first, then shape: a secret cut
in half by a length limit would no longer match its pattern.
"""

from __future__ import annotations

import re

__all__ = [
    "BODY_MAX",
    "COMMIT_SUBJECT_MAX",
    "ELLIPSIS",
    "PR_TITLE_MAX",
    "TRUNCATED_NOTE",
    "bounded",
    "clean",
    "cut",
    "title_line",
]

PR_TITLE_MAX = 256
COMMIT_SUBJECT_MAX = 72
BODY_MAX = 60_000
"""Pull request and review bodies: below GitHub's 65,536-character limit, with room to spare for
characters GitHub may count twice (the fanout comment renderer keeps the same margin)."""
ELLIPSIS = "…"
TRUNCATED_NOTE = "\n\n…(truncated)"

_NEWLINES = re.compile(r"\r\n?|[\u2028\u2029\x85]")
_UNWANTED = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]+"
)
_SPACES = re.compile(r"\s+")
_WORD_BACKOFF = 0.5
"""A cut moves back to the last space only if that keeps at least this share of the text."""


def clean(text: str) -> str:
    """Newlines normalised to ``\\n``; control characters (but ``\\n`` and ``\\t``), lone surrogates
    and bidirectional overrides removed."""
    return _UNWANTED.sub("", _NEWLINES.sub("\n", text))


def cut(text: str, limit: int, marker: str = ELLIPSIS) -> str:
    """``text`` if it fits in ``limit`` characters, else cut at a word boundary with ``marker`` added
    (the result, marker included, is at most ``limit`` characters)."""
    if len(text) <= limit:
        return text
    room = max(0, limit - len(marker))
    head = text[:room]
    if room < len(text) and not text[room].isspace():
        space = max(head.rfind(" "), head.rfind("\n"), head.rfind("\t"))
        if space >= room * _WORD_BACKOFF:
            head = head[:space]
    return head.rstrip() + marker[: max(0, limit)]


def title_line(text: str, limit: int = PR_TITLE_MAX) -> str:
    """One clean line of at most ``limit`` characters: whitespace runs (newlines too) become one
    space, cut at a word boundary with ``…``."""
    flat = _SPACES.sub(" ", clean(text)).strip()
    return cut(flat, limit)


def bounded(text: str, limit: int = BODY_MAX) -> str:
    """Clean text of at most ``limit`` characters; a longer one is cut and ends with a note."""
    return cut(clean(text), limit, TRUNCATED_NOTE)
