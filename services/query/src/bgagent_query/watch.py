"""Read-your-writes: wait until the projection has reached a sequence.

One dedicated connection LISTENs on the channel the projector NOTIFYs after each commit;
waiters also re-read the checkpoint every ``poll_s`` so a missed notification (a listener
reconnect, a projector in another process) never leaves them waiting for the full bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import asyncpg

from . import store
from .errors import ProjectionLagError

logger = logging.getLogger(__name__)


class ProjectionWatch:
    def __init__(self, pool: Any, database_url: str, *, name: str = "tasks", poll_s: float = 0.25) -> None:
        self._pool = pool
        self._url = database_url
        self._name = name
        self._poll_s = poll_s
        self._seq = 0
        self._changed = asyncio.Event()
        self._listener: Any = None
        self.waiting = 0
        """Requests currently waiting (for tests and metrics)."""

    @property
    def seq(self) -> int:
        return self._seq

    async def start(self) -> None:
        self._listener = await asyncpg.connect(self._url)
        await self._listener.add_listener(store.NOTIFY_CHANNEL, self._on_notify)
        await self.refresh()

    async def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(asyncpg.InterfaceError, OSError):
                await self._listener.close()
            self._listener = None

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        name, _, seq = payload.rpartition(":")
        if name == self._name and seq.isdigit():
            self._advance(int(seq))

    def _advance(self, seq: int) -> None:
        if seq != self._seq:
            self._seq = seq
            self._changed.set()
            self._changed = asyncio.Event()

    async def refresh(self) -> int:
        async with self._pool.acquire() as conn:
            self._advance(await store.read_checkpoint(conn, self._name))
        return self._seq

    async def wait_for(self, min_seq: int, timeout: float) -> int:
        """Return the reached sequence once it is ≥ ``min_seq``; ProjectionLagError after ``timeout``."""
        if self._seq >= min_seq:
            return self._seq
        started = time.monotonic()
        deadline = started + timeout
        self.waiting += 1
        try:
            while self._seq < min_seq:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ProjectionLagError(min_seq, self._seq, time.monotonic() - started)
                changed = self._changed
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(self._poll_s, remaining)):
                        await changed.wait()
                if self._seq < min_seq:
                    await self.refresh()
            return self._seq
        finally:
            self.waiting -= 1
