"""Runner logs pass through redaction: messages, arguments and tracebacks alike.

Call sites already redact what they know is sensitive; this filter is the net under them
(an exception message that quotes a URL with a token, a traceback of a failed push).
"""

from __future__ import annotations

import logging

from bgagent_contracts.redact import redact


class RedactingFilter(logging.Filter):
    """Rewrites each record with its message and traceback redacted (never drops a record)."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = secrets
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


def install_redaction(secrets: tuple[str, ...] = ()) -> None:
    """Add the filter to every handler of the root logger (after ``logging.basicConfig``)."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter(secrets))
