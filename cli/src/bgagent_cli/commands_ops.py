"""Operator commands: ``admin init|rebuild|poison``, ``dev up|down|status``, ``demo``."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Annotated

import typer

from bgagent_eventstore import NatsSettings, StoreError, connect, list_poison, provision
from bgagent_testing.servers import ServerError, database_url_from_env, drop_database, with_database

from . import demo as demo_mod
from .client import Api
from .config import CliConfig, home_dir
from .errors import CliError
from .main import Output, OutputOpt, _run, _setup, admin_app, app, dev_app
from .render import Printer
from .stack import Stack, StackSpec
from .watch import watch as watch_task


def _nats_settings(config: CliConfig) -> NatsSettings:
    if not config.nats_url:
        raise CliError("no NATS URL", hint="set NATS_URL, or start the local stack with 'bgagent dev up'")
    return NatsSettings(url=config.nats_url, stream=config.stream, prefix=config.prefix)


@admin_app.command("init")
def admin_init(output: OutputOpt = Output.text) -> None:
    """Create the stream, consumers, KV buckets and object store (idempotent: twice changes nothing)."""
    config, printer = _setup(output)

    async def go() -> None:
        settings = _nats_settings(config)
        try:
            nc = await connect(settings.url, name="bgagent-admin")
        except StoreError as exc:
            raise CliError(str(exc), hint="check NATS_URL") from exc
        try:
            report = await provision(nc.jetstream(), settings)
        finally:
            await nc.close()
        if printer.json:
            printer.obj({"created": report.created, "updated": report.updated, "unchanged": report.unchanged})
            return
        for verb, names in (
            ("created", report.created),
            ("updated", report.updated),
            ("ok", report.unchanged),
        ):
            for name in names:
                printer.line(f"{verb:<8} {name}")

    _run(printer, lambda: asyncio.run(go()))


@admin_app.command("rebuild")
def admin_rebuild(output: OutputOpt = Output.text) -> None:
    """Drop the query read models and rebuild them from the stream."""
    config, printer = _setup(output)

    async def go() -> None:
        from bgagent_query.rebuild import rebuild_from_urls

        settings = _nats_settings(config)
        database_url = config.database_url or database_url_from_env()
        result = await rebuild_from_urls(settings, database_url)
        if printer.json:
            printer.obj(result)
        else:
            printer.line(
                f"rebuilt {result['tasks']} task(s) from {result['events']} event(s) "
                f"up to seq {result['last_seq']} in {result['elapsed_s']:.2f}s"
            )

    _run(printer, lambda: asyncio.run(go()))


@admin_app.command("poison")
def admin_poison(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Show at most this many per reader.")] = 50,
    output: OutputOpt = Output.text,
) -> None:
    """List the messages readers skipped as poison: query's table and fanout's and the runner's records."""
    config, printer = _setup(output)

    async def go() -> None:
        rows: list[dict[str, object]] = []
        settings = _nats_settings(config)
        try:
            nc = await connect(settings.url, name="bgagent-admin")
        except StoreError as exc:
            raise CliError(str(exc), hint="check NATS_URL") from exc
        try:
            records = await list_poison(nc.jetstream(), settings.prefix)
        finally:
            await nc.close()
        for r in records[-limit:]:
            rows.append(
                {
                    "reader": r.reader,
                    "seq": r.seq,
                    "subject": r.subject,
                    "reason": r.reason,
                    "size_bytes": r.size_bytes,
                    "recorded_at": r.recorded_at.isoformat(),
                }
            )
        database_url = config.database_url or database_url_from_env()
        rows.extend(await _query_poison(database_url, limit))
        rows.sort(key=lambda x: (int(str(x["seq"])), str(x["reader"])))
        for row in rows:
            if printer.json:
                printer.obj(row)
            else:
                printer.line(f"#{row['seq']:<8} {row['reader']:<7} {row['subject']}  {row['reason']}")
        if not rows and not printer.json:
            printer.note("no poison messages recorded")

    _run(printer, lambda: asyncio.run(go()))


