"""``bgagent policies list|test``: the tool-call policy rules, a dry run of one call, a replay of a task."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from bgagent_contracts.preview import DEFAULT_PREVIEW_CHARS, TRACE_PREVIEW_CHARS
from bgagent_policy import REPO_POLICY_DIR, PolicyDecision, PolicyEngine, PolicyLoadError

from .client import Api
from .errors import CliError
from .main import Output, OutputOpt, _run, _setup, app, resolve_repo
from .render import Printer, printable

policies_app = typer.Typer(
    help="Tool-call policy rules: list them, dry-run one call, replay a past task.", no_args_is_help=True
)
app.add_typer(policies_app, name="policies")

EDIT_TOOL = "str_replace_based_edit_tool"
EVENTS_PAGE = 1000
_TRUNCATED_LENGTHS = {DEFAULT_PREVIEW_CHARS + 3, TRACE_PREVIEW_CHARS + 3}
_JSON_STRING_FIELD = r'"{key}"\s*:\s*("(?:[^"\\]|\\.)*")'

PoliciesOpt = Annotated[
    Path | None,
    typer.Option(
        "--policies",
        help="A directory whose hard_deny.cedar / hard_gate.cedar are added to the starter set.",
        file_okay=False,
    ),
]


def load_engine(policies: Path | None = None, repo: str | None = None) -> PolicyEngine:
    """The starter set plus the rule files of ``--policies DIR`` or of a local repository's
    ``.bgagent/policies``; a set that does not load is a CLI error naming the file and rule."""
    if policies is not None and repo is not None:
        raise CliError("give --repo or --policies, not both")
    extra = policies
    if repo is not None:
        root = Path(resolve_repo(repo))
        if not root.is_absolute():
            raise CliError(
                f"--repo {repo!r}: policies are read from a local repository path",
                hint=f"give the path of a checkout (its rules live in {REPO_POLICY_DIR}/), or --policies DIR",
            )
        if not root.is_dir():
            raise CliError(f"--repo {repo!r}: {root} is not a directory")
        candidate = root / REPO_POLICY_DIR
        extra = candidate if candidate.is_dir() else None
    try:
        return PolicyEngine.load(extra)
    except PolicyLoadError as exc:
        raise CliError(f"the policies do not load: {exc}") from exc


def _decision_json(decision: PolicyDecision) -> dict[str, Any]:
    return {
        "outcome": str(decision.outcome),
        "rule_ids": list(decision.rule_ids),
        "reason": decision.reason,
        "severity": decision.severity,
        "timeout_s": decision.timeout_s,
        "category": decision.category,
    }


@policies_app.command("list")
def list_policies(
    repo: Annotated[
        str | None, typer.Option(help=f"A local repository path: add the rules in its {REPO_POLICY_DIR}/.")
    ] = None,
    policies: PoliciesOpt = None,
    output: OutputOpt = Output.text,
) -> None:
    """Every rule that applies: id, tier, severity, category, approval timeout and summary."""
    _, printer = _setup(output)

    def body() -> None:
        rules = load_engine(policies, repo).rules()
        if printer.json:
            for rule in rules:
                printer.obj(
                    {
                        "rule_id": rule.rule_id,
                        "tier": rule.tier,
                        "severity": rule.severity,
                        "category": rule.category,
                        "approval_timeout_s": rule.approval_timeout_s,
                        "summary": rule.summary,
                    }
                )
            return
        printer.line(f"{'RULE':<28} {'TIER':<10} {'SEVERITY':<9} {'CATEGORY':<21} {'TIMEOUT':>7}  SUMMARY")
        for rule in rules:
            timeout = f"{rule.approval_timeout_s}s" if rule.approval_timeout_s is not None else "-"
            printer.line(
                f"{printable(rule.rule_id):<28} {rule.tier:<10} {printable(rule.severity or '-'):<9} "
                f"{printable(rule.category or '-'):<21} {timeout:>7}  {printable(rule.summary)}"
            )

    _run(printer, body)


# --- policies test: one call, or the calls of a past task ------------------------------------------------


def parse_input(tool: str, text: str) -> dict[str, Any]:
    """``--input``: a JSON object, or for ``bash`` a plain command."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    if tool == "bash":
        return {"command": text}
    raise CliError(
        f"--input for {tool!r} must be a JSON object", hint='e.g. {"command": "create", "path": "a.env"}'
    )


@dataclass(frozen=True)
class ReplayedCall:
    """One ``tool_called`` event of a past task and what the candidate rules decide for it."""

    seq: int
    turn: int | None
    tool_name: str
    input_preview: str
    truncated: bool
    tool_input: dict[str, Any] | None  # None: the input could not be rebuilt from the preview
    decision: PolicyDecision | None

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "turn": self.turn,
            "tool_name": self.tool_name,
            "input_preview": self.input_preview,
            "preview_truncated": self.truncated,
            "reconstructed_input": self.tool_input,
            "decision": _decision_json(self.decision) if self.decision else None,
        }


def preview_truncated(preview: str) -> bool:
    """A preview cut by the runner: ``...`` appended after exactly 200 (or, with --trace, 4096) chars."""
    return preview.endswith("...") and len(preview) in _TRUNCATED_LENGTHS


