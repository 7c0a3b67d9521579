from __future__ import annotations

import io
import json
from datetime import UTC, datetime

from bgagent_cli.render import Printer, event_summary
from bgagent_cli.watch import exit_code_for
from bgagent_contracts import Recorded, Status, TaskSubmitted, ToolResult, fold
from bgagent_contracts.views import event_view, task_view

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TASK = "01J00000000000000000000000"


def _submitted() -> TaskSubmitted:
    return TaskSubmitted(
        task_id=TASK,
        event_id="e1",
        ts=T0,
        actor="admission",
        user_id="u",
        repo="a/b",
        description="fix the tests",
    )


def test_json_output_is_one_object_per_line() -> None:
    out = io.StringIO()
    printer = Printer(json_output=True, out=out, err=io.StringIO())
    view = event_view(Recorded(seq=7, subject="s", event=_submitted()))
    printer.event(view)
    printer.obj({"a": 1})
    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == [json.loads(json.dumps(view)), {"a": 1}]


def test_text_output_has_no_colour_when_not_a_tty() -> None:
    out = io.StringIO()
    Printer(json_output=False, out=out, err=io.StringIO()).event(
        event_view(Recorded(seq=3, subject="s", event=_submitted()))
    )
    text = out.getvalue()
    assert "\x1b[" not in text
    assert "#3" in text
    assert "task_submitted" in text
    assert "fix the tests" in text


def test_tool_result_summary_marks_errors() -> None:
    event = ToolResult(
        task_id=TASK,
        event_id="e",
        ts=T0,
        actor="runner",
        attempt=1,
        turn=1,
        tool_use_id="t",
        tool_name="bash",
        is_error=True,
        output_preview="boom",
        duration_ms=12,
    )
    line = event_summary(event_view(Recorded(seq=1, subject="s", event=event)))
    assert line == "bash error (12 ms): boom"


def test_status_snapshot_lists_the_key_fields() -> None:
    state = fold([_submitted()])
    assert state is not None
    out = io.StringIO()
    Printer(json_output=False, out=out, err=io.StringIO()).task(task_view(state))
    text = out.getvalue()
    for label in ("Task:", "Status:", "Repo:", "Turn:", "Cost:", "Last event:"):
        assert label in text
    assert "SUBMITTED" in text
    assert "0/100" in text


def test_watch_exit_codes() -> None:
    assert exit_code_for(Status.COMPLETED) == 0
    for status in (Status.FAILED, Status.CANCELLED, Status.TIMED_OUT):
        assert exit_code_for(status) == 1
