"""Managed API tokens on a real nats-server with the generated users: the admin writes the tokens
bucket, admission and query watch it (and may not write it), revocations reach a watcher
(how fast: bench/token_revocation.py)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client

from bgagent_contracts.auth import TokenIndex, TokenTable
from bgagent_contracts.subjects import tokens_bucket
from bgagent_eventstore import (
    NatsSettings,
    TokenBucketMissingError,
    TokenNotFoundError,
    TokenStore,
    connect,
    provision,
    watch_tokens,
)
from bgagent_eventstore.nats_auth import ADMIN, auth_for, write_auth_dir
from bgagent_testing.servers import NatsServer

pytestmark = pytest.mark.integration

VIOLATION = re.compile(r'permissions violation for publish to "([^"]+)"', re.IGNORECASE)


class Server:
    def __init__(self, server: NatsServer, directory: str, settings: NatsSettings) -> None:
        self.server = server
        self.directory = directory
        self.settings = settings

    @contextlib.asynccontextmanager
    async def client(self, user: str) -> AsyncIterator[Client]:
        nc = await connect(self.server.url, name=f"pytest-{user}", auth=auth_for(self.directory, user))
        try:
            yield nc
        finally:
            await nc.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("tokens")
    tag = secrets.token_hex(3)
    settings = NatsSettings(stream=f"TOK{tag.upper()}", prefix=f"tok{tag}")
    written = write_auth_dir(root / "auth", stream=settings.stream, prefix=settings.prefix)
    nats_server = NatsServer(store_dir=str(root / "store"), config_file=written.config)
    nats_server.start()
    try:
        yield Server(nats_server, written.directory, msgspec.structs.replace(settings, url=nats_server.url))
    finally:
        nats_server.stop()


@pytest.fixture(scope="module")
async def provisioned(server: Server) -> Server:
    async with server.client(ADMIN) as nc:
        await provision(nc.jetstream(), server.settings)
    return server


async def wait_for(pred: object, what: str, timeout: float = 10.0) -> None:
    """Poll ``pred()`` until true; the timeout only bounds a failure."""
    assert callable(pred)
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("service", ["admission", "query"])
async def test_a_services_index_follows_create_and_revoke(provisioned: Server, service: str) -> None:
    prefix = provisioned.settings.prefix
    async with provisioned.client(ADMIN) as admin, provisioned.client(service) as svc:
        store = TokenStore(admin.jetstream(), prefix)
        before, old = await store.create("old-user")
        index = TokenIndex(TokenTable.parse("static-tok=ops"))
        watcher = await watch_tokens(svc.jetstream(), prefix, index)
        try:
            assert index.authenticate(f"Bearer {before}") is not None, "loaded at start"
            token, record = await store.create("alice", admin=True, name="ci")
            await wait_for(lambda: index.authenticate(f"Bearer {token}") is not None, "create")
            who = index.authenticate(f"Bearer {token}")
            assert who is not None
            assert (who.user_id, who.admin) == ("alice", True)
            revoked = await store.revoke(record.token_id)
            assert revoked.revoked_at is not None
            await wait_for(lambda: index.authenticate(f"Bearer {token}") is None, "revoke")
            assert index.authenticate("Bearer static-tok") is not None, "static tokens keep working"
            assert index.authenticate(f"Bearer {before}") is not None
        finally:
            await watcher.close()
        await store.revoke(old.token_id)


async def test_list_shows_records_without_secrets_and_revoke_is_idempotent(provisioned: Server) -> None:
    async with provisioned.client(ADMIN) as admin:
        store = TokenStore(admin.jetstream(), provisioned.settings.prefix)
        token, record = await store.create("bob", name="laptop")
        listed = {r.token_id: r for r in await store.list()}
        assert listed[record.token_id] == record
        raw = await (await admin.jetstream().key_value(tokens_bucket(provisioned.settings.prefix))).get(
            record.token_id
        )
        assert raw.value is not None
        assert token.encode() not in raw.value, "only the digest is stored"
        first = await store.revoke(record.token_id)
        again = await store.revoke(record.token_id)
        assert first.revoked_at == again.revoked_at
        assert (await store.get(record.token_id)).revoked_at == first.revoked_at
        with pytest.raises(TokenNotFoundError):
            await store.revoke("000000000000")
        with pytest.raises(TokenNotFoundError):
            await store.revoke("../../x")


@pytest.mark.parametrize("service", ["admission", "query"])
async def test_services_may_not_write_the_tokens_bucket(
    provisioned: Server, service: str, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = provisioned.settings.prefix
    async with provisioned.client(service) as nc:
        await nc.jetstream().key_value(tokens_bucket(prefix))  # reading is allowed
        subject = f"$KV.{tokens_bucket(prefix)}.0a1b2c3d4e5f"
        await nc.publish(subject, b"{}")
        await nc.flush()

        def refused() -> bool:
            found = {m.group(1).lower() for r in caplog.records if (m := VIOLATION.search(r.getMessage()))}
            return subject.lower() in found

        await wait_for(refused, f"the refusal of {subject}", timeout=5.0)
    async with provisioned.client(ADMIN) as admin:
        kv = await admin.jetstream().key_value(tokens_bucket(prefix))
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await kv.get("0a1b2c3d4e5f")


async def test_a_missing_bucket_is_named_with_the_fix(nats_url: str) -> None:
    nc = await connect(nats_url, name="pytest-tokens")
    try:
        with pytest.raises(TokenBucketMissingError, match="bgagent admin init"):
            await watch_tokens(nc.jetstream(), f"none{secrets.token_hex(3)}", TokenIndex())
    finally:
        await nc.close()


async def test_unreadable_records_are_skipped_not_fatal(provisioned: Server, tmp_path: Path) -> None:
    prefix = provisioned.settings.prefix
    async with provisioned.client(ADMIN) as admin, provisioned.client("query") as svc:
        kv = await admin.jetstream().key_value(tokens_bucket(prefix))
        await kv.put("badbadbadbad", b"not json")
        index = TokenIndex()
        watcher = await watch_tokens(svc.jetstream(), prefix, index)
        try:
            token, _ = await TokenStore(admin.jetstream(), prefix).create("carol")
            await wait_for(lambda: index.authenticate(f"Bearer {token}") is not None, "a later token")
            who = index.authenticate(f"Bearer {token}")
            assert who is not None
            assert who.user_id == "carol"
        finally:
            await watcher.close()
            await kv.delete("badbadbadbad")
