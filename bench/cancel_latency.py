"""Latency of a cancel for a task in a long tool call: ``cancel_requested`` → ``task_cancelled``.

Starts its own nats-server and the scripted model server, runs the runner in-process
(default settings: the command runs in the bwrap sandbox), and N times:
submits a task whose first turn runs ``bash: sleep 30``, waits until that command's
process is running, appends ``cancel_requested`` and times until ``task_cancelled`` is
in the log (both events' ``ts``, stamped on this machine, and the append → seen wall time).
Prints the figures next to a baseline measured in the same run: the time to SIGKILL and
reap a plain ``bash -c 'sleep 30'`` process group (no runner, no NATS, no sandbox).

Usage: python bench/cancel_latency.py [--runs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import logging
import os
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ulid import ULID

from bgagent_contracts import CancelRequested, TaskCancelled, TaskSubmitted
from bgagent_eventstore import JetStreamEventStore, NatsSettings, connect, provision
from bgagent_runner import Runner, Settings
from bgagent_testing.model_server import ModelServer
from bgagent_testing.servers import NatsServer

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com"}
GIT_ENV |= {"GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com"}


def show(label: str, values: list[float]) -> None:
    print(
        f"{label:<48} n={len(values):<3} p50={statistics.median(values):7.1f} ms  "
        f"min={min(values):7.1f} ms  max={max(values):7.1f} ms"
    )


def running(marker: str) -> bool:
    """A live process on this machine carries ``marker`` on its command line (host view)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    return True
            except OSError:
                continue
    return False


async def poll(pred: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


async def baseline(runs: int) -> list[float]:
    """SIGKILL a running ``sleep`` process group and reap it: the floor of any cancel."""
    out: list[float] = []
    for _ in range(runs):
        marker = f"bench-baseline-{ULID()}"
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", f"sleep 30; : {marker}", start_new_session=True, stdout=subprocess.DEVNULL
        )
        await poll(functools.partial(running, marker), 10, "the sleep to start")
        started = time.perf_counter()
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        out.append((time.perf_counter() - started) * 1000)
    return out


def make_origin(root: Path) -> Path:
    repo = root / "repos" / "origin"
    repo.mkdir(parents=True)
    for args in (["init", "--quiet", "-b", "main"], ["add", "-A"], ["commit", "--quiet", "-m", "initial"]):
        if args[0] == "add":
            (repo / "README.md").write_text("# bench\n")
        subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True)
    return repo


async def cancels(runs: int) -> tuple[list[float], list[float]]:
    by_ts: list[float] = []
    by_clock: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-cancel-") as tmp,
        NatsServer() as server,
        ModelServer() as model,
    ):
        root = Path(tmp)
        origin = make_origin(root)
        nats = NatsSettings(url=server.url)
        nc = await connect(nats.url, name="bench")
        await provision(nc.jetstream(), nats)
        store = JetStreamEventStore(nc, stream=nats.stream, prefix=nats.prefix)
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
        runner = Runner(settings, nc=nc)
        runner_task = asyncio.create_task(runner.run())
        await asyncio.wait_for(runner.ready.wait(), timeout=10)
        try:
            for _ in range(runs):
                tag = f"bench-cancel-{ULID()}"
                model.add_script(
                    tag, [{"tool_uses": [{"name": "bash", "input": {"command": f"sleep 30; : {tag}"}}]}]
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
                await poll(functools.partial(running, tag), 30, "the long tool call to start")
                last = (await store.read(task_id)).state()
                if last is None:
                    raise SystemExit(f"task {task_id} has no state")
                cancel = CancelRequested(
                    task_id=task_id,
                    event_id=str(ULID()),
                    ts=datetime.now(UTC),
                    actor="admission",
                    requested_by="bench",
                    reason="bench",
                )
                started = time.perf_counter()
                await store.append(task_id, [cancel], expected_seq=last.last_seq)

                async def cancelled(t: str = task_id) -> TaskCancelled | None:
                    last_event = (await store.read(t)).records[-1].event
                    return last_event if isinstance(last_event, TaskCancelled) else None

                await poll(cancelled, 30, "task_cancelled")
                by_clock.append((time.perf_counter() - started) * 1000)
                done = await cancelled()
                if done is None:
                    raise SystemExit(f"task {task_id} is no longer cancelled")
                by_ts.append((done.ts - cancel.ts).total_seconds() * 1000)
            await asyncio.sleep(0.5)  # let the last job finish its bookkeeping before the stop
        finally:
            runner.stop()
            await asyncio.wait_for(runner_task, timeout=30)
            await nc.close()
    return by_ts, by_clock


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    logging.disable(logging.INFO)  # the runner's per-task lines
    base = await baseline(args.runs)
    by_ts, by_clock = await cancels(args.runs)
    print(f"cancel during `sleep 30` ({args.runs} runs; runner in-process, one slot, sandbox bwrap)")
    show("baseline: SIGKILL + reap a `sleep` group", base)
    show("cancel_requested.ts → task_cancelled.ts", by_ts)
    show("append cancel → read task_cancelled (5 ms poll)", by_clock)


if __name__ == "__main__":
    asyncio.run(main())
