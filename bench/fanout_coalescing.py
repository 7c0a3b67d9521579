"""How many GitHub comment writes the fanout makes for a burst of task events.

Starts its own nats-server and the fake GitHub, runs the fanout in-process, and for N
tasks appends a 20-turn history (86 events, submitted → completed) as fast as the runner
could: once as a single append, once as one append per event. Counts the comment writes
(POST + PATCH) until the comment shows the final state and prints edits per event and the
time from the last append to the final state, next to a baseline measured in the same
run: the same bursts through a fanout that takes one message per batch and does not
linger (``batch_max=1, linger_s=0``), i.e. one edit per event.

Usage: python bench/fanout_coalescing.py [--tasks 5] [--linger-s 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ulid import ULID

from bgagent_contracts import (
    AgentFinished,
    AgentTurn,
    CostUpdated,
    Event,
    PrOpened,
    TaskCompleted,
    TaskStarted,
    TaskSubmitted,
    ToolCalled,
    ToolResult,
    WorkspaceReady,
)
from bgagent_contracts.subjects import comments_bucket
from bgagent_eventstore import JetStreamEventStore, NatsSettings, connect, provision
from bgagent_fanout.comments import CommentIds, CommentKeeper
from bgagent_fanout.consumer import Fanout
from bgagent_fanout.github import GitHubClient
from bgagent_testing.fake_github import FakeGitHub
from bgagent_testing.servers import NatsServer

TOKEN = "ghs_bench_" + secrets.token_hex(8)
TURNS = 20


def history(task_id: str, issue: int) -> list[Event]:
    clock = datetime.now(UTC)

    def base(runner: bool = True) -> dict[str, Any]:
        nonlocal clock
        clock += timedelta(milliseconds=1)
        b: dict[str, Any] = {"task_id": task_id, "event_id": str(ULID()), "ts": clock}
        b["actor"] = "runner" if runner else "admission"
        if runner:
            b["attempt"] = 1
        return b

    pr = "https://github.com/acme/widgets/pull/2"
    events: list[Event] = [
        TaskSubmitted(**base(runner=False), user_id="bench", repo="acme/widgets", issue_number=issue),
        TaskStarted(**base(), runner_id="r1"),
        WorkspaceReady(**base(), branch=f"bgagent/{task_id}"),
    ]
    for n in range(1, TURNS + 1):
        events += [
            AgentTurn(**base(), turn=n, model="claude"),
            ToolCalled(**base(), turn=n, tool_use_id=f"t{n}", tool_name="bash", input_preview="ls"),
            ToolResult(
                **base(), turn=n, tool_use_id=f"t{n}", tool_name="bash", is_error=False, output_preview="a"
            ),
            CostUpdated(
                **base(), turn=n, input_tokens=10, output_tokens=5, cost_usd=0.01, total_cost_usd=0.01 * n
            ),
        ]
    events += [
        AgentFinished(**base(), turns=TURNS, stop_reason="end_turn"),
        PrOpened(**base(), pr_number=2, pr_url=pr, branch=f"bgagent/{task_id}"),
        TaskCompleted(**base(), result="pr_opened", pr_url=pr),
    ]
    return events


async def run_bursts(
    nats: NatsSettings, gh: FakeGitHub, tasks: int, *, batch_max: int, linger_s: float, one_append: bool
) -> tuple[list[float], list[float]]:
    """Per task: edits per event, and ms from the last append to the final state on GitHub."""
    nc = await connect(nats.url, name="bench-fanout")
    store = JetStreamEventStore(nc, stream=nats.stream, prefix=nats.prefix)
    stopping = asyncio.Event()
    github = GitHubClient(gh.api_url, TOKEN, stopping=stopping)
    kv = await nc.jetstream().key_value(comments_bucket(nats.prefix))
    fanout = Fanout(
        nc,
        stream=nats.stream,
        prefix=nats.prefix,
        store=store,
        keeper=CommentKeeper(github, CommentIds(kv)),
        batch_max=batch_max,
        linger_s=linger_s,
    )
    running = asyncio.create_task(fanout.run(stopping))
    await asyncio.wait_for(fanout.bound(), timeout=10)
    per_event: list[float] = []
    settle_ms: list[float] = []
    try:
        for _ in range(tasks):
            issue = gh.create_issue("acme", "widgets")
            task_id = str(ULID())
            events = history(task_id, issue)
            if one_append:
                await store.append(task_id, events, expected_seq=0)
            else:
                last = 0
                for event in events:
                    last = (await store.append(task_id, [event], expected_seq=last))[-1]
            appended = time.perf_counter()
            deadline = time.monotonic() + 120
            while True:
                mine = [c for c in gh.comments(include_deleted=True) if task_id in c["body"]]
                if (
                    mine
                    and "### bgagent — COMPLETED" in mine[0]["body"]
                    and f"| Turn | {TURNS}/" in mine[0]["body"]
                ):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"the final state of {task_id} never reached GitHub")
                await asyncio.sleep(0.01)
            settle_ms.append((time.perf_counter() - appended) * 1000)
            per_event.append(len(mine[0]["history"]) / len(events))
    finally:
        stopping.set()
        await asyncio.wait_for(running, timeout=30)
        await github.aclose()
        await nc.close()
    return per_event, settle_ms


def show(label: str, per_event: list[float], settle_ms: list[float]) -> None:
    edits = [round(p * (4 * TURNS + 6)) for p in per_event]
    print(
        f"{label:<50} edits/task min={min(edits):<3} p50={statistics.median(edits):<5g} max={max(edits):<3} "
        f"edits/event p50={statistics.median(per_event):.3f}  final state after p50="
        f"{statistics.median(settle_ms):.0f} ms max={max(settle_ms):.0f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--linger-s", type=float, default=0.2, help="the fanout's BGAGENT_FANOUT_LINGER_S")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    with (
        tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp,
        NatsServer() as server,
        FakeGitHub(Path(tmp) / "github", token=TOKEN) as gh,
    ):
        gh.create_repo("acme", "widgets")
        nats = NatsSettings(url=server.url)
        nc = await connect(nats.url, name="bench")
        await provision(nc.jetstream(), nats)
        await nc.close()
        n = 4 * TURNS + 6
        print(
            f"fanout: {args.tasks} tasks x {n} events ({TURNS} turns), fake GitHub, linger {args.linger_s}s"
        )
        for one_append in (True, False):
            how = "one append" if one_append else "an append per event"
            base = await run_bursts(nats, gh, args.tasks, batch_max=1, linger_s=0.0, one_append=one_append)
            show(f"baseline (batch 1, no linger), {how}", *base)
            got = await run_bursts(
                nats, gh, args.tasks, batch_max=100, linger_s=args.linger_s, one_append=one_append
            )
            show(f"fanout (batch 100, linger), {how}", *got)


if __name__ == "__main__":
    asyncio.run(main())