async def _query_poison(database_url: str, limit: int) -> list[dict[str, object]]:
    import asyncpg

    from bgagent_query.store import recent_poison

    try:
        conn = await asyncpg.connect(database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise CliError(f"cannot reach the read model database: {exc}", hint="check DATABASE_URL") from exc
    try:
        return [
            {
                "reader": "query",
                "seq": row["seq"],
                "subject": row["subject"],
                "reason": row["error"],
                "size_bytes": row["size_bytes"],
                "recorded_at": row["recorded_at"].isoformat(),
            }
            for row in await recent_poison(conn, limit)
        ]
    except asyncpg.UndefinedTableError:
        return []
    finally:
        await conn.close()


def _repo_roots(given: list[Path]) -> tuple[str, ...]:
    """``--repo-root`` values as absolute paths (``~`` expanded); each must be an existing directory."""
    roots: list[str] = []
    for raw in given:
        path = os.path.normpath(os.path.abspath(os.path.expanduser(raw)))
        if not os.path.isdir(path):
            raise CliError(f"--repo-root {raw}: not a directory", hint="pass an existing folder")
        if os.pathsep in path:
            raise CliError(f"--repo-root {raw}: a root may not contain {os.pathsep!r}")
        roots.append(path)
    return tuple(roots)


@dev_app.command("up")
def dev_up(
    repo_root: Annotated[
        list[Path] | None,
        typer.Option(
            "--repo-root",
            metavar="DIR",
            help="Also allow local repositories under this folder (repeatable); "
            "<BGAGENT_HOME>/repos is always allowed.",
        ),
    ] = None,
    output: OutputOpt = Output.text,
) -> None:
    """Start nats-server, the four services (and the scripted model without ANTHROPIC_API_KEY)."""
    _, printer = _setup(output)

    def body() -> None:
        home = home_dir()
        if Stack.load(str(home)) is not None:
            raise CliError(f"a stack is already recorded in {home}/dev", hint="run 'bgagent dev down' first")
        use_claude = bool(os.environ.get("ANTHROPIC_API_KEY")) and not os.environ.get("ANTHROPIC_BASE_URL")
        spec = StackSpec(
            home=str(home),
            database_url=database_url_from_env(),
            scripted_model=not use_claude,
            github_token=os.environ.get("GITHUB_TOKEN"),
            repo_roots=_repo_roots(repo_root or []),
        )
        try:
            state = Stack(spec).start()
        except ServerError as exc:
            raise CliError(str(exc)) from exc
        roots = spec.local_repo_roots
        if printer.json:
            printer.obj({**state.client, "repo_roots": list(roots)})
            return
        for key, value in state.client.items():
            printer.line(f"{key:<13}{value}")
        printer.line(f"{'repo roots':<13}{os.pathsep.join(roots)}")
        printer.line(f"logs         {home}/dev/logs")
        printer.line("stop with    bgagent dev down")

    _run(printer, body)


@dev_app.command("down")
def dev_down(output: OutputOpt = Output.text) -> None:
    """Stop the local stack started by 'dev up'."""
    _, printer = _setup(output)

    def body() -> None:
        stack = Stack.load(str(home_dir()))
        if stack is None:
            printer.note("no stack is running")
            return
        stack.stop()
        printer.line("stopped")

    _run(printer, body)


def _wait_terminal(api: Api, task_id: str, timeout: float = 15.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        task: dict[str, object] = api.read(f"/v1/tasks/{task_id}")["data"]
        if task["status"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT") or time.monotonic() > deadline:
            return task
        time.sleep(0.05)


@app.command()
def demo(
    keep: Annotated[bool, typer.Option(help="Keep the demo folder and its logs afterwards.")] = False,
) -> None:
    """Run one task end to end on this machine: a repo with a failing test gets fixed on a branch."""
    _, printer = _setup(Output.text)

    def body() -> int:
        root = demo_mod.demo_root()
        repo = demo_mod.make_demo_repo(root)
        use_claude = bool(os.environ.get("ANTHROPIC_API_KEY")) and not os.environ.get("ANTHROPIC_BASE_URL")
        database_url = with_database(database_url_from_env(), "bgagent_demo")
        try:
            asyncio.run(drop_database(database_url))
        except OSError as exc:
            raise CliError(
                f"cannot reach PostgreSQL for {database_url}: {exc}",
                hint="start it (pg_ctlcluster 15 main start) or set DATABASE_URL",
            ) from exc
        spec = StackSpec(
            home=str(root / "home"),
            database_url=database_url,
            scripted_model=not use_claude,
            model_script=str(demo_mod.write_script(root)),
            repo_roots=(str(repo),),
        )
        printer.line(f"== starting the stack ({'Claude' if use_claude else 'scripted model'}) in {root}")
        stack = Stack(spec)
        try:
            state = stack.start()
        except ServerError as exc:
            raise CliError(str(exc)) from exc
        code = 1
        try:
            config = CliConfig(**{k: v for k, v in state.client.items() if k in CliConfig.__struct_fields__})
            with Api(config) as api:
                printer.line(f"== submitting a task on {repo}")
                created = api.write(
                    "/v1/tasks", {"repo": str(repo), "description": demo_mod.DEMO_DESCRIPTION}
                )
                task_id = created["data"]["task_id"]
                printer.line(f"== watching {task_id}")
                code = asyncio.run(watch_task(config, task_id, printer))
                printer.line("== status")
                printer.task(_wait_terminal(api, task_id))
            branch = f"bgagent/{task_id}"
            printer.line(f"== diff main..{branch}")
            printer.line(demo_mod.git(repo, "diff", f"main..{branch}").rstrip() or "(no changes)")
        finally:
            stack.stop()
            if code == 0 and not keep:
                shutil.rmtree(root, ignore_errors=True)
            else:
                printer.note(f"demo folder kept: {root} (logs in {Path(spec.home) / 'dev' / 'logs'})")
        printer.line("== demo " + ("COMPLETED" if code == 0 else "did not complete"))
        return code

    raise typer.Exit(_run(printer, body))


__all__ = ["Printer"]
