"""Runner logs are redacted: message arguments and tracebacks."""

from __future__ import annotations

import io
import logging

from bgagent_runner.logs import RedactingFilter

TOKEN = "ghp_" + "A1b2" * 9
CONFIGURED = "s3cr3t-value-from-settings"


def _logger() -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter((CONFIGURED,)))
    log = logging.getLogger(f"test-redaction-{id(out)}")
    log.propagate = False
    log.addHandler(handler)
    return log, out


def test_arguments_and_configured_secrets_are_redacted() -> None:
    log, out = _logger()
    log.warning("push to https://x-access-token:%s@github.com/a/b failed; key %s", TOKEN, CONFIGURED)
    text = out.getvalue()
    assert TOKEN not in text
    assert CONFIGURED not in text
    assert "push to https://" in text


def test_tracebacks_are_redacted() -> None:
    log, out = _logger()
    try:
        raise RuntimeError(f"git said: remote https://u:{TOKEN}@h/r rejected")
    except RuntimeError:
        log.exception("task failed")
    text = out.getvalue()
    assert "Traceback" in text
    assert "RuntimeError" in text
    assert TOKEN not in text
