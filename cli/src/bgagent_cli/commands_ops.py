"""Operator commands: ``admin init|rebuild|poison|token``, ``dev up|down|status|logs``, ``demo``."""

from __future__ import annotations

import asyncio
import heapq
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from bgagent_eventstore import (
    NatsSettings,
    PoisonRecord,
    StoreError,
    TokenNotFoundError,
    TokenStore,
    connect,
    list_poison,
    provision,
)
from bgagent_eventstore.nats_auth import ADMIN, SERVICE_USERS, USERS, write_auth_dir
from bgagent_eventstore.settings import check_url
from bgagent_testing.servers import (
    ServerError,
    database_name,
    database_url_from_env,
    drop_database,
    with_database,
)

from . import demo as demo_mod
from .client import Api
from .config import CliConfig, home_dir, token_file
from .errors import CliError
from .main import Output, OutputOpt, _run, _setup, admin_app, app, dev_app
from .render import Printer, printable
from .stack import Stack, StackSpec, home_database_name, public_client
from .watch import watch as watch_task

T = TypeVar("T")


def _nats_settings(config: CliConfig) -> NatsSettings:
    """Where and as whom the admin commands connect: the ``admin`` NATS user (see ``admin nats-config``)."""
    if not config.nats_url:
        raise CliError("no NATS URL", hint="set NATS_URL, or start the local stack with 'bgagent dev up'")
    try:
        url = check_url(config.nats_url)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    auth = config.nats_auth_as(ADMIN)
    if not 1 <= config.replicas <= 5:
        raise CliError("BGAGENT_STREAM_REPLICAS must be a number from 1 to 5 (3 on a 3-node cluster)")
    return NatsSettings(
        url=url, stream=config.stream, prefix=config.prefix, auth=auth, replicas=config.replicas
    )


@admin_app.command("init")
def admin_init(output: OutputOpt = Output.text) -> None:
    """Create the stream, consumers, KV buckets and object store (idempotent: twice changes nothing)."""
    config, printer = _setup(output)

    async def go() -> None:
        settings = _nats_settings(config)
        try:
            nc = await connect(settings.url, name="bgagent-admin", auth=settings.auth)
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


token_app = typer.Typer(
    help="Managed API tokens: create (shown once), list, revoke (effective within a second).",
    no_args_is_help=True,
)
admin_app.add_typer(token_app, name="token")


async def _token_store(config: CliConfig) -> tuple[TokenStore, Callable[[], Awaitable[None]]]:
    """The tokens bucket as the ``admin`` NATS user (the only user that may write it), and its closer."""
    settings = _nats_settings(config)
    try:
        nc = await connect(settings.url, name="bgagent-admin", auth=settings.auth)
    except StoreError as exc:
        raise CliError(str(exc), hint="check NATS_URL") from exc
    return TokenStore(nc.jetstream(), settings.prefix), nc.close


async def _with_tokens(config: CliConfig, fn: Callable[[TokenStore], Awaitable[T]]) -> T:
    store, close = await _token_store(config)
    try:
        return await fn(store)
    except TokenNotFoundError as exc:
        raise CliError(str(exc), hint="'bgagent admin token list' shows the ids", exit_code=1) from exc
    except StoreError as exc:
        raise CliError(str(exc), hint="run 'bgagent admin init' if the tokens bucket is missing") from exc
    finally:
        await close()


def _when(value: object) -> str:
    return str(value)[:19].replace("T", " ") if value else "-"


@token_app.command("create")
def admin_token_create(
    user: Annotated[str, typer.Option("--user", help="The user the token acts as.")],
    admin: Annotated[
        bool, typer.Option("--admin", help="An admin token: sees and acts on every task.")
    ] = False,
    name: Annotated[str, typer.Option("--name", help="What the token is for (shown by list).")] = "",
    output: OutputOpt = Output.text,
) -> None:
    """Issue a new API token; it is printed once (only its SHA-256 digest is stored)."""
    config, printer = _setup(output)

    async def go() -> None:
        try:
            token, record = await _with_tokens(config, lambda s: s.create(user, admin=admin, name=name))
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        if printer.json:
            printer.obj({"token": token, **record.public()})
            return
        printer.line(f"{'token':<8}{token}")
        printer.line(f"{'id':<8}{record.token_id}")
        printer.line(f"{'user':<8}{printable(record.user_id)}{' (admin)' if record.admin else ''}")
        printer.note("the token is shown only now: store it (e.g. BGAGENT_TOKEN); it works within a second")
        printer.note(f"revoke it with: bgagent admin token revoke {record.token_id}")

    _run(printer, lambda: asyncio.run(go()))


