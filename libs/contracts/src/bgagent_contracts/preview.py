"""Previews of model text and tool I/O, with secrets redacted first."""

from __future__ import annotations

import re

DEFAULT_PREVIEW_CHARS = 200
TRACE_PREVIEW_CHARS = 4096

_SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    # No word boundaries: a token glued to an identifier (``TOKEN_ghp_…``, ``ghp_…_old``) must not leak.
    ("GITHUB_TOKEN", re.compile(r"(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})")),
    ("ANTHROPIC_KEY", re.compile(r"\bsk-ant-[A-Za-z0-9_-]{10,}")),
    ("AWS_ACCESS_KEY", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    (
        "PRIVATE_KEY",
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"),
    ),
    ("BEARER", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{20,}")),
    ("URL_CREDENTIALS", re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)")),
)


def redact(text: str, extra_secrets: tuple[str, ...] = ()) -> str:
    """Replace known secret shapes, and any exact secret given, with ``[REDACTED-<KIND>]``."""
    for secret in extra_secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[REDACTED-SECRET]")
    for label, pattern in _SECRET_PATTERNS:
        text = pattern.sub(f"[REDACTED-{label}]", text)
    return text


def preview(text: str, limit: int = DEFAULT_PREVIEW_CHARS, extra_secrets: tuple[str, ...] = ()) -> str:
    """Redact, then cut to ``limit`` characters with a trailing ``...`` when cut."""
    clean = redact(text, extra_secrets)
    if len(clean) <= limit:
        return clean
    return clean[:limit] + "..."


def preview_limit(trace: bool) -> int:
    """Preview size for a task: larger when the task asked for a trace."""
    return TRACE_PREVIEW_CHARS if trace else DEFAULT_PREVIEW_CHARS
