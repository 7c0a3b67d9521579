"""A per-user sliding-window rate limit, in process (one admission replica's view).

Approval decisions are limited to 30 per minute per user. With several admission replicas each
counts its own requests, so the effective limit is 30 per replica; a shared limit (a NATS KV
counter) is not needed for a limit whose purpose is to stop a runaway script.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

DECISIONS_PER_MINUTE = 30
WINDOW_S = 60.0


class SlidingWindow:
    """At most ``limit`` hits per key within any ``window_s`` seconds."""

    def __init__(
        self,
        limit: int = DECISIONS_PER_MINUTE,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit
        self._window_s = window_s
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str) -> float | None:
        """Count one hit; None when allowed, else the seconds until one is free (nothing counted)."""
        now = self._clock()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self._window_s:
            hits.popleft()
        if len(hits) >= self._limit:
            return max(0.0, hits[0] + self._window_s - now)
        hits.append(now)
        if len(self._hits) > 10_000:  # forget idle users so the table cannot grow without bound
            for user in [k for k, v in self._hits.items() if not v or v[-1] <= now - self._window_s]:
                del self._hits[user]
        return None

    @staticmethod
    def retry_after(wait_s: float) -> int:
        return max(1, math.ceil(wait_s))
