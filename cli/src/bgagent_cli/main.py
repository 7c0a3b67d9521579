"""The ``bgagent`` command."""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from .client import Api
from .config import CliConfig, home_dir
from .errors import ApiCallError, CliError
from .render import Printer
from .watch import Transport
from .watch import watch as watch_task

app = typer.Typer(
    name="bgagent",
    help="Run autonomous background coding agents: submit, watch, nudge, cancel.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
admin_app = typer.Typer(help="Operator commands.", no_args_is_help=True)
dev_app = typer.Typer(
    help="The local stack: a real nats-server, local PostgreSQL, the four services.", no_args_is_help=True
)
app.add_typer(admin_app, name="admin")
app.add_typer(dev_app, name="dev")


class Output(enum.StrEnum):
    text = "text"
    json = "json"


OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="text, or json (one object per line).")]
TransportOpt = Annotated[
    Transport,
    typer.Option(
        help="How watch reads events: sse (query's event stream, with the API token), nats (NATS "
        "credentials), or auto: sse when a query URL and a token are known and neither NATS_URL nor "
        "NATS credentials are set, nats otherwise."
    ),
]
T = TypeVar("T")


def _run(printer: Printer, fn: Callable[[], T]) -> T:
    """Run a command body; CliError → message + hint on stderr and its exit code; Ctrl-C → 130."""
    try:
        return fn()
    except CliError as exc:
        printer.note(f"error: {exc.message}")
        if exc.hint:
            printer.note(f"hint: {exc.hint}")
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        printer.note("interrupted")
        raise typer.Exit(130) from None


def _setup(output: Output) -> tuple[CliConfig, Printer]:
    logging.basicConfig(level=os.environ.get("BGAGENT_LOG_LEVEL", "WARNING"), stream=sys.stderr)
    return CliConfig.load(), Printer(output is Output.json)


def resolve_repo(value: str, cwd: str | None = None) -> str:
    """A ``--repo`` value as the server should get it: local paths absolute, anything else as given.

    A value is a local path when it starts with ``/``, ``.`` or ``~``, or ends with ``/``
    (``./x``, ``../x``, ``~/x``, ``x/``): ``~`` is expanded, a relative path is joined to ``cwd``
    (default: the current directory) and ``.``/``..`` are resolved as text, like ``cd`` does.
    Everything else (``owner/name``, ``file://`` and ``https://`` URLs) is sent unchanged, even
    when a directory of that name exists here: ``acme/widgets`` always means the GitHub repository.
    """
    text = value.strip()
    if "://" in text or not (text.startswith(("/", ".", "~")) or text.endswith("/")):
        return text
    path = os.path.expanduser(text)
    if path.startswith("~"):
        raise CliError(f"cannot expand {text.split('/')[0]!r} in --repo", hint="use an absolute path")
    return os.path.normpath(os.path.join(cwd or os.getcwd(), path))


_ROOTS_HINT = (
    "the server takes local repositories only under its BGAGENT_LOCAL_REPO_ROOTS; on 'bgagent dev up' "
    "put the repository in {repos} or restart the stack with --repo-root DIR"
)


PreApproveOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--pre-approve",
        help="Pre-approve a scope for the task's gated tool calls (repeatable): tool_type:bash, "
        "tool_group:file_write, rule:<id>, bash_pattern:<glob>, write_path:<glob>, or all_session "
        "(needs --yes). Hard-deny rules apply whatever you pre-approve.",
    ),
]
ApprovalTimeoutOpt = Annotated[
    int | None,
    typer.Option(
        "--approval-timeout", min=30, max=3600, help="Seconds a gated tool call waits for a decision (300)."
    ),
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Confirm a scope that allows every tool call.")]
ALL_SESSION_WARNING = (
    "all_session allows every tool call of the task without asking (hard-deny rules still apply)"
)


def _check_all_session(scopes: list[str], yes: bool, flag: str) -> None:
    if "all_session" in scopes and not yes:
        raise CliError(f"{flag} all_session: {ALL_SESSION_WARNING}", hint="add --yes if you mean it")


def _approval_settings(pre_approve: list[str] | None, timeout: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if pre_approve:
        out["initial_approvals"] = pre_approve
    if timeout is not None:
        out["approval_timeout_s"] = timeout
    return out


def _create(api: Api, request: dict[str, Any], headers: dict[str, str] | None) -> Any:
    try:
        return api.write("/v1/tasks", request, headers)
    except ApiCallError as exc:
        if exc.code == "VALIDATION_ERROR" and "is not under a local repository root" in exc.message:
            exc.hint = _ROOTS_HINT.format(repos=home_dir() / "repos")
        raise


@app.command()
def submit(
    repo: Annotated[
        str,
        typer.Option(
            help="owner/name on GitHub, or a local path / file:// URL (dev stack); "
            "./x, ../x, ~/x and x/ are paths, made absolute here."
        ),
    ],
    task: Annotated[str | None, typer.Option("--task", "-t", help="What to do (≤ 2000 characters).")] = None,
    issue: Annotated[int | None, typer.Option(help="Issue number the task comes from.")] = None,
    pr: Annotated[int | None, typer.Option(help="Iterate on this pull request (pr_iteration).")] = None,
    review_pr: Annotated[int | None, typer.Option(help="Review this pull request (pr_review).")] = None,
    max_turns: Annotated[int | None, typer.Option(min=1, max=500)] = None,
    max_budget: Annotated[float | None, typer.Option(min=0.01, max=100.0, help="Dollar budget.")] = None,
    trace: Annotated[bool, typer.Option(help="Keep larger previews and a full trace.")] = False,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Same key → same task, never a second one.")
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Then watch it until it ends.")] = False,
    pre_approve: PreApproveOpt = None,
    approval_timeout: ApprovalTimeoutOpt = None,
    yes: YesOpt = False,
    transport: TransportOpt = Transport.auto,
    output: OutputOpt = Output.text,
) -> None:
    """Submit a task (and with --watch follow it; exit 0 only when it completes)."""
    config, printer = _setup(output)

    def body() -> int:
        _check_all_session(pre_approve or [], yes, "--pre-approve")
        if pr is not None and review_pr is not None:
            raise CliError("--pr and --review-pr are exclusive", hint="pick one")
        if task is None and issue is None and pr is None and review_pr is None:
            raise CliError("nothing to do", hint="give --task, --issue, --pr or --review-pr")
        request: dict[str, Any] = {"repo": resolve_repo(repo), "trace": trace}
        if task is not None:
            request["description"] = task
        if issue is not None:
            request["issue_number"] = issue
        if pr is not None:
            request.update(task_type="pr_iteration", pr_number=pr)
        if review_pr is not None:
            request.update(task_type="pr_review", pr_number=review_pr)
        if max_turns is not None:
            request["max_turns"] = max_turns
        if max_budget is not None:
            request["max_budget_usd"] = max_budget
        request.update(_approval_settings(pre_approve, approval_timeout))
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        with Api(config) as api:
            created = _create(api, request, headers)
        data = created["data"]
        if printer.json:
            printer.obj(data)
        elif not watch:
            printer.task(data)
        else:
            printer.note(f"submitted {data['task_id']}; watching (Ctrl-C stops watching, not the task)")
        if watch:
            min_seq = int(created.get("meta", {}).get("seq") or 0)
            return asyncio.run(
                watch_task(config, data["task_id"], printer, transport=transport, min_seq=min_seq)
            )
        return 0

    raise typer.Exit(_run(printer, body))


@app.command("run")
def run_cmd(
    repo: Annotated[str, typer.Option(help="owner/name, or a local path (./x, ~/x, /x) / file:// URL.")],
    task: Annotated[str, typer.Option("--task", "-t", help="What to do.")],
    pre_approve: PreApproveOpt = None,
    approval_timeout: ApprovalTimeoutOpt = None,
    yes: YesOpt = False,
    transport: TransportOpt = Transport.auto,
    output: OutputOpt = Output.text,
) -> None:
    """Submit a task and watch it (shorthand for submit --watch)."""
    submit(
        repo=repo,
        task=task,
        watch=True,
        pre_approve=pre_approve,
        approval_timeout=approval_timeout,
        yes=yes,
        transport=transport,
        output=output,
    )


@app.command()
def watch(
    task_id: str,
    after: Annotated[int, typer.Option(min=0, help="Only events after this seq (the cursor).")] = 0,
    transport: TransportOpt = Transport.auto,
    output: OutputOpt = Output.text,
) -> None:
    """Follow a task's events live; exit 0 on COMPLETED, 1 on other endings, 130 on Ctrl-C."""
    config, printer = _setup(output)
    raise typer.Exit(
        _run(
            printer,
            lambda: asyncio.run(watch_task(config, task_id, printer, after=after, transport=transport)),
        )
    )


@app.command()
def status(task_id: str, output: OutputOpt = Output.text) -> None:
    """A snapshot of one task."""
    config, printer = _setup(output)

    def body() -> None:
        with Api(config) as api:
            task = api.read(f"/v1/tasks/{task_id}")["data"]
            approval = None
            if task.get("pending_approval") and not printer.json:
                pending = api.read("/v1/approvals", {"status": "pending", "limit": 500})["data"]
                approval = next((a for a in pending if a["request_id"] == task["pending_approval"]), None)
        printer.task(task, approval)

    _run(printer, body)


@app.command()
def events(
    task_id: str,
    after: Annotated[int, typer.Option(help="Start after this seq.")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    output: OutputOpt = Output.text,
) -> None:
    """A task's stored events (from the query service), oldest first."""
    config, printer = _setup(output)

    def body() -> None:
        with Api(config) as api:
            page = api.read(f"/v1/tasks/{task_id}/events", {"after": after, "limit": limit})
        for view in page["data"]:
            printer.event(view)
        nxt = page.get("pagination", {}).get("next_after")
        if nxt and page["pagination"].get("has_more"):
            printer.note(f"more: bgagent events {task_id} --after {nxt}")

    _run(printer, body)


@app.command("list")
def list_cmd(
    status_filter: Annotated[str | None, typer.Option("--status", help="e.g. RUNNING or COMPLETED.")] = None,
    repo: Annotated[str | None, typer.Option(help="Only this repository (paths as for submit).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    output: OutputOpt = Output.text,
) -> None:
    """Your tasks, newest first."""
    config, printer = _setup(output)

    def body() -> None:
        with Api(config) as api:
            wanted = resolve_repo(repo) if repo is not None else None
            page = api.read("/v1/tasks", {"status": status_filter, "repo": wanted, "limit": limit})
        printer.task_row_header()
        for task in page["data"]:
            printer.task_row(task)
        if page.get("pagination", {}).get("has_more"):
            printer.note("(more results: raise --limit)")

    _run(printer, body)


@app.command()
def cancel(
    task_id: str,
    reason: Annotated[str | None, typer.Option()] = None,
    output: OutputOpt = Output.text,
) -> None:
    """Cancel a task (a queued one at once; a running one within a second)."""
    config, printer = _setup(output)

    def body() -> None:
        with Api(config) as api:
            result = api.write(f"/v1/tasks/{task_id}/cancel", {"reason": reason} if reason else {})
        data = result["data"]
        if printer.json:
            printer.obj(data)
        elif data["status"] == "CANCELLED":
            printer.line(f"Task {task_id} cancelled.")
        else:
            printer.line(
                f"Cancel requested for task {task_id} (status {data['status']}); the runner stops it."
            )

    _run(printer, body)


@app.command()
def nudge(task_id: str, message: str, output: OutputOpt = Output.text) -> None:
    """Send the agent a message; it reads it before its next turn."""
    config, printer = _setup(output)

    def body() -> None:
        with Api(config) as api:
            result = api.write(f"/v1/tasks/{task_id}/nudges", {"message": message})
        data = result["data"]
        if printer.json:
            printer.obj(data)
        else:
            printer.line(f"Nudge {data['nudge_id']} queued for task {task_id}.")

    _run(printer, body)


@app.command()
def approve(
    task_id: str,
    request_id: str,
    scope: Annotated[
        str | None,
        typer.Option(
            help="this_call (the default: only this call), tool_type_session (every call of this tool), "
            "or a scope as for --pre-approve; all_session needs --yes."
        ),
    ] = None,
    yes: YesOpt = False,
    output: OutputOpt = Output.text,
) -> None:
    """Approve a gated tool call: the agent runs it (see 'bgagent pending')."""
    config, printer = _setup(output)

    def body() -> None:
        _check_all_session([scope] if scope else [], yes, "--scope")
        request: dict[str, Any] = {"decision": "approve"}
        if scope:
            request["scope"] = scope
        with Api(config) as api:
            result = api.write(f"/v1/tasks/{task_id}/approvals/{request_id}", request)
        data = result["data"]
        if printer.json:
            printer.obj(data)
            return
        granted = data.get("scope") or "this_call"
        printer.line(f"Approved request {data['request_id']} of task {data['task_id']} (scope {granted}).")

    _run(printer, body)


@app.command()
def deny(
    task_id: str,
    request_id: str,
    reason: Annotated[
        str | None, typer.Option(help="Told to the agent (≤ 2000 characters; secrets are redacted).")
    ] = None,
    output: OutputOpt = Output.text,
) -> None:
    """Deny a gated tool call: it does not run, and the agent is told why."""
    config, printer = _setup(output)

    def body() -> None:
        request: dict[str, Any] = {"decision": "deny"}
        if reason:
            request["reason"] = reason
        with Api(config) as api:
            result = api.write(f"/v1/tasks/{task_id}/approvals/{request_id}", request)
        data = result["data"]
        if printer.json:
            printer.obj(data)
            return
        printer.line(f"Denied request {data['request_id']} of task {data['task_id']}; the agent is told.")

    _run(printer, body)


@app.command()
def pending(
    limit: Annotated[int, typer.Option(min=1, max=500)] = 100,
    output: OutputOpt = Output.text,
) -> None:
    """Approval requests waiting for your decision, oldest first."""
    config, printer = _setup(output)

    def body() -> None:
        with Api(config) as api:
            page = api.read("/v1/approvals", {"status": "pending", "limit": limit})
        if not page["data"] and not printer.json:
            printer.note("no approval requests are waiting")
            return
        printer.approval_row_header()
        for approval in page["data"]:
            printer.approval_row(approval)
        if page.get("pagination", {}).get("has_more"):
            printer.note("(more requests: raise --limit)")
        if not printer.json:
            first = page["data"][0]
            printer.note(f"decide with: bgagent approve|deny {first['task_id']} {first['request_id']}")

    _run(printer, body)


from . import commands_ops, commands_policy  # noqa: E402,F401  (register admin, dev, demo, policies)

__all__ = ["Path", "admin_app", "app", "dev_app", "home_dir"]
