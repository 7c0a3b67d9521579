"""A small GitHub REST client for issue comments, patient with rate limits and outages.

Retry policy (``GitHubClient._request``):
- 403/429 with ``Retry-After`` or ``x-ratelimit-remaining: 0`` (or a "rate limit" message): wait the
  time GitHub names (bounded by ``max_wait_s``) and retry; forever, since the final state must land.
- 5xx and network errors: exponential backoff (capped) and retry, forever.
- anything else: raise (TargetUnusableError / CommentGoneError / GitHubError) for the caller to decide.
The loop ends early only when ``stopping`` is set (shutdown): GitHubStoppedError.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from .errors import CommentGoneError, GitHubError, GitHubStoppedError, TargetUnusableError

logger = logging.getLogger(__name__)

USER_AGENT = "bgagent-fanout/0.1 (+https://github.com/bgagent)"
API_VERSION = "2022-11-28"
_TARGET_STATUSES = frozenset({401, 403, 404, 410, 422})

Sleep = Callable[[float], Awaitable[None]]


def rate_limit_wait(response: httpx.Response, *, secondary_wait_s: float, now: float) -> float | None:
    """Seconds GitHub asks us to wait before retrying, or None when this is not a rate limit."""
    if response.status_code not in (403, 429):
        return None
    retry_after = response.headers.get("retry-after")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            return secondary_wait_s
    if response.headers.get("x-ratelimit-remaining") == "0":
        reset = response.headers.get("x-ratelimit-reset")
        try:
            return max(0.0, float(reset) - now) + 0.5 if reset is not None else secondary_wait_s
        except ValueError:
            return secondary_wait_s
    if response.status_code == 429 or "rate limit" in _message(response).lower():
        return secondary_wait_s
    return None


def _message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    return response.text[:200]


class GitHubClient:
    """Issue-comment calls against ``api_url`` with a token (never logged)."""

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        timeout_s: float = 30.0,
        max_wait_s: float = 900.0,
        secondary_wait_s: float = 60.0,
        backoff_max_s: float = 30.0,
        backoff_base_s: float = 0.5,
        stopping: asyncio.Event | None = None,
    ) -> None:
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": USER_AGENT,
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(base_url=api_url.rstrip("/"), headers=headers, timeout=timeout_s)
        self._max_wait_s = max_wait_s
        self._secondary_wait_s = secondary_wait_s
        self._backoff_max_s = backoff_max_s
        self._backoff_base_s = backoff_base_s
        self._stopping = stopping or asyncio.Event()
        self.rate_limited = 0
        """Times a call waited for a rate limit (for tests and metrics)."""
        self.retried = 0
        """Times a call was retried after a 5xx or a network error."""

    async def aclose(self) -> None:
        await self._http.aclose()

    async def create_comment(self, repo: str, number: int, body: str) -> int:
        """POST a comment on an issue or PR; its id."""
        path = f"/repos/{repo}/issues/{number}/comments"
        response = await self._request("POST", path, {"body": body})
        if response.status_code in _TARGET_STATUSES:
            raise TargetUnusableError("POST", path, response.status_code, _message(response))
        self._raise_for_status("POST", path, response)
        return int(response.json()["id"])

    async def update_comment(self, repo: str, comment_id: int, body: str) -> None:
        """PATCH a comment's body (no conditional headers: GitHub rejects them)."""
        path = f"/repos/{repo}/issues/comments/{comment_id}"
        response = await self._request("PATCH", path, {"body": body})
        if response.status_code in (404, 410):
            raise CommentGoneError("PATCH", path, response.status_code, _message(response))
        if response.status_code in _TARGET_STATUSES:
            raise TargetUnusableError("PATCH", path, response.status_code, _message(response))
        self._raise_for_status("PATCH", path, response)

    async def delete_comment(self, repo: str, comment_id: int) -> None:
        """DELETE a comment; a comment already gone is fine."""
        path = f"/repos/{repo}/issues/comments/{comment_id}"
        response = await self._request("DELETE", path, None)
        if response.status_code not in (204, 404, 410):
            self._raise_for_status("DELETE", path, response)

    @staticmethod
    def _raise_for_status(method: str, path: str, response: httpx.Response) -> None:
        if response.is_success:
            return
        raise GitHubError(method, path, response.status_code, _message(response))

    async def _request(self, method: str, path: str, payload: Any) -> httpx.Response:
        failures = 0
        while True:
            if self._stopping.is_set():
                raise GitHubStoppedError(f"{method} {path}: stopping")
            try:
                response = await self._http.request(method, path, json=payload)
            except httpx.TransportError as exc:
                failures += 1
                await self._backoff(method, path, failures, repr(exc))
                continue
            wait = rate_limit_wait(response, secondary_wait_s=self._secondary_wait_s, now=time.time())
            if wait is not None:
                self.rate_limited += 1
                wait = min(wait, self._max_wait_s)
                logger.warning(
                    "github rate limit on %s %s (%s): waiting %.1fs", method, path, response.status_code, wait
                )
                await self._sleep(wait)
                continue
            if response.status_code >= 500:
                failures += 1
                await self._backoff(method, path, failures, f"status {response.status_code}")
                continue
            return response

    async def _backoff(self, method: str, path: str, failures: int, why: str) -> None:
        self.retried += 1
        delay = min(self._backoff_max_s, self._backoff_base_s * 2 ** (failures - 1))
        delay *= 0.5 + random.random() / 2
        logger.warning("github %s %s failed (%s): retry %d in %.1fs", method, path, why, failures, delay)
        await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once (GitHubStoppedError) when stopping is set."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            return
        raise GitHubStoppedError("stopping while waiting for GitHub")
