"""The CLI side of the NATS users: ``admin nats-config``, and which user ``watch``/``admin`` connect as."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bgagent_cli.config import CliConfig
from bgagent_cli.errors import CliError
from bgagent_cli.main import app
from bgagent_cli.stack import Stack, StackSpec
from bgagent_eventstore import NatsAuth
from bgagent_eventstore.nats_auth import USERS


def _stack_home(tmp_path: Path) -> Path:
    """A home whose stack.json names a NATS users folder, as ``dev up`` writes it."""
    record = {
        "client": {"nats_url": "nats://127.0.0.1:4333", "nats_auth_dir": str(tmp_path / "dev" / "nats-auth")}
    }
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "stack.json").write_text(json.dumps(record))
    return tmp_path


def test_nats_commands_use_the_stacks_operator_and_admin(tmp_path: Path) -> None:
    config = CliConfig.load({"BGAGENT_HOME": str(_stack_home(tmp_path))})
    folder = tmp_path / "dev" / "nats-auth"
    assert config.nats_auth_as("operator") == NatsAuth(
        user="operator", password_file=str(folder / "operator.password")
    )
    assert config.nats_auth_as("admin") == NatsAuth(
        user="admin", password_file=str(folder / "admin.password")
    )


def test_credentials_or_a_url_in_the_environment_win_over_the_stack(tmp_path: Path) -> None:
    home = str(_stack_home(tmp_path))
    env = {"BGAGENT_HOME": home, "NATS_USER": "ops", "NATS_PASSWORD_FILE": "/secrets/ops"}
    assert CliConfig.load(env).nats_auth_as("admin") == NatsAuth(user="ops", password_file="/secrets/ops")
    # another server than the stack's: never send it the stack's passwords
    elsewhere = CliConfig.load({"BGAGENT_HOME": home, "NATS_URL": "nats://prod:4222"})
    assert elsewhere.nats_auth_as("operator").anonymous


def test_broken_nats_credentials_fail_only_the_nats_commands(tmp_path: Path) -> None:
    config = CliConfig.load({"BGAGENT_HOME": str(tmp_path), "NATS_USER": "ops"})  # no password
    assert config.api_url is None  # loading still works for HTTP commands
    with pytest.raises(CliError, match="NATS_PASSWORD_FILE"):
        config.nats_auth_as("operator")


def test_admin_nats_config_writes_private_files_and_keeps_passwords_unless_rotated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BGAGENT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BGAGENT_STREAM", "TASKS_T")
    monkeypatch.setenv("BGAGENT_PREFIX", "tp")
    folder = tmp_path / "nats"
    runner = CliRunner()

    first = runner.invoke(app, ["admin", "nats-config", str(folder), "-o", "json"])
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert sorted(report["new_passwords"]) == sorted(USERS)
    assert set(report["password_files"]) == set(USERS)
    config = Path(report["config"]).read_text()
    assert '"tp.task.*.task_submitted"' in config  # the stream and prefix of the environment
    assert '"$JS.API.STREAM.INFO.TASKS_T"' in config
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o600}
    passwords = {u: Path(f).read_text() for u, f in report["password_files"].items()}
    assert all(p.strip() not in config for p in passwords.values())

    again = json.loads(runner.invoke(app, ["admin", "nats-config", str(folder), "-o", "json"]).stdout)
    assert again["new_passwords"] == []
    assert {u: Path(f).read_text() for u, f in again["password_files"].items()} == passwords

    rotated = runner.invoke(app, ["admin", "nats-config", str(folder), "--rotate"])
    assert rotated.exit_code == 0, rotated.output
    assert "password new" in rotated.stdout
    assert all(Path(report["password_files"][u]).read_text() != passwords[u] for u in USERS)


def test_spawned_services_do_not_inherit_nats_credentials_of_the_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NATS_USER", "NATS_PASSWORD", "NATS_PASSWORD_FILE", "NATS_CREDS"):
        monkeypatch.setenv(name, "from-the-shell")
    stack = Stack(StackSpec(home=str(tmp_path), database_url="postgresql://127.0.0.1/x"))
    env = stack._service_env("nats://127.0.0.1:4222")
    assert not {"NATS_USER", "NATS_PASSWORD", "NATS_PASSWORD_FILE", "NATS_CREDS"} & set(env)
    assert stack.nats_auth_dir == tmp_path / "dev" / "nats-auth"
