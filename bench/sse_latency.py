"""Latency from a runner-side append to the event appearing in ``bgagent watch`` over SSE and over NATS.

Starts its own nats-server, a scratch PostgreSQL database (on DATABASE_URL's server) and the query
service in this process (projector + HTTP under uvicorn). For each transport, appends N milestone
events to a fresh task the way the runner does, paced a few ms apart, while
``bgagent watch <task> --transport <t> --output json`` runs as a separate process. Each event
carries its send time; the reader timestamps the line when it shows up on the watcher's stdout.
Prints p50/p90/p99/max for both transports in the same run (the SSE path adds query's follow()
and an HTTP hop; the appender and query share this process's event loop).

Usage: python bench/sse_latency.py [--events 1000] [--pace-ms 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from pathlib import Path

import asyncpg
import uvicorn
from ulid import ULID
from watch_latency import append_paced, finish, show, start_task

from bgagent_contracts.auth import TokenTable
from bgagent_eventstore import JetStreamEventStore, NatsSettings, connect, provision
from bgagent_query.api import create_app
from bgagent_query.migrations import migrate
from bgagent_query.projector import Projector
from bgagent_query.watch import ProjectionWatch
from bgagent_testing.servers import (
    NatsServer,
    database_url_from_env,
    drop_database,
    ensure_database,
    free_port,
    with_database,
)

TOKEN = "bench-token"


async def via_cli(
    store: JetStreamEventStore, transport: str, env: dict[str, str], n: int, pace: float
) -> list[float]:
    task_id = str(ULID())
    last = await start_task(store, task_id)
    exe = str(Path(sys.executable).parent / "bgagent")
    proc = await asyncio.create_subprocess_exec(
        exe,
        "watch",
        task_id,
        "--after",
        str(last),
        "--transport",
        transport,
        "--output",
        "json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
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
    if code != 0 or len(latencies) != n:
        err = (await proc.stderr.read()).decode() if proc.stderr else ""
        raise SystemExit(f"watch --transport {transport} exited {code} after {len(latencies)} events: {err}")
    return latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--pace-ms", type=float, default=2.0)
    args = parser.parse_args()
    pace = args.pace_ms / 1000
    db_url = with_database(database_url_from_env(), f"bgagent_bench_{secrets.token_hex(4)}")
    await ensure_database(db_url)
    try:
        with NatsServer() as server:
            settings = NatsSettings(url=server.url)
            nc = await connect(settings.url, name="bench")
            await provision(nc.jetstream(), settings)
            store = JetStreamEventStore(nc, stream=settings.stream, prefix=settings.prefix)
            pool = await asyncpg.create_pool(db_url, min_size=1, max_size=8)
            async with pool.acquire() as conn:
                await migrate(conn)
            watch = ProjectionWatch(pool, db_url)
            await watch.start()
            projector = Projector(pool, nc, stream=settings.stream, prefix=settings.prefix)
            projecting = asyncio.create_task(projector.run())

            async def ready() -> bool:
                return True

            app = create_app(
                pool=pool,
                watch=watch,
                tokens=TokenTable.parse(f"{TOKEN}=bench"),
                prefix=settings.prefix,
                ready=ready,
                nc=nc,
                stream=settings.stream,
            )
            port = free_port()
            http = uvicorn.Server(
                uvicorn.Config(
                    app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off"
                )
            )
            serving = asyncio.create_task(http.serve())
            try:
                while not http.started:
                    await asyncio.sleep(0.01)
                env = dict(
                    os.environ,
                    BGAGENT_STREAM=settings.stream,
                    BGAGENT_PREFIX=settings.prefix,
                    BGAGENT_QUERY_URL=f"http://127.0.0.1:{port}",
                    BGAGENT_TOKEN=TOKEN,
                )
                env.pop("NATS_URL", None)
                print(
                    f"watch latency, SSE vs NATS: {args.events} events paced {args.pace_ms} ms, "
                    f"nats-server {server.url}, query on :{port}"
                )
                nats_row = show(
                    "bgagent watch --transport nats",
                    await via_cli(store, "nats", {**env, "NATS_URL": settings.url}, args.events, pace),
                )
                sse_row = show(
                    "bgagent watch --transport sse", await via_cli(store, "sse", env, args.events, pace)
                )
                p50, p99 = sse_row["p50"] / nats_row["p50"], sse_row["p99"] / nats_row["p99"]
                print(f"ratio sse/nats: p50 x{p50:.1f}  p99 x{p99:.1f}")
                print(
                    f"goal p99 <= 10 ms over SSE: {'met' if sse_row['p99'] <= 10 else 'NOT met'} "
                    f"(p99 {sse_row['p99']:.2f} ms)"
                )
            finally:
                http.should_exit = True
                http.force_exit = True
                await serving
                projecting.cancel()
                await asyncio.wait({projecting}, timeout=5)
                await watch.close()
                await pool.close()
                await nc.close()
    finally:
        await drop_database(db_url)


if __name__ == "__main__":
    asyncio.run(main())