def input_from_preview(tool_name: str, preview: str) -> tuple[dict[str, Any] | None, bool]:
    """The tool input as far as the preview holds it, and whether the preview was truncated.

    The runner previews a ``bash`` call as its command and any other call as its input's JSON,
    both redacted and cut to the preview size. A truncated bash command is replayed as far as it
    goes; a truncated JSON input keeps only its ``command`` and ``path`` strings when they survive.
    """
    truncated = preview_truncated(preview)
    text = preview[:-3] if truncated else preview
    if tool_name == "bash":
        return {"command": text}, truncated
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value, truncated
    fields: dict[str, Any] = {}
    for key in ("command", "path"):
        match = re.search(_JSON_STRING_FIELD.format(key=key), text)
        if match:
            fields[key] = json.loads(match.group(1))
    if tool_name == EDIT_TOOL and "command" in fields and "path" in fields:
        return fields, truncated
    return None, truncated


def replay(engine: PolicyEngine, views: Iterable[Mapping[str, Any]]) -> list[ReplayedCall]:
    """What the candidate rules decide for every ``tool_called`` event view (query's ``event_view``)."""
    calls = []
    for view in views:
        if view.get("type") != "tool_called":
            continue
        event = view.get("event") or {}
        tool_name = str(event.get("tool_name", ""))
        preview = str(event.get("input_preview", ""))
        tool_input, truncated = input_from_preview(tool_name, preview)
        decision = engine.evaluate(tool_name, tool_input) if tool_input is not None else None
        turn = event.get("turn")
        calls.append(
            ReplayedCall(
                seq=int(view.get("seq", 0)),
                turn=turn if isinstance(turn, int) else None,
                tool_name=tool_name,
                input_preview=preview,
                truncated=truncated,
                tool_input=tool_input,
                decision=decision,
            )
        )
    return calls


def task_event_views(api: Api, task_id: str) -> Iterator[dict[str, Any]]:
    """Every stored event of a task, oldest first, through query's paginated events endpoint."""
    after = 0
    while True:
        page = api.read(f"/v1/tasks/{task_id}/events", {"after": after, "limit": EVENTS_PAGE})
        yield from page["data"]
        pagination = page.get("pagination") or {}
        nxt = pagination.get("next_after")
        if not pagination.get("has_more") or nxt is None:
            return
        after = int(nxt)


def _short(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _print_decision(printer: Printer, decision: PolicyDecision) -> None:
    printer.line(f"decision: {decision.outcome}")
    printer.line(f"rules:    {', '.join(decision.rule_ids) or '-'}")
    if decision.severity or decision.timeout_s or decision.category:
        printer.line(
            f"severity: {decision.severity or '-'}   timeout: "
            f"{f'{decision.timeout_s}s' if decision.timeout_s is not None else '-'}   "
            f"category: {decision.category or '-'}"
        )
    printer.line(f"reason:   {printable(decision.reason)}")


def _print_replay(printer: Printer, task_id: str, calls: list[ReplayedCall]) -> None:
    if printer.json:
        for call in calls:
            printer.obj(call.as_json())
        return
    counts: dict[str, int] = {}
    for call in calls:
        outcome = str(call.decision.outcome) if call.decision else "unknown"
        counts[outcome] = counts.get(outcome, 0) + 1
        turn = f"turn {call.turn}" if call.turn is not None else "turn ?"
        rules = f" [{', '.join(call.decision.rule_ids)}]" if call.decision and call.decision.rule_ids else ""
        note = ""
        if call.tool_input is None:
            note = "  (input not rebuilt from the preview)"
        elif call.truncated:
            note = "  (preview truncated: replayed as far as it goes)"
        printer.line(
            f"#{call.seq:<5} {turn:<8} {printable(call.tool_name):<10} {outcome:<16}{printable(rules)} "
            f"{printable(_short(call.input_preview))}{note}"
        )
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no tool calls"
    printer.line(f"task {task_id}: {len(calls)} tool call(s): {summary}")


@policies_app.command("test")
def policies_test(
    tool: Annotated[str, typer.Option(help="The tool name: bash, str_replace_based_edit_tool, ...")] = "bash",
    input_text: Annotated[
        str | None,
        typer.Option("--input", help="The tool input: a JSON object, or for bash a plain command."),
    ] = None,
    replay_task: Annotated[
        str | None,
        typer.Option("--replay", help="A past task id: decide every tool call it made (from its events)."),
    ] = None,
    policies: PoliciesOpt = None,
    output: OutputOpt = Output.text,
) -> None:
    """Dry-run the rules (starter set + --policies DIR) on one call, or on every call of a past task."""
    config, printer = _setup(output)

    def body() -> None:
        if (input_text is None) == (replay_task is None):
            raise CliError("give --input (one call) or --replay TASK_ID (a past task's calls)")
        engine = load_engine(policies)
        if input_text is not None:
            decision = engine.evaluate(tool, parse_input(tool, input_text))
            if printer.json:
                printer.obj({"tool_name": tool, **_decision_json(decision)})
            else:
                _print_decision(printer, decision)
            return
        assert replay_task is not None
        with Api(config) as api:
            calls = replay(engine, task_event_views(api, replay_task))
        _print_replay(printer, replay_task, calls)

    _run(printer, body)
