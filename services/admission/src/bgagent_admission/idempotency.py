"""Idempotency keys: (user, key) → task id, claimed once in a NATS KV bucket.

The bucket holds only the task id. Whether a repeated request is "the same
request" is decided by comparing it with the task's own ``task_submitted``
event, so the event log stays the one source of truth.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Protocol

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from .errors import BackendUnavailable


def key_digest(user_id: str, key: str) -> str:
    """The KV key: sha256 of ``user_id:key`` (hex, so always a valid KV key, and user-scoped)."""
    return hashlib.sha256(f"{user_id}:{key}".encode()).hexdigest()


class IdempotencyStore(Protocol):
    async def claim(self, digest: str, task_id: str) -> str | None:
        """Bind ``digest`` to ``task_id`` if it is free (→ None); else return the task id it names."""
        ...


class KvIdempotencyStore:
    """IdempotencyStore over a NATS KV bucket (``kv.create`` succeeds only for a new key)."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def claim(self, digest: str, task_id: str) -> str | None:
        try:
            await self._kv.create(digest, task_id.encode())
            return None
        except nats.js.errors.KeyWrongLastSequenceError:
            pass
        except nats.errors.Error as exc:
            raise BackendUnavailable(f"idempotency bucket did not answer: {exc!r}") from exc
        try:
            entry = await self._kv.get(digest)
        except nats.errors.Error as exc:
            raise BackendUnavailable(f"idempotency bucket did not answer: {exc!r}") from exc
        if entry.value is None:  # pragma: no cover - create refused, so a value exists
            raise BackendUnavailable("idempotency key exists without a value")
        return entry.value.decode()


class MemoryIdempotencyStore:
    """In-memory IdempotencyStore with the same claim-once semantics (for unit tests)."""

    def __init__(self) -> None:
        self._keys: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def claim(self, digest: str, task_id: str) -> str | None:
        async with self._lock:
            existing = self._keys.get(digest)
            if existing is None:
                self._keys[digest] = task_id
            return existing
