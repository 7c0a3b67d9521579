"""A NATS cluster's URLs and replicas reach every place that needs them (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bgagent_cli.commands_ops import _nats_settings
from bgagent_cli.config import CliConfig, stack_file
from bgagent_cli.errors import CliError
from bgagent_cli.main import app
from bgagent_cli.stack import _is_nats, public_client
from bgagent_eventstore.settings import NatsSettings, check_url, nats_servers

CLUSTER = "nats://127.0.0.1:4222,nats://127.0.0.1:4223, nats://127.0.0.1:4224"


def test_a_nats_url_may_list_every_node_of_a_cluster() -> None:
    assert nats_servers(CLUSTER) == [
        "nats://127.0.0.1:4222",
        "nats://127.0.0.1:4223",
        "nats://127.0.0.1:4224",
    ]
    assert nats_servers("nats://a:4222") == ["nats://a:4222"]
    assert NatsSettings.from_env({"NATS_URL": CLUSTER}).url == CLUSTER
    with pytest.raises(ValueError, match="NATS_URL is empty"):
        nats_servers(" , ")
    with pytest.raises(ValueError, match="credentials"):
        check_url("nats://127.0.0.1:4222,nats://u:secret@127.0.0.1:4223")


def test_stack_json_keeps_each_cluster_url_without_a_password() -> None:
    client = {"nats_url": "nats://127.0.0.1:1,nats://u:pw@127.0.0.1:2", "token": "t", "replicas": "3"}
    assert public_client(client) == {
        "nats_url": "nats://127.0.0.1:1,nats://u@127.0.0.1:2",
        "replicas": "3",
    }


def test_cluster_nodes_stop_with_the_nats_server_after_the_services() -> None:
    assert _is_nats("nats-server")
    assert _is_nats("nats-n1")
    assert _is_nats("nats-n3")
    assert not _is_nats("query")
    assert not _is_nats("nats-nx")


def _record(home: Path, client: dict[str, str]) -> None:
    path = stack_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"client": client, "procs": []}))


def test_admin_commands_provision_at_the_stacks_replicas_or_the_environments(tmp_path: Path) -> None:
    _record(tmp_path, {"nats_url": CLUSTER, "replicas": "3"})
    config = CliConfig.load({"BGAGENT_HOME": str(tmp_path)})
    assert config.replicas == 3
    assert _nats_settings(config).replicas == 3
    assert nats_servers(_nats_settings(config).url)[2] == "nats://127.0.0.1:4224"
    assert CliConfig.from_client({"nats_url": CLUSTER, "replicas": "3"}).replicas == 3
    env = {"BGAGENT_HOME": str(tmp_path), "BGAGENT_STREAM_REPLICAS": "1"}
    assert _nats_settings(CliConfig.load(env)).replicas == 1
    _record(tmp_path, {"nats_url": "nats://127.0.0.1:4222"})
    assert _nats_settings(CliConfig.load({"BGAGENT_HOME": str(tmp_path)})).replicas == 1
    bad = CliConfig.load({"BGAGENT_HOME": str(tmp_path), "BGAGENT_STREAM_REPLICAS": "three"})
    with pytest.raises(CliError, match="BGAGENT_STREAM_REPLICAS"):
        _nats_settings(bad)


def test_dev_up_refuses_a_cluster_size_it_does_not_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["dev", "up", "--cluster", "2"], env={"BGAGENT_HOME": str(tmp_path)})
    assert result.exit_code != 0
    assert "--cluster 2" in result.stderr
    assert not stack_file(tmp_path).exists()
