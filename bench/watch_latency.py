"""Latency from a runner-side append to the event appearing in ``bgagent watch --output json``.

Starts its own nats-server, appends N milestone events to one task the way the
runner does (per-task optimistic concurrency + Nats-Msg-Id), paced a few ms
apart, while ``bgagent watch <task> --output json`` runs as a separate process.
Each event carries its send time; the reader timestamps the line when it shows
up on the watcher's stdout. Prints p50/p90/p99/max, next to a baseline measured
in the same run: the same appends followed in-process by the eventstore's
``follow()`` (no CLI, no process boundary, no JSON rendering).

Usage: python bench/watch_latency.py [--events 1000] [--pace-ms 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from ulid import ULID

from bgagent_contracts import (
    AgentFinished,
    Milestone,
    TaskCompleted,
    TaskStarted,
    TaskSubmitted,
    WorkspaceReady,
)
from bgagent_contracts.subjects import task_filter
from bgagent_eventstore import JetStreamEventStore, NatsSettings, connect, follow, provision
from bgagent_testing.servers import NatsServer


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def show(label: str, values: list[float]) -> dict[str, float]:
    row = {
        "p50": statistics.median(values),
        "p90": pct(values, 0.90),
        "p99": pct(values, 0.99),
        "max": max(values),
    }
    print(
        f"{label:<34} n={len(values):<5} p50={row['p50']:.2f} ms  p90={row['p90']:.2f} ms  "
        f"p99={row['p99']:.2f} ms  max={row['max']:.2f} ms"
    )
    return row


def now() -> datetime:
    return datetime.now(UTC)


async def start_task(store: JetStreamEventStore, task_id: str) -> int:
    submitted = TaskSubmitted(
        task_id=task_id,
        event_id=str(ULID()),
        ts=now(),
        actor="admission",
        user_id="bench",
        repo="bench/repo",
        description="latency bench",
    )
    started = TaskStarted(
        task_id=task_id, event_id=str(ULID()), ts=now(), actor="runner", attempt=1, runner_id="b"
    )
    ready = WorkspaceReady(
        task_id=task_id, event_id=str(ULID()), ts=now(), actor="runner", attempt=1, branch="b"
    )
    seqs = await store.append(task_id, [submitted, started, ready], expected_seq=0)
    return seqs[-1]


async def append_paced(store: JetStreamEventStore, task_id: str, last: int, n: int, pace: float) -> int:
    for i in range(n):
        event = Milestone(
            task_id=task_id,
            event_id=str(ULID()),
            ts=now(),
            actor="runner",
            attempt=1,
            name="bench",
            detail=f"{time.time_ns()}:{i}",
        )
        last = (await store.append(task_id, [event], expected_seq=last))[-1]
        await asyncio.sleep(pace)
    return last


async def finish(store: JetStreamEventStore, task_id: str, last: int) -> None:
    done = AgentFinished(
        task_id=task_id,
        event_id=str(ULID()),
        ts=now(),
        actor="runner",
        attempt=1,
        turns=1,
        stop_reason="end_turn",
    )
    completed = TaskCompleted(
        task_id=task_id, event_id=str(ULID()), ts=now(), actor="runner", attempt=1, result="no_changes"
    )
    await store.append(task_id, [done, completed], expected_seq=last)


async def baseline(store: JetStreamEventStore, settings: NatsSettings, n: int, pace: float) -> list[float]:
    task_id = str(ULID())
    last = await start_task(store, task_id)
    nc = await connect(settings.url, name="bench-follow")
    latencies: list[float] = []

    async def reader() -> None:
        async for d in follow(
            nc, stream=settings.stream, subject_filter=task_filter(task_id, settings.prefix), after_seq=last
        ):
            recv = time.time_ns()
            body = json.loads(d.data)
            if body.get("type") == "milestone":
                sent = int(body["detail"].split(":")[0])
                latencies.append((recv - sent) / 1e6)
                if len(latencies) == n:
                    return

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.2)
    await append_paced(store, task_id, last, n, pace)
    await asyncio.wait_for(task, 30)
    await nc.close()
    return latencies


async def via_cli(store: JetStreamEventStore, settings: NatsSettings, n: int, pace: float) -> list[float]:
    task_id = str(ULID())
    last = await start_task(store, task_id)
    env = dict(
        os.environ, NATS_URL=settings.url, BGAGENT_STREAM=settings.stream, BGAGENT_PREFIX=settings.prefix
    )
    exe = str(Path(sys.executable).parent / "bgagent")
    proc = await asyncio.create_subprocess_exec(
        exe,
        "watch",
        task_id,
        "--after",
        str(last),
        "--output",
        "json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    latencies: list[float] = []

    async def reader() -> None:
        assert proc.stdout is not None
        while len(latencies) < n:
            line = await proc.stdout.readline()
            if not line:
                return
            recv = time.time_ns()
            view = json.loads(line)
            if view["type"] == "milestone":
                latencies.append((recv - int(view["event"]["detail"].split(":")[0])) / 1e6)

    task = asyncio.create_task(reader())
    await asyncio.sleep(1.5)  # let the watcher start and subscribe before the first timed event
    last = await append_paced(store, task_id, last, n, pace)
    await asyncio.wait_for(task, 60)
    await finish(store, task_id, last)
    code = await asyncio.wait_for(proc.wait(), 30)
    if code != 0:
        raise SystemExit(f"watch exited {code}: {(await proc.stderr.read()).decode() if proc.stderr else ''}")
    return latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--pace-ms", type=float, default=2.0)
    args = parser.parse_args()
    with NatsServer() as server:
        settings = NatsSettings(url=server.url)
        nc = await connect(settings.url, name="bench")
        await provision(nc.jetstream(), settings)
        store = JetStreamEventStore(nc, stream=settings.stream, prefix=settings.prefix)
        print(f"watch latency: {args.events} events paced {args.pace_ms} ms, nats-server {server.url}")
        base = show(
            "baseline: in-process follow()", await baseline(store, settings, args.events, args.pace_ms / 1000)
        )
        cli = show(
            "bgagent watch --output json", await via_cli(store, settings, args.events, args.pace_ms / 1000)
        )
        print(
            f"ratio watch/baseline: p50 x{cli['p50'] / base['p50']:.1f}  p99 x{cli['p99'] / base['p99']:.1f}"
        )
        print(f"goal p99 <= 10 ms: {'met' if cli['p99'] <= 10 else 'NOT met'} (p99 {cli['p99']:.2f} ms)")
        await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
