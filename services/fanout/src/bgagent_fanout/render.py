"""The comment body, rendered from a folded task state (pure: no I/O, no clock).

Everything that comes from a task (repo, messages, URLs) is treated as untrusted: table cells
are escaped, free text goes into code spans (no Markdown, no HTML, no @-mentions), and the
pull request becomes a link only when its URL is a plain http(s) URL. As defence in depth (the
runner redacts what it writes), every free text and URL is redacted again before it is rendered
(``bgagent_contracts.redact``: known secret shapes and credential contexts).
"""

from __future__ import annotations

import re
from datetime import datetime

from bgagent_contracts import OpenApproval, Status, TaskState
from bgagent_contracts.redact import redact

MAX_BODY_CHARS = 60_000
MAX_CELL_CHARS = 1_000
TRUNCATED = "\n\n_(comment truncated)_"

_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_UNSAFE_URL_CHARS = re.compile(r"[\s)|\]\"<>`]")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def marker(task_id: str) -> str:
    """The hidden line that identifies a task's comment on GitHub."""
    return f"<!-- bgagent:task-id={_strip_comment_breakers(task_id)} -->"


def target_of(state: TaskState) -> tuple[str, int] | None:
    """``(owner/name, number)`` of the issue or PR the task came from; None when not routable."""
    if not _REPO.match(state.repo or "") or ".." in state.repo:
        return None
    number = state.pr_number or state.issue_number
    if number is None or number <= 0:
        return None
    return state.repo, number


def safe_url(url: str | None) -> str | None:
    """The URL if it is a plain http(s) URL that cannot break out of a Markdown link, else None."""
    if not url or not url.lower().startswith(("https://", "http://")):
        return None
    if redact(url) != url:
        return None  # credentials in the URL: never a link
    if _UNSAFE_URL_CHARS.search(url) or len(url) > 2000:
        return None
    return url


def text_cell(text: str, limit: int = MAX_CELL_CHARS) -> str:
    """Plain text for a table cell: redacted, one line, Markdown specials escaped, mentions defused."""
    flat = " ".join(redact(text).split())
    if len(flat) > limit:
        flat = flat[:limit] + "…"
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", flat)
    return escaped.replace("@", "@\u200b")


def code_cell(text: str, limit: int = MAX_CELL_CHARS) -> str:
    """Text as an inline code span inside a table cell (redacted, pipes escaped, backticks replaced)."""
    flat = " ".join(redact(text).split())
    if len(flat) > limit:
        flat = flat[:limit] + "…"
    flat = flat.replace("`", "'").replace("|", "\\|")
    return f"`{flat}`" if flat else "—"


def code_span(text: str, limit: int = MAX_CELL_CHARS) -> str:
    """Text as an inline code span for a table cell that keeps its backticks: redacted, ANSI and
    control characters removed, one line, the span fenced by more backticks than any run inside
    (GitHub's rule), pipes escaped."""
    flat = " ".join(_CONTROL.sub(" ", _ANSI.sub("", redact(text))).split())
    if len(flat) > limit:
        flat = flat[:limit] + "…"
    if not flat:
        return "—"
    longest = max((len(run) for run in re.findall(r"`+", flat)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat.replace('|', chr(92) + '|')}{pad}{fence}"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s"


def format_ts(ts: datetime | None) -> str:
    if ts is None:
        return "—"
    return ts.strftime("%Y-%m-%d %H:%M:%S UTC") if ts.utcoffset() is not None else ts.isoformat()


def _strip_comment_breakers(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", text)


def _pull_request_cell(state: TaskState) -> str | None:
    number = state.pr_number_opened
    url = state.pr_url
    if number is None and url is None:
        return None
    label = f"#{number}" if number is not None else "pull request"
    link = safe_url(url)
    if link is not None:
        return f"[{label}]({link})"
    if url:
        return f"{label} {code_cell(url, 300)}"
    return label


def _duration_cell(state: TaskState) -> str:
    if state.duration_s is not None:
        return format_duration(state.duration_s)
    if state.status is Status.SUBMITTED:
        return "queued"
    return f"running since {format_ts(state.started_at)}" if state.started_at else "running"


def _cost_cell(state: TaskState) -> str:
    cost = f"${state.cost_usd:.4f}"
    if state.max_budget_usd is not None:
        cost += f" of ${state.max_budget_usd:.2f} budget"
    return cost


def _waiting_on(state: TaskState) -> OpenApproval | None:
    if state.status is not Status.AWAITING_APPROVAL or state.pending_approval is None:
        return None
    return next((a for a in state.open_approvals if a.request_id == state.pending_approval), None)


def _approval_section(state: TaskState, request: OpenApproval) -> list[str]:
    """The request the task waits on, and the commands that decide it (ids only if they are ULIDs:
    a command to copy must never carry text from the event)."""
    severity = f" ({text_cell(request.severity, 20)})" if request.severity else ""
    rules = ", ".join(text_cell(r, 128) for r in request.rule_ids) or "—"
    rows = [
        ("Tool", code_span(request.tool_name, 64)),
        ("Input", code_span(request.input_preview, 500)),
        ("Rule", rules + severity),
        ("Deadline", f"{format_ts(request.deadline)}; no decision by then denies the call"),
    ]
    if _ULID.match(state.task_id) and _ULID.match(request.request_id):
        ids = f"{state.task_id} {request.request_id}"
        rows += [
            ("Approve", f"`bgagent approve {ids}`"),
            ("Deny", f"`bgagent deny {ids} --reason '<why>'`"),
        ]
    return [
        "#### Approval needed",
        "",
        "The agent waits for a decision on this tool call.",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
    ]


def render_comment(state: TaskState) -> str:
    """The whole comment body for a task; at most MAX_BODY_CHARS characters."""
    status = state.status.value
    rows: list[tuple[str, str]] = [
        ("Task", code_cell(state.task_id, 64)),
        ("Repo", code_cell(state.repo, 200)),
        ("Status", f"**{status}**"),
    ]
    if state.last_event_type:
        last = f"{text_cell(state.last_event_type, 64)} @ {format_ts(state.last_event_at)}"
        rows.append(("Last event", last))
    pr = _pull_request_cell(state)
    if pr is not None:
        rows.append(("Pull request", pr))
    rows.append(("Duration", _duration_cell(state)))
    rows.append(("Cost", _cost_cell(state)))
    rows.append(("Turn", f"{state.turn}/{state.max_turns}"))
    if state.status is Status.COMPLETED and state.result:
        rows.append(("Result", code_cell(state.result, 200)))
    if state.status in (Status.FAILED, Status.TIMED_OUT, Status.CANCELLED) and (
        state.error_code or state.error_message
    ):
        detail = state.error_message or ""
        code = state.error_code or "ERROR"
        label = "Reason" if state.status is Status.CANCELLED else "Error"
        rows.append((label, code_cell(f"{code}: {detail}")))
    lines = [
        marker(state.task_id),
        f"### bgagent — {status}",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
    ]
    request = _waiting_on(state)
    if request is not None:
        lines += _approval_section(state, request)
    body = "\n".join(lines)
    if len(body) > MAX_BODY_CHARS:
        body = body[: MAX_BODY_CHARS - len(TRUNCATED)] + TRUNCATED
    return body
