"""``python -m bgagent_query`` as a real process: SIGKILL mid-projection, restart, compare with a rebuild."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client

from bgagent_eventstore import JetStreamEventStore, NatsSettings
from bgagent_query.rebuild import rebuild
from bgagent_testing.servers import free_port

pytestmark = pytest.mark.integration


class QueryProcess:
    def __init__(self, env: dict[str, str], ready_file: Path, port: int) -> None:
        self.env = env
        self.ready_file = ready_file
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.ready_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "bgagent_query"], env=self.env)

    async def ready(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, f"query exited with {self.proc.returncode}"
        return self.ready_file.exists()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        return self.proc.wait(timeout=10)


@pytest.fixture
def query_process(db_url: str, provisioned: NatsSettings, tmp_path: Path) -> Iterator[QueryProcess]:
    port = free_port()
    env = {
        **os.environ,
        "NATS_URL": provisioned.url,
        "BGAGENT_STREAM": provisioned.stream,
        "BGAGENT_PREFIX": provisioned.prefix,
        "DATABASE_URL": db_url,
        "BGAGENT_API_TOKENS": "tok-alice=alice",
        "BGAGENT_QUERY_PORT": str(port),
        "BGAGENT_READY_FILE": str(tmp_path / "ready"),
        "BGAGENT_PROJECTOR_BATCH_MAX": "10",
        "BGAGENT_LOG_LEVEL": "WARNING",
    }
    process = QueryProcess(env, tmp_path / "ready", port)
    try:
        yield process
    finally:
        with contextlib.suppress(Exception):
            process.stop()


@pytest.mark.faults
async def test_sigkill_mid_projection_then_restart_equals_rebuild(
    query_process: QueryProcess,
    event_store: JetStreamEventStore,
    pool: Any,
    nc: Client,
    provisioned: NatsSettings,
    q: Any,
) -> None:
    for _ in range(60):
        await q.append_all(event_store, q.lifecycle(turns=2))  # a backlog of 60 x 15 events
    backlog = await event_store.last_stream_seq()
    query_process.start()
    await q.wait_until(query_process.ready, timeout=15)
    writer = asyncio.create_task(_write(event_store, q, 20))
    await q.wait_until(lambda: _between(pool, q, 0, backlog))
    query_process.kill()  # SIGKILL while batches are being committed
    killed_at = await q.checkpoint(pool)
    await writer
    last = await event_store.last_stream_seq()
    assert 0 < killed_at < last

    query_process.start()
    await q.wait_until(query_process.ready, timeout=15)
    await q.wait_until(lambda: _between(pool, q, last - 1, last + 1), timeout=10)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{query_process.port}") as client:
        resp = await client.get("/readyz")
        assert resp.status_code == 200
    assert query_process.stop() == 0  # SIGTERM: clean shutdown

    incremental = await q.snapshot(pool)
    seqs = [row[0] for row in incremental["task_events"]]
    assert seqs == list(range(1, last + 1))  # none missing, none doubled
    async with pool.acquire() as conn:
        await rebuild(conn, nc, stream=provisioned.stream, prefix=provisioned.prefix)
    assert await q.snapshot(pool) == incremental


async def _between(pool: Any, q: Any, low: int, high: int) -> bool:
    return bool(low < await q.checkpoint(pool) < high)


async def _write(event_store: JetStreamEventStore, q: Any, tasks: int) -> None:
    for _ in range(tasks):
        await q.append_all(event_store, q.lifecycle(turns=1))
