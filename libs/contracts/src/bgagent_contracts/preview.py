"""Previews of model text and tool I/O, with secrets redacted first.

``redact`` lives in ``bgagent_contracts.redact``; it is re-exported here for the existing imports.
"""

from __future__ import annotations

from .redact import redact

__all__ = ["DEFAULT_PREVIEW_CHARS", "TRACE_PREVIEW_CHARS", "preview", "preview_limit", "redact"]

DEFAULT_PREVIEW_CHARS = 200
TRACE_PREVIEW_CHARS = 4096


def preview(text: str, limit: int = DEFAULT_PREVIEW_CHARS, extra_secrets: tuple[str, ...] = ()) -> str:
    """Redact, then cut to ``limit`` characters with a trailing ``...`` when cut."""
    clean = redact(text, extra_secrets)
    if len(clean) <= limit:
        return clean
    return clean[:limit] + "..."


def preview_limit(trace: bool) -> int:
    """Preview size for a task: larger when the task asked for a trace."""
    return TRACE_PREVIEW_CHARS if trace else DEFAULT_PREVIEW_CHARS
