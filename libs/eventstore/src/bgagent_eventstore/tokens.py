"""Managed API tokens in the tokens KV bucket: create, list, revoke, and a live index for the services.

The bucket (``<prefix>_tokens``, provisioned by ``provision``) maps a short public token id to a
:class:`~bgagent_contracts.auth.TokenRecord`: the token's SHA-256 digest, user, admin flag, name,
creation and revocation time. The token itself is never stored: ``create`` returns it once.
Only the ``admin`` NATS user may write the bucket; admission and query read and watch it.

:class:`TokenWatcher` keeps a :class:`~bgagent_contracts.auth.TokenIndex` current from
``kv.watchall()``: a revocation reaches every admission and query process as soon as NATS
delivers the KV update (milliseconds), not on a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import cast

import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from bgagent_contracts.auth import TokenIndex, TokenRecord, is_token_id, issue_token
from bgagent_contracts.subjects import tokens_bucket

from .errors import StoreError, StoreUnavailableError

logger = logging.getLogger(__name__)

_NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError)


class TokenBucketMissingError(StoreError):
    """The tokens bucket does not exist: run ``bgagent admin init``."""


class TokenNotFoundError(StoreError):
    """No managed token has this id."""


async def _open(js: JetStreamContext, prefix: str) -> KeyValue:
    bucket = tokens_bucket(prefix)
    try:
        return await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError as exc:
        raise TokenBucketMissingError(
            f"KV bucket {bucket!r} does not exist; run `bgagent admin init`"
        ) from exc
    except _NATS_ERRORS as exc:
        raise StoreUnavailableError(f"cannot open KV bucket {bucket!r}: {exc!r}") from exc


def _stop(watcher: KeyValue.KeyWatcher) -> Awaitable[None]:
    """``watcher.stop()`` (untyped in nats-py)."""
    return cast(Callable[[], Awaitable[None]], watcher.stop)()


async def _next(watcher: KeyValue.KeyWatcher, timeout: float) -> KeyValue.Entry | None:
    """``watcher.updates(timeout)`` (untyped in nats-py): the next entry, None once the load is done."""
    updates = cast(Callable[[float], Awaitable[KeyValue.Entry | None]], watcher.updates)
    return await updates(timeout)


def _decode(key: str, value: bytes | None) -> TokenRecord | None:
    if not value:
        return None
    try:
        record = msgspec.json.decode(value, type=TokenRecord)
    except msgspec.DecodeError as exc:
        logger.warning("skipping unreadable token record %.40s: %s", key, exc)
        return None
    if record.token_id != key:
        logger.warning("skipping token record stored under %.40s with id %.40s", key, record.token_id)
        return None
    return record


class TokenStore:
    """Create, list and revoke managed tokens (as the ``admin`` NATS user)."""

    def __init__(self, js: JetStreamContext, prefix: str) -> None:
        self._js = js
        self._prefix = prefix

    async def create(
        self,
        user_id: str,
        *,
        admin: bool = False,
        name: str = "",
        now: datetime | None = None,
        token: str | None = None,
    ) -> tuple[str, TokenRecord]:
        """A new token for ``user_id``: returns the token (shown once) and its stored record.

        ``token``: register this ``new_token()`` secret instead of making one (``dev up``).
        """
        kv = await _open(self._js, self._prefix)
        token, record = issue_token(
            user_id, admin=admin, name=name, now=now or datetime.now(UTC), token=token
        )
        try:
            await kv.create(record.token_id, msgspec.json.encode(record))
        except _NATS_ERRORS as exc:
            raise StoreUnavailableError(f"could not store token {record.token_id}: {exc!r}") from exc
        return token, record

    async def list(self) -> list[TokenRecord]:
        """Every managed token, revoked ones included, oldest first."""
        kv = await _open(self._js, self._prefix)
        try:
            keys = await kv.keys()
        except nats.js.errors.NoKeysError:
            return []
        out: list[TokenRecord] = []
        for key in keys:
            with contextlib.suppress(TokenNotFoundError):
                out.append(await self._get(kv, key))
        return sorted(out, key=lambda r: (r.created_at, r.token_id))

    async def get(self, token_id: str) -> TokenRecord:
        return await self._get(await _open(self._js, self._prefix), token_id)

    async def _get(self, kv: KeyValue, token_id: str) -> TokenRecord:
        if not is_token_id(token_id):
            raise TokenNotFoundError(f"no token {token_id[:40]!r}: ids are 12 hex digits")
        try:
            entry = await kv.get(token_id)
        except nats.js.errors.KeyNotFoundError:
            raise TokenNotFoundError(f"no token {token_id!r}") from None
        record = _decode(token_id, entry.value)
        if record is None:
            raise TokenNotFoundError(f"no readable token {token_id!r}")
        return record

    async def revoke(self, token_id: str, now: datetime | None = None) -> TokenRecord:
        """Mark the token revoked (idempotent: an already revoked token keeps its first revocation)."""
        kv = await _open(self._js, self._prefix)
        for _ in range(5):
            if not is_token_id(token_id):
                raise TokenNotFoundError(f"no token {token_id[:40]!r}: ids are 12 hex digits")
            try:
                entry = await kv.get(token_id)
            except nats.js.errors.KeyNotFoundError:
                raise TokenNotFoundError(f"no token {token_id!r}") from None
            record = _decode(token_id, entry.value)
            if record is None:
                raise TokenNotFoundError(f"no readable token {token_id!r}")
            if not record.active:
                return record
            revoked = msgspec.structs.replace(record, revoked_at=now or datetime.now(UTC))
            assert entry.revision is not None
            try:
                await kv.update(token_id, msgspec.json.encode(revoked), last=entry.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # changed under us: read again
            except _NATS_ERRORS as exc:
                raise StoreUnavailableError(f"could not revoke token {token_id}: {exc!r}") from exc
            return revoked
        raise StoreUnavailableError(f"token {token_id} kept changing; try again")


class TokenWatcher:
    """Keeps ``index`` equal to the tokens bucket: a full load at ``start``, then every change.

    The watch is an ordered consumer: nats-py re-creates it by itself after a gap or missed heartbeats
    (a reconnect). Should the watch end anyway (it was stopped), a new one is opened and the index
    rebuilt from a fresh load; meanwhile the index keeps what it last knew.
    """

    def __init__(self, js: JetStreamContext, prefix: str, index: TokenIndex, *, retry_s: float = 1.0) -> None:
        self._js = js
        self._prefix = prefix
        self.index = index
        self._retry_s = retry_s
        self._task: asyncio.Task[None] | None = None
        self._watcher: KeyValue.KeyWatcher | None = None
        self.updates = 0
        """Changes applied since the start (for tests and logs)."""

    async def start(self, timeout: float = 10.0) -> None:
        """Load every record into the index, then follow changes in the background.

        Raises TokenBucketMissingError when the bucket does not exist, StoreUnavailableError when
        the first load does not finish within ``timeout``.
        """
        self._watcher = await self._sync(timeout)
        self._task = asyncio.create_task(self._follow(), name="bgagent-token-watch")

    async def _sync(self, timeout: float) -> KeyValue.KeyWatcher:
        kv = await _open(self._js, self._prefix)
        try:
            watcher = await kv.watchall()
        except _NATS_ERRORS as exc:
            raise StoreUnavailableError(f"cannot watch the tokens bucket: {exc!r}") from exc
        records: dict[str, TokenRecord] = {}
        try:
            async with asyncio.timeout(timeout):
                while (entry := await _next(watcher, timeout)) is not None:
                    if entry.operation in (KV_DEL, KV_PURGE):
                        records.pop(entry.key, None)
                    elif (record := _decode(entry.key, entry.value)) is not None:
                        records[entry.key] = record
        except (TimeoutError, nats.errors.TimeoutError) as exc:
            with contextlib.suppress(*_NATS_ERRORS):
                await _stop(watcher)
            raise StoreUnavailableError(f"loading the tokens bucket took over {timeout}s") from exc
        self.index.replace_all(records.values())
        logger.info("managed API tokens loaded: %d active", self.index.managed_count)
        return watcher

    def _apply(self, entry: KeyValue.Entry) -> None:
        if entry.operation in (KV_DEL, KV_PURGE):
            self.index.forget(entry.key)
        elif (record := _decode(entry.key, entry.value)) is not None:
            self.index.apply(record)
            if not record.active:
                logger.info("API token %s of %s revoked", record.token_id, record.user_id)
        self.updates += 1

    async def _follow(self) -> None:
        while True:
            watcher = self._watcher
            if watcher is not None:
                async for entry in watcher:
                    if entry is not None:
                        self._apply(entry)
            # the iterator ends only when the watcher was stopped: open a new one
            await asyncio.sleep(self._retry_s)
            try:
                self._watcher = await self._sync(10.0)
            except StoreError as exc:
                self._watcher = None
                logger.warning("token watch: %s; retrying", exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._watcher is not None:
            with contextlib.suppress(*_NATS_ERRORS):
                await _stop(self._watcher)
            self._watcher = None


async def watch_tokens(
    js: JetStreamContext, prefix: str, index: TokenIndex, timeout: float = 10.0
) -> TokenWatcher:
    """Start a :class:`TokenWatcher` for ``index`` (loaded when this returns)."""
    watcher = TokenWatcher(js, prefix, index)
    await watcher.start(timeout)
    return watcher
