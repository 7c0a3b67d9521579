"""What the CLI prints: NDJSON with ``--output json``, readable text otherwise."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Callable
from datetime import UTC, datetime
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


_ANSI = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC: titles, hyperlinks
    r"|\x1b[PX^_][^\x1b\x9c]*(?:\x1b\\|\x9c)?"  # DCS, SOS, PM, APC strings
    r"|\x1b[@-Z\\-_ -/]*[0-~]?"  # any other escape
)
_STRIP = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def strip_control(value: Any) -> str:
    """Text with ANSI escape sequences and control characters removed (not replaced): a tool input
    preview shown as the user will approve it. Newlines and tabs become spaces; bidi overrides go."""
    text = _ANSI.sub("", str(value))
    return _STRIP.sub(lambda m: " " if m.group() in "\n\t\r" else "", text)


def approve_command(task_id: str, request_id: str) -> str:
    return f"bgagent approve {shlex.quote(printable(task_id))} {shlex.quote(printable(request_id))}"


def deny_command(task_id: str, request_id: str) -> str:
    return (
        f"bgagent deny {shlex.quote(printable(task_id))} {shlex.quote(printable(request_id))}"
        " --reason '<why>'"
    )


def time_left(deadline: str | None, now: datetime | None = None) -> str:
    """``4m 59s``, ``expired`` or ``?`` for an ISO deadline."""
    if not deadline:
        return "?"
    try:
        when = datetime.fromisoformat(str(deadline).replace("Z", "+00:00"))
    except ValueError:
        return "?"
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    left = int((when - (now or datetime.now(UTC))).total_seconds())
    if left <= 0:
        return "expired"
    minutes, seconds = divmod(left, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s"


def _clock(ts: Any) -> str:
    """``09:36:00 UTC`` of an ISO timestamp (the text itself when it is not one)."""
    text = str(ts or "")
    return f"{text[11:19]} UTC" if len(text) >= 19 and text[10] == "T" else printable(text) or "?"


def _severity(value: Any) -> str:
    return f"[{str(value).upper()}] " if value else ""


def _rules(e: dict[str, Any]) -> str:
    ids = e.get("rule_ids") or ([e["rule_id"]] if e.get("rule_id") else [])
    return ", ".join(str(i) for i in ids) or "?"


def _approval_requested(e: dict[str, Any]) -> str:
    preview = _short(strip_control(e.get("input_preview") or ""), 120)
    return (
        f"{_severity(e.get('severity'))}{e.get('tool_name')}: {preview} "
        f"(rule {_rules(e)}; decide by {_clock(e.get('deadline'))})"
    )


def _approval_decided(e: dict[str, Any]) -> str:
    verb = "approved" if e.get("decision") == "approve" else "denied"
    scope = f" (scope {e['scope']})" if e.get("scope") else ""
    reason = _opt(": ", _short(e.get("reason") or "", 100))
    return f"request {e.get('request_id')} {verb} by {e.get('decided_by')}{scope}{reason}"


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
    "approval_requested": _approval_requested,
    "approval_decided": _approval_decided,
    "approval_expired": lambda e: f"request {e.get('request_id')}: no decision in time; the call is denied",
    "policy_denied": lambda e: (
        f"{e.get('tool_name')} blocked by rule {e.get('rule_id')}: "
        f"{_short(strip_control(e.get('reason') or ''), 100)}"
    ),
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
        if t == "approval_requested":
            style = "magenta"
        elif t in ("policy_denied", "approval_expired"):
            style = "yellow"
        seq = f"#{view['seq']:<5}"
        kind = self._style(f"{t:<18}", style)
        self.line(f"{self._style(ts, 'dim')} {self._style(seq, 'dim')} {kind} {event_summary(view)}")
        if t == "approval_requested":
            self.approval_prompt(view["event"], indent=" " * 16)

    def approval_prompt(self, e: dict[str, Any], *, indent: str = "") -> None:
        """The commands that decide an approval request, ready to copy, and its deadline."""
        task_id, request_id = str(e.get("task_id", "")), str(e.get("request_id", ""))
        deadline = e.get("deadline")
        left = time_left(deadline)
        when = f"{_clock(deadline)} ({left} left)" if left not in ("?", "expired") else _clock(deadline)
        self.line(f"{indent}{self._style('approve:', 'bold')} {approve_command(task_id, request_id)}")
        self.line(f"{indent}{self._style('deny:', 'bold')}    {deny_command(task_id, request_id)}")
        self.line(f"{indent}deadline: {when}; no decision by then denies the call")

    def status(self, status: str) -> str:
        return self._style(status, _STATUS_STYLE.get(status))

    def task(self, task: dict[str, Any], approval: dict[str, Any] | None = None) -> None:
        """The status snapshot of one task; ``approval``: the request it waits on (``GET /v1/approvals``)."""
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
        if task.get("pending_approval"):
            self._pending_rows(task, approval)

    def _pending_rows(self, task: dict[str, Any], approval: dict[str, Any] | None) -> None:
        request_id = str(task["pending_approval"])
        self.line(f"{'Approval:':<16}{self._style('waiting for your decision', 'magenta')}")
        rows: list[tuple[str, Any]] = [("  Request", request_id)]
        if approval is not None:
            rows += [
                ("  Tool", approval.get("tool_name")),
                ("  Input", _short(strip_control(approval.get("input_preview") or ""), 200)),
                ("  Rule", f"{_severity(approval.get('severity'))}{_rules(approval)}"),
                (
                    "  Deadline",
                    f"{_clock(approval.get('deadline'))} ({time_left(approval.get('deadline'))} left)",
                ),
            ]
        for label, value in rows:
            if value:
                self.line(f"{label + ':':<16}{printable(value)}")
        self.approval_prompt({"task_id": task["task_id"], "request_id": request_id}, indent=" " * 16)

    def approval_row_header(self) -> None:
        if not self.json:
            self.line(f"{'TASK ID':<27} {'REQUEST ID':<27} {'TOOL':<12} {'SEVERITY':<9} {'LEFT':<9} PREVIEW")

    def approval_row(self, approval: dict[str, Any]) -> None:
        if self.json:
            self.obj(approval)
            return
        preview = printable(_short(strip_control(approval.get("input_preview") or ""), 60))
        tool = printable(_short(approval.get("tool_name") or "", 12))
        severity = printable(approval.get("severity") or "-")
        self.line(
            f"{printable(approval['task_id']):<27} {printable(approval['request_id']):<27} {tool:<12} "
            f"{severity:<9} {time_left(approval.get('deadline')):<9} {preview}"
        )

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
