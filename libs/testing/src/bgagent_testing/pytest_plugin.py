"""Pytest fixtures: real NATS JetStream and real PostgreSQL, isolated per run and per test.

- ``nats_url`` (session): ``NATS_URL`` when set, a container when Docker answers,
  else a nats-server subprocess on a free port with a temporary store.
- ``database_url`` (session): a fresh database on ``DATABASE_URL``'s server, else a container when
  Docker answers, else the local PostgreSQL as user postgres; dropped at the end, and only that one
  (never a database this session did not create).
- ``nats_settings`` (per test): a stream name and subject prefix of its own, so
  tests never see each other's events.
- ``nats_cluster`` (per module, as tests kill its nodes): a 3-node JetStream cluster on loopback
  (``NatsCluster``: ``url`` is every node's URL, ``kill``/``restart`` a node, ``stream_leader``).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
from nats.aio.client import Client

from bgagent_contracts.subjects import (
    advisory_stream,
    comments_bucket,
    heartbeats_bucket,
    idempotency_bucket,
    traces_bucket,
)
from bgagent_eventstore import JetStreamEventStore, NatsSettings, connect, provision

from .servers import (
    NatsCluster,
    RestartableNats,
    drop_database,
    ensure_database,
    nats_for_tests,
    postgres_for_tests,
    with_database,
)


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    with nats_for_tests() as url:
        yield url


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """Three nats-servers (``n1``…``n3``) on free loopback ports, a store each; logs in a temp folder."""
    root = tmp_path_factory.mktemp("nats-cluster")
    with NatsCluster(3, base_dir=str(root / "nodes"), log_dir=str(root)) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    with postgres_for_tests() as url:
        yield url


@pytest.fixture(scope="session")
async def database_url(postgres_server_url: str) -> AsyncIterator[str]:
    url = with_database(postgres_server_url, f"bgagent_test_{secrets.token_hex(4)}")
    created = await ensure_database(url)
    try:
        yield url
    finally:
        if created:  # drop only the database this session created, never one that was there before
            await drop_database(url)


@pytest.fixture
def nats_settings(nats_url: str) -> NatsSettings:
    tag = secrets.token_hex(4)
    return NatsSettings(url=nats_url, stream=f"T{tag.upper()}", prefix=f"t{tag}")


@pytest.fixture
async def nc(nats_settings: NatsSettings) -> AsyncIterator[Client]:
    client = await connect(nats_settings.url, name="pytest")
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def provisioned(nc: Client, nats_settings: NatsSettings) -> AsyncIterator[NatsSettings]:
    """A provisioned stream for this test; deleted afterwards to keep the server small."""
    js = nc.jetstream()
    await provision(js, nats_settings)
    try:
        yield nats_settings
    finally:
        p = nats_settings.prefix
        for name in (
            nats_settings.stream,
            *(f"KV_{b}" for b in (comments_bucket(p), idempotency_bucket(p), heartbeats_bucket(p))),
            advisory_stream(nats_settings.stream),
            f"OBJ_{traces_bucket(p)}",
        ):
            with contextlib.suppress(Exception):  # best-effort cleanup: keep the session server small
                await js.delete_stream(name)


@pytest.fixture
def event_store(nc: Client, provisioned: NatsSettings) -> JetStreamEventStore:
    return JetStreamEventStore(nc, stream=provisioned.stream, prefix=provisioned.prefix)


@pytest.fixture
def restartable_nats() -> Iterator[RestartableNats]:
    """A nats-server of this test's own, running; ``stop()``/``start()`` make an outage."""
    server = RestartableNats()
    server.start()
    try:
        yield server
    finally:
        server.remove()
