"""``bgagent admin token create|list|revoke`` on a real nats-server with the generated NATS users (the
CLI connects as ``admin`` from the stack's users folder), and the dev stack's token issued the same way."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bgagent_cli.main import app
from bgagent_cli.stack import DEV_TOKEN_NAME, Stack, StackSpec
from bgagent_contracts.auth import TokenIndex, is_managed_token
from bgagent_eventstore import NatsSettings, TokenStore, connect, provision, watch_tokens
from bgagent_eventstore.nats_auth import ADMIN, auth_for, write_auth_dir
from bgagent_testing.servers import NatsServer

pytestmark = pytest.mark.integration


class Env:
    def __init__(self, server: NatsServer, auth_dir: str, settings: NatsSettings, home: Path) -> None:
        self.server = server
        self.auth_dir = auth_dir
        self.settings = settings
        self.home = home


@pytest.fixture(scope="module")
def nats_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("cli-tokens")
    tag = secrets.token_hex(3)
    settings = NatsSettings(stream=f"CLITOK{tag.upper()}", prefix=f"clitok{tag}")
    written = write_auth_dir(root / "nats-auth", stream=settings.stream, prefix=settings.prefix)
    server = NatsServer(store_dir=str(root / "store"), config_file=written.config)
    server.start()
    home = root / "home"
    (home / "dev").mkdir(parents=True)
    # what 'dev up' records: the URL, stream, prefix and the NATS users folder (no secret)
    client = {
        "nats_url": server.url,
        "stream": settings.stream,
        "prefix": settings.prefix,
        "nats_auth_dir": written.directory,
    }
    (home / "dev" / "stack.json").write_text(json.dumps({"client": client, "procs": []}))
    try:
        env = Env(
            server,
            written.directory,
            NatsSettings(url=server.url, stream=settings.stream, prefix=settings.prefix),
            home,
        )
        asyncio.run(_provision(env))
        yield env
    finally:
        server.stop()


async def _provision(env: Env) -> None:
    nc = await connect(env.server.url, name="pytest", auth=auth_for(env.auth_dir, ADMIN))
    try:
        await provision(nc.jetstream(), env.settings)
    finally:
        await nc.close()


@pytest.fixture
def cli_env(nats_env: Env, monkeypatch: pytest.MonkeyPatch) -> Env:
    monkeypatch.setenv("BGAGENT_HOME", str(nats_env.home))
    for name in ("NATS_URL", "NATS_USER", "NATS_PASSWORD", "NATS_PASSWORD_FILE", "NATS_CREDS"):
        monkeypatch.delenv(name, raising=False)
    for name in ("BGAGENT_STREAM", "BGAGENT_PREFIX", "BGAGENT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return nats_env


async def _authenticates_as_query(env: Env, token: str, want: bool, timeout: float = 10.0) -> float:
    """Watch the bucket as the query service would; wait until ``token`` does (not) authenticate."""
    nc = await connect(env.server.url, name="pytest-query", auth=auth_for(env.auth_dir, "query"))
    index = TokenIndex()
    watcher = await watch_tokens(nc.jetstream(), env.settings.prefix, index)
    try:
        start = time.monotonic()
        while (index.authenticate(f"Bearer {token}") is not None) != want:
            if time.monotonic() - start > timeout:
                raise AssertionError(f"token {'never' if want else 'still'} authenticates after {timeout}s")
            await asyncio.sleep(0.01)
        return time.monotonic() - start
    finally:
        await watcher.close()
        await nc.close()


def test_create_list_revoke_through_the_cli(cli_env: Env) -> None:
    runner = CliRunner()
    made = runner.invoke(
        app, ["admin", "token", "create", "--user", "alice", "--admin", "--name", "ci", "-o", "json"]
    )
    assert made.exit_code == 0, made.output
    [created] = [json.loads(line) for line in made.stdout.splitlines() if line.strip()]
    token, token_id = created["token"], created["token_id"]
    assert is_managed_token(token)
    assert (created["user_id"], created["admin"], created["name"], created["revoked_at"]) == (
        "alice",
        True,
        "ci",
        None,
    )
    asyncio.run(_authenticates_as_query(cli_env, token, want=True))

    text = runner.invoke(app, ["admin", "token", "create", "--user", "bob"])
    assert text.exit_code == 0, text.output
    assert "bga_" in text.stdout
    assert "token" in text.stdout
    assert "id" in text.stdout

    listed = runner.invoke(app, ["admin", "token", "list", "-o", "json"])
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    mine = next(r for r in rows if r["token_id"] == token_id)
    assert mine["user_id"] == "alice"
    assert mine["revoked_at"] is None
    assert "bga_" not in listed.stdout, "list never shows a token"
    assert all(set(r) == {"token_id", "user_id", "admin", "name", "created_at", "revoked_at"} for r in rows)
    table = runner.invoke(app, ["admin", "token", "list"])
    assert table.exit_code == 0, table.output
    assert token_id in table.stdout
    assert "bga_" not in table.stdout

    revoked = runner.invoke(app, ["admin", "token", "revoke", token_id])
    assert revoked.exit_code == 0, revoked.output
    assert f"revoked {token_id}" in revoked.stdout
    asyncio.run(_authenticates_as_query(cli_env, token, want=False))  # its timeout bounds a failure only
    rows = [
        json.loads(line)
        for line in runner.invoke(app, ["admin", "token", "list", "-o", "json"]).stdout.splitlines()
    ]
    assert next(r for r in rows if r["token_id"] == token_id)["revoked_at"] is not None


def test_revoking_an_unknown_id_fails_with_a_hint(cli_env: Env) -> None:
    result = CliRunner().invoke(app, ["admin", "token", "revoke", "ffffffffffff"])
    assert result.exit_code == 1
    assert "no token" in result.output
    assert "admin token list" in result.output


def test_create_needs_a_user(cli_env: Env) -> None:
    result = CliRunner().invoke(app, ["admin", "token", "create"])
    assert result.exit_code != 0


def test_the_dev_stack_registers_its_token_and_revokes_an_earlier_stacks(
    nats_env: Env, tmp_path: Path
) -> None:
    async def go() -> None:
        nc = await connect(nats_env.server.url, name="pytest-dev", auth=auth_for(nats_env.auth_dir, ADMIN))
        try:
            tokens = TokenStore(nc.jetstream(), nats_env.settings.prefix)
            first = Stack(
                StackSpec(
                    home=str(tmp_path), database_url="postgresql://x/y", prefix=nats_env.settings.prefix
                )
            )
            second = Stack(
                StackSpec(
                    home=str(tmp_path), database_url="postgresql://x/y", prefix=nats_env.settings.prefix
                )
            )
            assert is_managed_token(first.spec.token)
            await first._issue_token(tokens)
            await second._issue_token(tokens)
            dev = [r for r in await tokens.list() if r.name == DEV_TOKEN_NAME and r.user_id == "dev"]
            assert len([r for r in dev if r.active]) == 1
            index = TokenIndex()
            index.replace_all(dev)
            assert index.authenticate(f"Bearer {second.spec.token}") is not None
            assert index.authenticate(f"Bearer {first.spec.token}") is None
        finally:
            await nc.close()

    asyncio.run(go())


def test_the_services_of_a_dev_stack_get_no_static_token(tmp_path: Path) -> None:
    stack = Stack(StackSpec(home=str(tmp_path), database_url="postgresql://x/y"))
    env = stack._service_env("nats://127.0.0.1:1")
    assert env["BGAGENT_API_TOKENS"] == ""
    assert stack.spec.token not in json.dumps(env)
