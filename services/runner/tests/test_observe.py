"""Runner telemetry: JSON logs carry the task id and stay redacted; the queue depth gauge."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from types import SimpleNamespace

from opentelemetry.metrics import CallbackOptions

from bgagent_eventstore.telemetry import JsonFormatter, bind_task_id
from bgagent_runner import observe
from bgagent_runner.logs import RedactingFilter

TOKEN = "ghp_" + "A1b2" * 9
CONFIGURED = "s3cr3t-value-from-settings"


def test_json_logs_are_redacted_like_text_logs() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("runner"))
    handler.addFilter(RedactingFilter((CONFIGURED,)))
    log = logging.getLogger(f"test-json-redaction-{id(out)}")
    log.propagate = False
    log.addHandler(handler)
    bind_task_id("01JRUNNERTASK")
    try:
        log.warning("push to https://x-access-token:%s@github.com/a/b failed; key %s", TOKEN, CONFIGURED)
        try:
            raise RuntimeError(f"git said: remote https://u:{TOKEN}@h/r rejected")
        except RuntimeError:
            log.exception("task failed")
    finally:
        bind_task_id(None)
    text = out.getvalue()
    assert TOKEN not in text
    assert CONFIGURED not in text
    pushed, failed = (json.loads(line) for line in text.splitlines())
    assert pushed["message"].startswith("push to https://")
    assert pushed["task_id"] == "01JRUNNERTASK"
    assert "RuntimeError" in failed["exception"]


async def test_the_queue_depth_gauge_reads_what_the_poller_last_saw() -> None:
    class FakeJetStream:
        pending = 7

        async def consumer_info(self, stream: str, durable: str) -> SimpleNamespace:
            return SimpleNamespace(num_pending=self.pending)

    js = FakeJetStream()
    poller = asyncio.create_task(observe.poll_queue_depth(js, "S", "work", interval_s=0.01))  # type: ignore[arg-type]
    try:
        await asyncio.sleep(0.05)
        assert [(o.value, o.attributes) for o in observe._observe_depth(CallbackOptions())] == [
            (7, {"consumer": "work"})
        ]
        js.pending = 2
        await asyncio.sleep(0.05)
        assert [o.value for o in observe._observe_depth(CallbackOptions())] == [2]
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
    assert list(observe._observe_depth(CallbackOptions())) == []
