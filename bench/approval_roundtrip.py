"""The approval round trip: ``approval_requested`` appended → the gated tool has run after an approval.

Starts its own nats-server and the scripted model server and runs the runner in-process. N times:
submits a task whose first turn writes ``bench.env`` with the text editor (the starter rule
``write_env_files`` gates it); an approver that acts at once (no human time) sees
``approval_requested`` on a core-NATS subscription and approves it the way ``bgagent approve``
does: ``POST /v1/tasks/{id}/approvals/{request_id}`` to a real admission process (``--via http``,
the default; the CLI's own start-up is not counted), or in-process with admission's logic (read
the log, fold, ``decide_approval``, append: ``--via store``). The runner resumes, runs the tool and
appends ``tool_result``, seen on another subscription. Prints p50/p99 of each leg and of the whole
system time, next to a baseline measured in the same run: a plain append → core-subscription
delivery round trip on the same server. Goal (issue 9): p99 ≤ 50 ms of system time.

Usage: python bench/approval_roundtrip.py [--runs 30] [--via http|store]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
from nats.aio.client import Client
from nats.aio.msg import Msg
from ulid import ULID

from bgagent_contracts import (
    ApprovalRequested,
    Milestone,
    TaskSubmitted,
    ToolResult,
    decide_approval,
    decode_recorded,
)
from bgagent_contracts.subjects import event_type_filter, task_subject
from bgagent_eventstore import ConcurrencyError, JetStreamEventStore, NatsSettings, connect, provision
from bgagent_runner import Runner, Settings
from bgagent_testing.model_server import ModelServer
from bgagent_testing.servers import NatsServer, free_port

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com"}
GIT_ENV |= {"GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com"}
GOAL_P99_MS = 50.0
APPROVERS = 8
"""Admin tokens the approver rotates through: admission allows 30 decisions a minute per user."""


def token(n: int) -> str:
    return f"bench-approver-{n % APPROVERS}"


@contextlib.contextmanager
def admission(nats_url: str, root: Path) -> Iterator[str]:
    """A real admission process on the bench's nats-server; yields its base URL."""
    port, ready = free_port(), root / "admission.ready"
    env = {
        **os.environ,
        "NATS_URL": nats_url,
        "BGAGENT_API_TOKENS": ",".join(f"{token(n)}=approver{n}:admin" for n in range(APPROVERS)),
        "BGAGENT_MANAGED_TOKENS": "false",
        "BGAGENT_ADMISSION_PORT": str(port),
        "BGAGENT_READY_FILE": str(ready),
        "BGAGENT_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen([sys.executable, "-m", "bgagent_admission"], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else ""
                raise SystemExit(f"admission did not start: {err[-2000:]}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


def pct(values: list[float], p: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def show(label: str, values: list[float]) -> None:
    print(
        f"{label:<58} n={len(values):<3} p50={pct(values, 50):7.2f} ms  p99={pct(values, 99):7.2f} ms  "
        f"max={max(values):7.2f} ms"
    )


def make_origin(root: Path) -> Path:
    repo = root / "repos" / "origin"
    repo.mkdir(parents=True)
    for args in (["init", "--quiet", "-b", "main"], ["add", "-A"], ["commit", "--quiet", "-m", "initial"]):
        if args[0] == "add":
            (repo / "README.md").write_text("# bench\n")
        subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True)
    return repo


async def baseline(nc: Client, store: JetStreamEventStore, nats: NatsSettings, runs: int) -> list[float]:
    """Append one event and time until a core subscription on its subject delivers it."""
    task_id = str(ULID())
    got: asyncio.Queue[float] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        got.put_nowait(time.perf_counter())

    sub = await nc.subscribe(task_subject(task_id, "milestone", nats.prefix), cb=on_msg)
    await nc.flush()
    out: list[float] = []
    seq = 0
    for n in range(runs):
        event = Milestone(
            task_id=task_id,
            event_id=str(ULID()),
            ts=datetime.now(UTC),
            actor="runner",
            attempt=1,
            name=f"m{n}",
        )
        started = time.perf_counter()
        seq = (await store.append(task_id, [event], expected_seq=seq))[-1]
        out.append((await asyncio.wait_for(got.get(), 5) - started) * 1000)
    await sub.unsubscribe()
    return out


class Approver:
    """Admission at machine speed: approves every request the moment it is seen."""

    def __init__(self, store: JetStreamEventStore, prefix: str, http: httpx.AsyncClient | None) -> None:
        self.store = store
        self.prefix = prefix
        self.http = http
        """With a client: approve through admission's HTTP API, as ``bgagent approve`` does."""
        self.decisions = 0
        self.seen: dict[str, tuple[float, float, ApprovalRequested]] = {}
        """task id → (wall time seen, perf time seen, the request)."""
        self.appended: dict[str, float] = {}
        """task id → perf time the approval's append returned."""
        self.tool_done: dict[str, tuple[float, float, ToolResult]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    async def on_request(self, msg: Msg) -> None:
        wall, perf = time.time(), time.perf_counter()
        request = decode_recorded(0, msg.subject, msg.data, self.prefix).event
        assert isinstance(request, ApprovalRequested)
        self.seen[request.task_id] = (wall, perf, request)
        task = asyncio.create_task(self.approve(request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def approve(self, request: ApprovalRequested) -> None:
        if self.http is not None:
            url = f"/v1/tasks/{request.task_id}/approvals/{request.request_id}"
            self.decisions += 1
            auth = {"Authorization": f"Bearer {token(self.decisions)}"}
            response = await self.http.post(url, json={"decision": "approve"}, headers=auth)
            if response.status_code != 202:
                raise SystemExit(f"approve answered {response.status_code}: {response.text[:500]}")
            self.appended[request.task_id] = time.perf_counter()
            return
        while True:
            log = await self.store.read(request.task_id)
            event = decide_approval(
                log.state(),
                task_id=request.task_id,
                request_id=request.request_id,
                user_id="bench",
                decision="approve",
                scope=None,
                reason=None,
                now=datetime.now(UTC),
                event_id=str(ULID()),
            )
            try:
                await self.store.append(request.task_id, [event], expected_seq=log.last_seq)
            except ConcurrencyError:
                continue
            self.appended[request.task_id] = time.perf_counter()
            return

    async def on_tool_result(self, msg: Msg) -> None:
        wall, perf = time.time(), time.perf_counter()
        result = decode_recorded(0, msg.subject, msg.data, self.prefix).event
        assert isinstance(result, ToolResult)
        self.tool_done.setdefault(result.task_id, (wall, perf, result))


async def roundtrips(runs: int, via: str) -> dict[str, list[float]]:
    legs: dict[str, list[float]] = {k: [] for k in ("notify", "decide", "resume", "runner", "total", "base")}
    with (
        tempfile.TemporaryDirectory(prefix="bench-approval-") as tmp,
        NatsServer() as server,
        ModelServer() as model,
    ):
        root = Path(tmp)
        origin = make_origin(root)
        nats = NatsSettings(url=server.url)
        nc = await connect(nats.url, name="bench")
        await provision(nc.jetstream(), nats)
        store = JetStreamEventStore(nc, stream=nats.stream, prefix=nats.prefix)
        runner_nc = await connect(nats.url, name="bench-runner")
        settings = Settings(
            nats=nats,
            runner_id="bench-runner",
            slots=1,
            work_dir=str(root / "work"),
            local_repo_roots=(str(root / "repos"),),
            anthropic_api_key="bench-key",
            anthropic_base_url=model.url,
            task_timeout_s=None,
            shutdown_grace_s=0.0,
        )
        runner = Runner(settings, nc=runner_nc)
        runner_task = asyncio.create_task(runner.run())
        await asyncio.wait_for(runner.ready.wait(), timeout=10)
        stack = contextlib.ExitStack()
        http: httpx.AsyncClient | None = None
        if via == "http":
            base = stack.enter_context(admission(nats.url, root))
            http = httpx.AsyncClient(base_url=base, timeout=10)
        approver = Approver(store, nats.prefix, http)
        subs = [
            await nc.subscribe(event_type_filter("approval_requested", nats.prefix), cb=approver.on_request),
            await nc.subscribe(event_type_filter("tool_result", nats.prefix), cb=approver.on_tool_result),
        ]
        await nc.flush()
        try:
            legs["base"] = await baseline(nc, store, nats, runs)
            for _ in range(runs + 1):  # the first run warms up (imports, first clone): not counted
                tag = f"bench-approval-{ULID()}"
                create = {"command": "create", "path": "bench.env", "file_text": "MODE=bench\n"}
                model.add_script(
                    tag,
                    [
                        {"tool_uses": [{"name": "str_replace_based_edit_tool", "input": create}]},
                        {"text": "ok"},
                    ],
                )
                task_id = str(ULID())
                submitted = TaskSubmitted(
                    task_id=task_id,
                    event_id=str(ULID()),
                    ts=datetime.now(UTC),
                    actor="admission",
                    user_id="bench",
                    repo=str(origin),
                    description=tag,
                )
                await store.append(task_id, [submitted], expected_seq=0)
                deadline = time.monotonic() + 30
                while task_id not in approver.tool_done or task_id not in approver.appended:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"task {task_id}: no approved tool result within 30 s")
                    await asyncio.sleep(0.005)
                while not ((state := (await store.read(task_id)).state()) and state.terminal):
                    await asyncio.sleep(0.01)
                if state.status.value != "COMPLETED":
                    raise SystemExit(f"task {task_id} ended {state.status.value}: {state.error_message}")
                seen_wall, seen_perf, request = approver.seen[task_id]
                done_wall, done_perf, result = approver.tool_done[task_id]
                if result.is_error:
                    raise SystemExit(f"task {task_id}: the approved tool failed: {result.output_preview}")
                legs["notify"].append((seen_wall - request.ts.timestamp()) * 1000)
                legs["decide"].append((approver.appended[task_id] - seen_perf) * 1000)
                legs["resume"].append((done_perf - approver.appended[task_id]) * 1000)
                legs["total"].append((done_wall - request.ts.timestamp()) * 1000)
                legs["runner"].append((result.ts - request.ts).total_seconds() * 1000)
            for key in ("notify", "decide", "resume", "runner", "total"):
                legs[key] = legs[key][1:]
            await asyncio.sleep(0.5)  # let the last job finish its bookkeeping before the stop
        finally:
            for sub in subs:
                await sub.unsubscribe()
            runner.stop()
            await asyncio.wait_for(runner_task, timeout=30)
            if http is not None:
                await http.aclose()
            stack.close()
            await runner_nc.close()
            await nc.close()
    return legs


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--via", choices=("http", "store"), default="http")
    args = parser.parse_args()
    logging.disable(logging.INFO)  # the runner's per-task lines
    legs = await roundtrips(args.runs, args.via)
    how = "admission's HTTP API" if args.via == "http" else "admission's logic in-process"
    print(f"approval round trip ({args.runs} runs; runner in-process, approvals through {how})")
    show("baseline: append → core-subscription delivery", legs["base"])
    show("approval_requested.ts → seen by the approver", legs["notify"])
    show("seen → approval accepted (202, or the append returned)", legs["decide"])
    show("approval appended → tool_result seen (resume, run, append)", legs["resume"])
    show("approval_requested.ts → tool_result.ts (runner clock)", legs["runner"])
    show("system time: approval_requested.ts → tool_result seen", legs["total"])
    p99 = pct(legs["total"], 99)
    print(f"goal p99 ≤ {GOAL_P99_MS:.0f} ms: {'met' if p99 <= GOAL_P99_MS else 'NOT met'} ({p99:.2f} ms)")


if __name__ == "__main__":
    asyncio.run(main())