@token_app.command("list")
def admin_token_list(output: OutputOpt = Output.text) -> None:
    """Every managed token: id, user, admin, name, created, revoked (never a token or its digest)."""
    config, printer = _setup(output)

    async def go() -> None:
        records = await _with_tokens(config, lambda s: s.list())
        if not printer.json:
            printer.line(f"{'ID':<14}{'USER':<16}{'ADMIN':<7}{'CREATED':<21}{'REVOKED':<21}NAME")
        for record in records:
            row = record.public()
            if printer.json:
                printer.obj(row)
                continue
            printer.line(
                f"{record.token_id:<14}{printable(record.user_id)[:15]:<16}"
                f"{'yes' if record.admin else 'no':<7}{_when(row['created_at']):<21}"
                f"{_when(row['revoked_at']):<21}{printable(record.name)}"
            )
        if not records and not printer.json:
            printer.note("no managed tokens (create one with 'bgagent admin token create --user U')")

    _run(printer, lambda: asyncio.run(go()))


@token_app.command("revoke")
def admin_token_revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The token's id (from create or list).")],
    output: OutputOpt = Output.text,
) -> None:
    """Revoke a managed token: admission and query refuse it within a second (idempotent)."""
    config, printer = _setup(output)

    async def go() -> None:
        record = await _with_tokens(config, lambda s: s.revoke(token_id))
        if printer.json:
            printer.obj(record.public())
        else:
            printer.line(
                f"revoked {record.token_id} (user {printable(record.user_id)}, at {_when(record.revoked_at)})"
            )

    _run(printer, lambda: asyncio.run(go()))


@admin_app.command("nats-config")
def admin_nats_config(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="Folder for the config and password files.")
    ],
    rotate: Annotated[
        bool, typer.Option(help="New passwords for every user (then restart nats-server).")
    ] = False,
    output: OutputOpt = Output.text,
) -> None:
    """Write the NATS users: nats-auth.conf (bcrypt hashes, for nats-server) and <user>.password files.

    One user per service plus operator (read-only) and admin, with the permissions of the writer
    table, for BGAGENT_STREAM and BGAGENT_PREFIX. Existing passwords are kept unless --rotate.
    Offline: nothing connects to NATS.
    """
    config, printer = _setup(output)

    def body() -> None:
        written = write_auth_dir(
            directory.expanduser(), stream=config.stream, prefix=config.prefix, rotate=rotate
        )
        users = {u: written.password_file(u) for u in USERS}
        if printer.json:
            printer.obj(
                {"config": written.config, "password_files": users, "new_passwords": list(written.rotated)}
            )
            return
        printer.line(f"config       {written.config}   (nats-server -c, or include it)")
        for user in USERS:
            role = "service" if user in SERVICE_USERS else user
            mark = "new" if user in written.rotated else "kept"
            printer.line(f"{user:<12} {users[user]}   ({role}, password {mark})")
        printer.note("each process: NATS_USER=<user> NATS_PASSWORD_FILE=<its file>; files are 0600")

    _run(printer, body)


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
            nc = await connect(settings.url, name="bgagent-admin", auth=settings.auth)
        except StoreError as exc:
            raise CliError(str(exc), hint="check NATS_URL") from exc
        try:
            records = await list_poison(nc.jetstream(), settings.prefix)
        finally:
            await nc.close()
        newest: dict[str, list[PoisonRecord]] = {}
        for r in sorted(records, key=lambda r: r.seq):
            newest.setdefault(r.reader, []).append(r)
        for r in (r for kept in newest.values() for r in kept[-limit:]):  # per reader, as --limit says
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
    cluster: Annotated[
        int,
        typer.Option(
            "--cluster",
            metavar="N",
            help="3: run NATS as a JetStream cluster of three nodes on loopback, streams and buckets "
            "at 3 replicas; 1 (the default) runs one nats-server.",
        ),
    ] = 1,
    output: OutputOpt = Output.text,
) -> None:
    """Start nats-server, the four services (and the scripted model without ANTHROPIC_API_KEY)."""
    _, printer = _setup(output)

    def body() -> None:
        if cluster not in (1, 3):
            raise CliError(
                f"--cluster {cluster}: the local NATS cluster has 3 nodes", hint="or 1: one nats-server"
            )
        home = home_dir()
        recorded = Stack.load(str(home))
        if recorded is not None:
            if any(row["alive"] for row in recorded.status()):
                raise CliError(
                    f"a stack is already running in {home}/dev",
                    hint="'bgagent dev status' shows it; 'bgagent dev down' stops it",
                )
            recorded.stop()  # nothing of it runs any more (a reboot, a kill): forget the record
            printer.note(f"forgot the stack recorded in {home}/dev: none of its processes runs")
        use_claude = bool(os.environ.get("ANTHROPIC_API_KEY")) and not os.environ.get("ANTHROPIC_BASE_URL")
        spec = StackSpec(
            home=str(home),
            # DATABASE_URL names the server; the database is this home's own
            database_url=with_database(database_url_from_env(), home_database_name(str(home))),
            scripted_model=not use_claude,
            github_token=os.environ.get("GITHUB_TOKEN"),
            repo_roots=_repo_roots(repo_root or []),
            nats_nodes=cluster,
        )
        try:
            state = Stack(spec).start()
        except ServerError as exc:
            raise CliError(str(exc)) from exc
        roots = spec.local_repo_roots
        client = public_client(state.client)
        token = str(token_file(home))
        if printer.json:
            printer.obj({**client, "token_file": token, "repo_roots": list(roots)})
            return
        for key, value in client.items():
            printer.line(f"{key:<14}{value}")
        printer.line(f"{'token file':<14}{token}")
        printer.line(f"{'repo roots':<14}{os.pathsep.join(roots)}")
        printer.line(f"{'logs':<14}{home}/dev/logs  (bgagent dev logs [SERVICE] [-f])")
        printer.line(f"{'stop with':<14}bgagent dev down")

    _run(printer, body)


