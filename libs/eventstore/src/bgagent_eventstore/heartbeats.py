"""Runner liveness in a KV bucket with a TTL (never in task events).

Keys: ``task.<task_id>`` → which runner holds the task and its attempt; ``runner.<key>`` → a live
runner. A runner re-puts its keys every few seconds; the bucket's TTL (``HEARTBEAT_TTL_S``) drops
the keys of a runner that stopped, which is how the reconciler tells a held task from a lost one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from bgagent_contracts.subjects import heartbeats_bucket

logger = logging.getLogger(__name__)

_KEY_SAFE = re.compile(r"^[A-Za-z0-9_=-]{1,200}$")
_ERRORS = (nats.errors.Error, nats.js.errors.Error, TimeoutError)


class Beat(msgspec.Struct, frozen=True, kw_only=True):
    runner_id: str
    at: datetime
    attempt: int | None = None
    """The attempt held (task keys only)."""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Beat)


def runner_key(runner_id: str) -> str:
    """``runner.<id>``, or a digest of the id when it has characters a KV key may not hold."""
    safe = runner_id if _KEY_SAFE.match(runner_id) else hashlib.sha256(runner_id.encode()).hexdigest()[:32]
    return f"runner.{safe}"


def task_key(task_id: str) -> str:
    return f"task.{task_id}"


async def bucket(js: JetStreamContext, prefix: str) -> KeyValue:
    return await js.key_value(heartbeats_bucket(prefix))


class Heartbeats:
    """A runner's side: hold, beat and release its tasks' keys."""

    def __init__(self, kv: KeyValue, runner_id: str, *, interval_s: float = 5.0) -> None:
        self._kv = kv
        self._runner_id = runner_id
        self._interval_s = interval_s
        self.held: dict[str, int] = {}

    async def hold(self, task_id: str, attempt: int) -> None:
        self.held[task_id] = attempt
        await self._put(task_key(task_id), attempt)

    async def release(self, task_id: str) -> None:
        self.held.pop(task_id, None)
        with contextlib.suppress(*_ERRORS):
            await self._kv.delete(task_key(task_id))

    async def beat(self) -> None:
        """Re-put this runner's key and every held task's key (errors logged: NATS may be away)."""
        await self._put(runner_key(self._runner_id), None)
        for task_id, attempt in list(self.held.items()):
            await self._put(task_key(task_id), attempt)

    async def run(self, stopping: Callable[[], bool] = lambda: False) -> None:
        while not stopping():
            await self.beat()
            await asyncio.sleep(self._interval_s)

    async def stop(self) -> None:
        with contextlib.suppress(*_ERRORS):
            await self._kv.delete(runner_key(self._runner_id))

    async def _put(self, key: str, attempt: int | None) -> None:
        beat = Beat(runner_id=self._runner_id, at=datetime.now(UTC), attempt=attempt)
        try:
            await self._kv.put(key, _encoder.encode(beat))
        except _ERRORS as exc:
            logger.warning("heartbeat %s failed: %r", key, exc)


async def read_beats(kv: KeyValue) -> Mapping[str, Beat]:
    """Every live key of the bucket (deleted and expired keys are absent)."""
    try:
        keys = await kv.keys()
    except nats.js.errors.NoKeysError:
        return {}
    beats: dict[str, Beat] = {}
    for key in keys:
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            continue
        if entry.value:
            try:
                beats[key] = _decoder.decode(entry.value)
            except msgspec.DecodeError:
                logger.warning("ignoring a malformed heartbeat under %s", key)
    return beats
