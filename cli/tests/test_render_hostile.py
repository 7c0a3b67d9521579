"""Agent and user text printed by the CLI cannot drive the terminal."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from bgagent_cli.render import Printer, printable
from bgagent_contracts import CancelRequested, Recorded, TaskSubmitted, ToolResult, fold
from bgagent_contracts.views import event_view, task_view

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TASK = "01J00000000000000000000000"
NASTY = "ok\x1b]0;pwned\x07\x1b[2J\rhidden\x00\x9b31m"


def _escapes_in(text: str) -> list[str]:
    return [ch for ch in text if (ord(ch) < 0x20 and ch != "\n") or 0x7F <= ord(ch) <= 0x9F]


def test_printable_replaces_every_control_character() -> None:
    assert printable(NASTY) == "ok\ufffd]0;pwned\ufffd\ufffd[2J\ufffdhidden\ufffd\ufffd31m"
    assert printable("tab\tand\nnewline stay") == "tab\tand\nnewline stay"


def test_event_lines_carry_no_escape_sequences_from_event_text() -> None:
    out = io.StringIO()
    printer = Printer(json_output=False, out=out, err=io.StringIO())
    events = [
        ToolResult(
            task_id=TASK,
            event_id="e2",
            ts=T0,
            actor="runner",
            attempt=1,
            turn=1,
            tool_use_id="t",
            tool_name="bash",
            is_error=False,
            output_preview=NASTY,
        ),
        CancelRequested(
            task_id=TASK, event_id="e3", ts=T0, actor="admission", requested_by="u", reason=NASTY
        ),
    ]
    for seq, event in enumerate(events, 1):
        printer.event(event_view(Recorded(seq=seq, subject="s", event=event)))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert all(_escapes_in(line) == [] for line in lines)


def test_status_snapshot_carries_no_escape_sequences_from_task_text() -> None:
    submitted = TaskSubmitted(
        task_id=TASK, event_id="e1", ts=T0, actor="admission", user_id="u", repo="a/b", description=NASTY
    )
    state = fold([submitted])
    assert state is not None
    out = io.StringIO()
    Printer(json_output=False, out=out, err=io.StringIO()).task(task_view(state))
    assert _escapes_in(out.getvalue()) == []


def test_notes_on_stderr_are_printable_too() -> None:
    err = io.StringIO()
    Printer(json_output=False, out=io.StringIO(), err=err).note(f"warning: {NASTY}")
    assert _escapes_in(err.getvalue()) == []