@dev_app.command("down")
def dev_down(output: OutputOpt = Output.text) -> None:
    """Stop the local stack started by 'dev up' (only processes it can prove it started)."""
    _, printer = _setup(output)

    def body() -> None:
        stack = Stack.load(str(home_dir()))
        if stack is None:
            printer.note("no stack is running")
            return
        for info, outcome in stack.stop():
            if printer.json:
                printer.obj({"name": info.name, "pid": info.pid, "result": outcome})
            elif outcome == "gone":
                printer.line(f"{info.name:<13}{info.pid:<8}already gone (not signalled)")
            else:
                printer.line(f"{info.name:<13}{info.pid:<8}{outcome}")
        if not printer.json:
            printer.line("stopped")

    _run(printer, body)


@dev_app.command("status")
def dev_status(output: OutputOpt = Output.text) -> None:
    """The local stack's processes: name, pid, alive (checked, not assumed), port, log; and the size
    of the runner's work dir (task workspaces) with its number of attempt directories.

    Exits 0 when every process runs, 1 otherwise (or when no stack is recorded).
    """
    _, printer = _setup(output)

    def body() -> int:
        from bgagent_runner.cleanup import workspace_usage  # the runner package is slow to import

        home = home_dir()
        stack = Stack.load(str(home))
        if stack is None:
            printer.note(f"no stack is recorded in {home}/dev (start one with 'bgagent dev up')")
            return 1
        rows = stack.status()
        usage = workspace_usage(stack.work_dir)
        if not printer.json:
            printer.line(f"{'NAME':<13}{'PID':<8}{'ALIVE':<6}{'PORT':<7}LOG")
        for row in rows:
            if printer.json:
                if row["name"] == "runner":  # the work dir is the runner's: its size on its line
                    row |= {
                        "work_dir": usage.work_dir,
                        "work_dir_bytes": usage.size_bytes,
                        "attempt_dirs": usage.attempt_dirs,
                    }
                printer.obj(row)
            else:
                alive, port = "yes" if row["alive"] else "no", row["port"] or "-"
                printer.line(f"{row['name']!s:<13}{row['pid']!s:<8}{alive:<6}{port!s:<7}{row['log']}")
        if not printer.json:
            size = _size(usage.size_bytes) if usage.exists else "not created yet"
            printer.line(f"work dir {usage.work_dir}: {size}, {usage.attempt_dirs} attempt dir(s)")
        return 0 if all(row["alive"] for row in rows) else 1

    raise typer.Exit(_run(printer, body))


def _size(n: int) -> str:
    """``512 B``, ``1.5 KiB``, ``12.0 MiB``, …"""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@dev_app.command("logs")
def dev_logs(
    service: Annotated[
        str | None,
        typer.Argument(
            help="nats-server, model-server, query, admission, runner or fanout; every log when omitted.",
            show_default=False,
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Then print new lines as they come until Ctrl-C (130).")
    ] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, max=100_000, help="Last lines to show.")] = 50,
) -> None:
    """The local stack's logs: the last lines of one service's, or of all of them interleaved by time."""
    _, printer = _setup(Output.text)

    def body() -> None:
        logs = home_dir() / "dev" / "logs"
        found = sorted(p.stem for p in logs.glob("*.log")) if logs.is_dir() else []
        if not found:
            raise CliError(f"no logs in {logs}", hint="start the local stack with 'bgagent dev up'")
        if service is not None and service not in found:
            raise CliError(f"no log for {service!r} in {logs}", hint=f"one of: {', '.join(found)}")
        names = [service] if service is not None else found
        _LogTail(printer, logs, prefixed=service is None).run(names, lines, follow)

    _run(printer, body)


_LOG_TIME = re.compile(r"(\d{4})[-/](\d{2})[-/](\d{2})[ T](\d{2}:\d{2}:\d{2})(?:[.,](\d{1,9}))?")


