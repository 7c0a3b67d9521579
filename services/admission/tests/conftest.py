"""Fixtures: the real admission app over the real JetStream stream and KV bucket of this test."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client

from bgagent_admission.api import create_app
from bgagent_admission.handlers import Admission
from bgagent_admission.idempotency import KvIdempotencyStore
from bgagent_contracts.auth import TokenTable
from bgagent_contracts.subjects import idempotency_bucket
from bgagent_eventstore import JetStreamEventStore, NatsSettings

TOKENS = "alice-token=alice,bob-token=bob,root-token=root:admin"
ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}
ROOT = {"Authorization": "Bearer root-token"}


@pytest.fixture
async def admission(nc: Client, provisioned: NatsSettings, event_store: JetStreamEventStore) -> Admission:
    kv = await nc.jetstream().key_value(idempotency_bucket(provisioned.prefix))
    return Admission(event_store, KvIdempotencyStore(kv), prefix=provisioned.prefix)


async def _client(admission: Admission, nc: Client, *, local_roots: tuple[str, ...]) -> httpx.AsyncClient:
    async def ready() -> bool:
        return bool(nc.is_connected)

    app = create_app(admission, tokens=TokenTable.parse(TOKENS), ready=ready, local_roots=local_roots)
    # ASGITransport runs the app on this event loop, so requests can really run concurrently
    # and share the test's NATS connection (Litestar's test client runs apps on a portal thread).
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://admission")


@pytest.fixture
async def client(admission: Admission, nc: Client) -> AsyncIterator[httpx.AsyncClient]:
    async with await _client(admission, nc, local_roots=()) as c:
        yield c


@pytest.fixture
def repo_root(tmp_path: Path) -> Path:
    """The one local repository root of ``local_client``: ``<tmp>/repos``, holding a git repo ``demo``."""
    root = tmp_path / "repos"
    (root / "demo").mkdir(parents=True)
    subprocess.run(["git", "init", "--quiet", str(root / "demo")], check=True, capture_output=True)
    return root


@pytest.fixture
async def local_client(admission: Admission, nc: Client, repo_root: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An app whose only local repository root is ``repo_root``."""
    async with await _client(admission, nc, local_roots=(str(repo_root),)) as c:
        yield c


@pytest.fixture
async def stream_count(nc: Client, provisioned: NatsSettings) -> Callable[[], Awaitable[int]]:
    """``await stream_count()``: how many messages the test's stream holds."""
    js = nc.jetstream()

    async def count() -> int:
        info = await js.stream_info(provisioned.stream)
        return int(info.state.messages)

    return count
