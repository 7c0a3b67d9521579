"""The 3-node cluster starter: R3 provisioning; clients and appends fail over when the stream leader dies."""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ulid import ULID

from bgagent_contracts import TaskSubmitted
from bgagent_contracts.subjects import comments_bucket, traces_bucket
from bgagent_eventstore import JetStreamEventStore, NatsSettings, connect, provision
from bgagent_eventstore.provision import replicated_streams
from bgagent_testing.servers import NatsCluster, stream_leader

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _submitted(task_id: str) -> TaskSubmitted:
    return TaskSubmitted(
        task_id=task_id,
        event_id=str(ULID()),
        ts=datetime.now(UTC),
        actor="admission",
        user_id="u",
        repo="acme/calc",
        description="fix it",
    )


def test_nodes_have_their_own_store_ports_and_a_private_config(nats_cluster: NatsCluster) -> None:
    assert nats_cluster.names == ["n1", "n2", "n3"]
    assert len(nats_cluster.urls) == 3
    assert nats_cluster.url == ",".join(nats_cluster.urls)
    nodes = [nats_cluster.node(n) for n in nats_cluster.names]
    assert len({n.port for n in nodes}) == 3
    assert len({n.store_dir for n in nodes}) == 3
    assert len(set(nats_cluster.route_ports.values())) == 3
    assert nats_cluster.meta_leader() in nats_cluster.names
    for node in nodes:
        assert node.config_file is not None
        assert Path(node.config_file).stat().st_mode & 0o077 == 0  # holds the route password
        assert "password" not in " ".join(os.fsdecode(a) for a in _cmdline(node.pid))


def _cmdline(pid: int | None) -> list[bytes]:
    assert pid is not None
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


async def test_provisioning_at_r3_and_appends_survive_the_stream_leader_being_killed(
    nats_cluster: NatsCluster,
) -> None:
    tag = secrets.token_hex(4)
    settings = NatsSettings(url=nats_cluster.url, stream=f"C{tag.upper()}", prefix=f"c{tag}", replicas=3)
    nc = await connect(settings.url, name="pytest-cluster")
    try:
        js = nc.jetstream()
        await provision(js, settings)
        info = await js.stream_info(settings.stream)
        assert info.config.num_replicas == 3
        assert info.cluster is not None
        assert len(info.cluster.replicas or []) == 2  # the two followers
        for name in (f"KV_{comments_bucket(settings.prefix)}", f"OBJ_{traces_bucket(settings.prefix)}"):
            assert (await js.stream_info(name)).config.num_replicas == 3, name

        store = JetStreamEventStore(nc, stream=settings.stream, prefix=settings.prefix, outage_s=30.0)
        first = str(ULID())
        [seq1] = await store.append(first, [_submitted(first)], expected_seq=0)

        leader = await stream_leader(js, settings.stream)
        nats_cluster.kill(leader)
        second = str(ULID())
        # retried through the election; the client moves to a live node on its own
        [seq2] = await store.append(second, [_submitted(second)], expected_seq=0)
        assert seq2 > seq1
        new_leader = await stream_leader(js, settings.stream)
        assert new_leader != leader
        assert (await store.read(first)).last_seq == seq1

        nats_cluster.restart(leader)
        assert nats_cluster.alive(leader)
        assert nats_cluster.meta_leader() in nats_cluster.names
    finally:
        await nc.close()


async def test_provisioning_again_with_more_replicas_scales_every_stream_and_bucket(
    nats_cluster: NatsCluster,
) -> None:
    tag = secrets.token_hex(4)
    r1 = NatsSettings(url=nats_cluster.url, stream=f"S{tag.upper()}", prefix=f"s{tag}", replicas=1)
    r3 = NatsSettings(url=nats_cluster.url, stream=r1.stream, prefix=r1.prefix, replicas=3)
    nc = await connect(r1.url, name="pytest-cluster")
    try:
        js = nc.jetstream()
        await provision(js, r1)
        report = await provision(js, r3)
        names = [r1.stream, *replicated_streams(r3)]
        for name in names:
            assert (await js.stream_info(name)).config.num_replicas == 3, name
        assert len(report.updated) == len(names)
        again = await provision(js, r3)
        assert again.updated == []
    finally:
        await nc.close()