def _log_time(line: str) -> str | None:
    """The timestamp a log line starts with (services' ``2025-01-02 03:04:05,678``, nats-server's
    ``[pid] 2025/01/02 03:04:05.678901``) as a sortable string, or None (a traceback line)."""
    m = _LOG_TIME.search(line, 0, 48)
    if m is None:
        return None
    year, month, day, hms, frac = m.groups()
    return f"{year}-{month}-{day} {hms}.{(frac or '').ljust(9, '0')}"


def _tail(path: Path, n: int) -> tuple[list[str], int]:
    """The last ``n`` complete lines of ``path`` and the offset after them (where following resumes)."""
    with open(path, "rb") as f:
        end = pos = f.seek(0, os.SEEK_END)
        data = b""
        while pos > 0 and data.count(b"\n") <= n:
            step = min(1 << 16, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    complete = data.rfind(b"\n") + 1  # a line still being written is printed once it is complete
    found = data[:complete].decode(errors="replace").splitlines()
    return (found[-n:] if n else []), end - (len(data) - complete)


class _LogTail:
    """Print the tails of some logs (interleaved by their timestamps), then optionally follow them."""

    def __init__(self, printer: Printer, logs: Path, prefixed: bool) -> None:
        self.printer = printer
        self.logs = logs
        self.prefixed = prefixed
        self.offsets: dict[str, int] = {}
        self.partial: dict[str, bytes] = {}

    def emit(self, name: str, line: str) -> None:
        text = printable(line)  # a log may quote agent output: no escape sequence reaches the terminal
        self.printer.line(f"{name:<12} | {text}" if self.prefixed else text)

    def run(self, names: list[str], lines: int, follow: bool) -> None:
        streams: list[list[tuple[str, str, str]]] = []
        for name in names:
            tail, self.offsets[name] = _tail(self.logs / f"{name}.log", lines)
            stamped: list[tuple[str, str, str]] = []
            when = ""
            for line in tail:
                when = _log_time(line) or when  # a line without a time (a traceback) stays with its entry
                stamped.append((when, name, line))
            streams.append(stamped)
        merged = list(heapq.merge(*streams, key=lambda entry: entry[0]))
        for _, name, line in merged[len(merged) - lines :] if lines else []:
            self.emit(name, line)
        while follow:
            if self.prefixed:  # a log that appears later (the stack started after this) is followed too
                names = sorted({*names, *(p.stem for p in self.logs.glob("*.log"))})
            for name in names:
                self.poll(name)
            time.sleep(0.1)

    def poll(self, name: str) -> None:
        path = self.logs / f"{name}.log"
        try:
            size = path.stat().st_size
        except OSError:
            return
        offset = self.offsets.get(name, 0)
        if size < offset:  # truncated or replaced: start again from its beginning
            offset, self.partial[name] = 0, b""
        if size == offset:
            return
        with open(path, "rb") as f:
            f.seek(offset)
            chunk = f.read(size - offset)
        self.offsets[name] = offset + len(chunk)
        *complete, self.partial[name] = (self.partial.get(name, b"") + chunk).split(b"\n")
        for raw in complete:
            self.emit(name, raw.decode(errors="replace"))


def _drop_own_database(printer: Printer, database_url: str) -> None:
    """Drop a database this process created (``Stack.created_database``), and no other."""
    import asyncpg

    try:
        asyncio.run(drop_database(database_url))
    except (OSError, asyncpg.PostgresError) as exc:
        printer.note(f"could not drop the demo database {database_name(database_url)}: {exc}")


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
        home = root / "home"
        # A database of this run's own (named from its fresh home): no other run's or stack's is touched.
        database_url = with_database(database_url_from_env(), home_database_name(str(home), "bgagent_demo"))
        spec = StackSpec(
            home=str(home),
            database_url=database_url,
            scripted_model=not use_claude,
            model_script=str(demo_mod.write_script(root)),
            repo_roots=(str(repo),),
        )
        printer.line(f"== starting the stack ({'Claude' if use_claude else 'scripted model'}) in {root}")
        stack = Stack(spec)
        code = 1
        try:
            try:
                state = stack.start()
            except ServerError as exc:
                raise CliError(str(exc)) from exc
            config = CliConfig.from_client(state.client)
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
            if stack.created_database and not keep:
                _drop_own_database(printer, database_url)
            if code == 0 and not keep:
                shutil.rmtree(root, ignore_errors=True)
            else:
                printer.note(f"demo folder kept: {root} (logs in {home / 'dev' / 'logs'})")
        printer.line("== demo " + ("COMPLETED" if code == 0 else "did not complete"))
        return code

    raise typer.Exit(_run(printer, body))


__all__ = ["Printer"]
