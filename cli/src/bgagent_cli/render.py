"""What the CLI prints: NDJSON with ``--output json``, readable text otherwise."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any, TextIO

_STATUS_STYLE = {
    "COMPLETED": "green",
    "FAILED": "red",
    "CANCELLED": "yellow",
    "TIMED_OUT": "red",
    "RUNNING": "cyan",
    "AWAITING_APPROVAL": "magenta",
}


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(value: Any) -> str:
    """Text that is safe on a terminal: control characters (ESC, BEL, CR, …) become U+FFFD.

    Event text comes from the agent and from users: an escape sequence in it must not move the
    cursor, retitle the window or hide lines when the CLI prints it.
    """
    return _CONTROL.sub("\ufffd", str(value))


def _short(value: Any, limit: int = 100) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _opt(prefix: str, value: Any) -> str:
    return f"{prefix}{value}" if value else ""


def _submitted(e: dict[str, Any]) -> str:
    what = e.get("description") or (f"issue #{e['issue_number']}" if e.get("issue_number") else "")
    return f"{e['task_type']} on {e['repo']}: {_short(what, 80)}"


def _turn(e: dict[str, Any]) -> str:
    calls = f" [{e['tool_calls']} tool call(s)]" if e.get("tool_calls") else ""
    return f"turn {e['turn']}: {_short(e.get('text_preview') or '', 90)}{calls}"


def _tool_result(e: dict[str, Any]) -> str:
    mark = "error" if e["is_error"] else "ok"
    return f"{e['tool_name']} {mark} ({e.get('duration_ms', 0)} ms): {_short(e['output_preview'], 80)}"


def _completed(e: dict[str, Any]) -> str:
    if e["result"] == "no_changes":
        return "no_changes: the agent changed nothing, nothing was pushed"
    where = e.get("pr_url") or (f"branch {e['branch']}" if e.get("branch") else "")
    return f"{e['result']}{_opt(': ', where)}"


_SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "task_submitted": _submitted,
    "task_started": lambda e: f"attempt {e['attempt']} on runner {e['runner_id']}",
    "workspace_ready": lambda e: f"branch {e['branch']} from {e.get('base_branch') or '?'}",
    "milestone": lambda e: f"{e['name']}{_opt(': ', _short(e.get('detail') or ''))}",
    "agent_turn": _turn,
    "tool_called": lambda e: f"{e['tool_name']}: {_short(e['input_preview'], 90)}",
    "tool_result": _tool_result,
    "cost_updated": lambda e: (
        f"${e['total_cost_usd']:.4f} total ({e['input_tokens']} in / {e['output_tokens']} out)"
    ),
    "nudge_requested": lambda e: f"from {e['requested_by']}: {_short(e['message'], 80)}",
    "nudge_acknowledged": lambda e: f"{len(e['nudge_ids'])} nudge(s) given to the agent at turn {e['turn']}",
    "cancel_requested": lambda e: f"by {e['requested_by']}{_opt(': ', e.get('reason'))}",
    "agent_finished": lambda e: f"after {e['turns']} turn(s) ({e['stop_reason']})",
    "pr_opened": lambda e: f"#{e['pr_number']} {e['pr_url']}",
    "pr_updated": lambda e: f"#{e['pr_number']} {e['pr_url']}",
    "task_completed": _completed,
    "runner_lost": lambda e: f"attempt {e['attempt']}: {_short(e.get('detail') or 'runner lost', 120)}",
    "task_requeued": lambda e: f"after attempt {e['attempt']}: {_short(e.get('reason') or '', 120)}",
    "task_failed": lambda e: f"{e['code']}: {_short(e['message'], 120)}",
    "task_cancelled": lambda e: f"by {e['cancelled_by']}{_opt(': ', e.get('reason'))}",
    "task_timed_out": lambda e: f"{e['limit']}: {e['message']}",
}
_ENVELOPE = frozenset({"task_id", "event_id", "ts", "actor", "type", "attempt"})


def event_summary(view: dict[str, Any]) -> str:
    """One line describing an event view (``{"seq", "type", "event"}``)."""
    e = view["event"]
    fmt = _SUMMARIES.get(view["type"])
    if fmt is not None:
        return printable(" ".join(fmt(e).split()))
    return printable(_short(", ".join(f"{k}={v}" for k, v in e.items() if k not in _ENVELOPE), 120))


class Printer:
    """Writes results to stdout; diagnostics to stderr. Colour only on a TTY without NO_COLOR."""

    def __init__(self, json_output: bool, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.json = json_output
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.color = (not json_output) and self.out.isatty() and not os.environ.get("NO_COLOR")

    def _style(self, text: str, style: str | None) -> str:
        if not self.color or not style:
            return text
        codes = {"green": 32, "red": 31, "yellow": 33, "cyan": 36, "magenta": 35, "dim": 2, "bold": 1}
        return f"\x1b[{codes[style]}m{text}\x1b[0m"

    def obj(self, value: Any) -> None:
        """One JSON object per line."""
        self.out.write(json.dumps(value, separators=(",", ":"), default=str) + "\n")
        self.out.flush()

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        """A diagnostic for humans: stderr, never mixed into JSON output."""
        self.err.write(printable(text) + "\n")
        self.err.flush()

    def event(self, view: dict[str, Any]) -> None:
        if self.json:
            self.obj(view)
            return
        ts = str(view["event"].get("ts", ""))[11:19]
        t = printable(view["type"])
        style = (
            "red" if t in ("task_failed", "task_timed_out") else "green" if t == "task_completed" else None
        )
        seq = f"#{view['seq']:<5}"
        kind = self._style(f"{t:<18}", style)
        self.line(f"{self._style(ts, 'dim')} {self._style(seq, 'dim')} {kind} {event_summary(view)}")

    def status(self, status: str) -> str:
        return self._style(status, _STATUS_STYLE.get(status))

    def task(self, task: dict[str, Any]) -> None:
        """The status snapshot of one task."""
        if self.json:
            self.obj(task)
            return
        budget = f" / ${task['max_budget_usd']:.2f}" if task.get("max_budget_usd") else ""
        rows = [
            ("Task", task["task_id"]),
            ("Status", self.status(task["status"])),
            ("Repo", task["repo"]),
            ("Type", task["task_type"]),
            ("Channel", task.get("channel")),
            ("Description", _short(task.get("description") or "", 100) or None),
            ("Issue", f"#{task['issue_number']}" if task.get("issue_number") else None),
            ("PR", f"#{task['pr_number']}" if task.get("pr_number") else None),
            ("Turn", f"{task['turn']}/{task['max_turns']}"),
            ("Cost", f"${task['cost_usd']:.4f}{budget}"),
            ("Last milestone", task.get("last_milestone")),
            ("Current step", task.get("current_step")),
            (
                "Waiting since",
                f"{task['waiting_since']} (for a runner)" if task.get("waiting_since") else None,
            ),
            (
                "Attempt",
                f"{task['attempt']} ({task['lost_attempts']} lost)" if task.get("lost_attempts") else None,
            ),
            ("Queue position", task.get("queue_position")),
            ("Branch", task.get("branch")),
            ("Pull request", task.get("pr_url")),
            ("Result", task.get("result")),
            ("Reason", f"{task['error_code']}: {task['error_message']}" if task.get("error_code") else None),
            ("Duration", f"{task['duration_s']:.1f}s" if task.get("duration_s") is not None else None),
            ("Last event", f"{task.get('last_event_type')} @ {task.get('last_event_at')}"),
        ]
        for label, value in rows:
            if value is not None and value != "":
                shown = value if label == "Status" else printable(value)  # Status carries our colour codes
                self.line(f"{label + ':':<16}{shown}")

    def task_row_header(self) -> None:
        if not self.json:
            self.line(f"{'TASK ID':<27} {'STATUS':<18} {'REPO':<28} {'CREATED':<20} DESCRIPTION")

    def task_row(self, task: dict[str, Any]) -> None:
        if self.json:
            self.obj(task)
            return
        created = str(task.get("created_at", ""))[:19].replace("T", " ")
        desc = printable(_short(task.get("description") or "", 40))
        status = self.status(f"{task['status']:<18}")
        self.line(
            f"{task['task_id']:<27} {status} {printable(_short(task['repo'], 28)):<28} {created:<20} {desc}"
        )
