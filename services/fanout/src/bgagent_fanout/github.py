"""A small GitHub REST client for issue comments, patient with rate limits and outages.

Retry policy (``GitHubClient._request``, retries by stamina):
- 403/429 with ``Retry-After`` or ``x-ratelimit-remaining: 0`` (or a "rate limit" message): wait the
  time GitHub names (bounded by ``max_wait_s``) and retry; forever, since the final state must land.
- 5xx and network errors: exponential backoff (capped at ``backoff_max_s``) and retry, forever. Such a
  failure is ambiguous for a POST (GitHub may have created the comment before failing), so a comment
  POST given a ``marker`` looks for a comment carrying it before posting again: never a second comment.
- anything else: raise (TargetUnusableError / CommentGoneError / GitHubError) for the caller to decide.
The loop ends early only when ``stopping`` is set (shutdown): GitHubStoppedError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import stamina

from .errors import CommentGoneError, GitHubError, GitHubStoppedError, TargetUnusableError

logger = logging.getLogger(__name__)

USER_AGENT = "bgagent-fanout/0.1 (+https://github.com/bgagent)"
API_VERSION = "2022-11-28"
_TARGET_STATUSES = frozenset({401, 403, 404, 410, 422})

Sleep = Callable[[float], Awaitable[None]]
Recheck = Callable[[], Awaitable[int | None]]


class _RateLimited(Exception):
    def __init__(self, wait: float) -> None:
        super().__init__(f"rate limited for {wait:.1f}s")
        self.wait = wait


class _ServerError(Exception):
    """A 5xx: retried with backoff."""


_RETRYABLE = (_RateLimited, _ServerError, httpx.TransportError)


def _retry_hook(exc: Exception) -> bool | float:
    """stamina's ``on``: GitHub's named wait for rate limits, backoff for 5xx and network errors."""
    if isinstance(exc, _RateLimited):
        return exc.wait
    return isinstance(exc, _RETRYABLE)


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

    async def create_comment(self, repo: str, number: int, body: str, *, marker: str | None = None) -> int:
        """POST a comment on an issue or PR; its id.

        With ``marker`` (a line only this comment carries), a retry after a 5xx or a network error first
        looks for a comment with the marker, which the failed POST may have created, and returns its id.
        """
        path = f"/repos/{repo}/issues/{number}/comments"
        recheck: Recheck | None = None
        if marker is not None:
            since = datetime.now(UTC) - timedelta(minutes=5)

            async def recheck() -> int | None:
                return await self._find_comment(repo, number, marker, since)

        response = await self._request("POST", path, {"body": body}, recheck=recheck)
        if isinstance(response, int):
            logger.info("POST %s failed but created comment %d: keeping it", path, response)
            return response
        if response.status_code in _TARGET_STATUSES:
            raise TargetUnusableError("POST", path, response.status_code, _message(response))
        self._raise_for_status("POST", path, response)
        return int(response.json()["id"])

    async def _find_comment(self, repo: str, number: int, marker: str, since: datetime) -> int | None:
        """One try (the caller retries): the newest comment carrying ``marker``, or None."""
        path = f"/repos/{repo}/issues/{number}/comments"
        params = {"since": since.strftime("%Y-%m-%dT%H:%M:%SZ"), "per_page": "100"}
        response = self._check(await self._http.request("GET", path, params=params))
        if response.status_code != 200:
            return None  # the POST itself will say what is wrong
        data = response.json()
        found = [c["id"] for c in data if isinstance(c, dict) and marker in str(c.get("body", ""))]
        return int(found[-1]) if found else None

    async def update_comment(self, repo: str, comment_id: int, body: str) -> None:
        """PATCH a comment's body (no conditional headers: GitHub rejects them)."""
        path = f"/repos/{repo}/issues/comments/{comment_id}"
        response = await self._request("PATCH", path, {"body": body})
        assert not isinstance(response, int)
        if response.status_code in (404, 410):
            raise CommentGoneError("PATCH", path, response.status_code, _message(response))
        if response.status_code in _TARGET_STATUSES:
            raise TargetUnusableError("PATCH", path, response.status_code, _message(response))
        self._raise_for_status("PATCH", path, response)

    async def delete_comment(self, repo: str, comment_id: int) -> None:
        """DELETE a comment; a comment already gone is fine."""
        path = f"/repos/{repo}/issues/comments/{comment_id}"
        response = await self._request("DELETE", path, None)
        assert not isinstance(response, int)
        if response.status_code not in (204, 404, 410):
            self._raise_for_status("DELETE", path, response)

    @staticmethod
    def _raise_for_status(method: str, path: str, response: httpx.Response) -> None:
        if response.is_success:
            return
        raise GitHubError(method, path, response.status_code, _message(response))

    async def _request(
        self, method: str, path: str, payload: Any, *, recheck: Recheck | None = None
    ) -> httpx.Response | int:
        """The call, retried until it gets a final answer; GitHubStoppedError once stopping is set.

        Returns what ``recheck`` found instead (an id) when it finds the effect of a failed try.
        """
        if self._stopping.is_set():
            raise GitHubStoppedError(f"{method} {path}: stopping")
        on_the_wire = [False]
        work = asyncio.create_task(self._retrying(method, path, payload, recheck, on_the_wire))
        stop = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
            # Stopping cuts a wait short, not a call on the wire: a POST cut off after GitHub created
            # the comment would leave one that nobody recorded. Its answer is used; no retry follows.
            while not work.done() and on_the_wire[0]:
                await asyncio.wait({work}, timeout=0.05)
        finally:
            stop.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
        if work.cancelled():
            raise GitHubStoppedError(f"{method} {path}: stopping while waiting for GitHub")
        failed = work.exception()
        if failed is not None and isinstance(failed, _RETRYABLE):
            raise GitHubStoppedError(f"{method} {path}: stopping after {failed!r}") from failed
        return work.result()

    async def _retrying(
        self, method: str, path: str, payload: Any, recheck: Recheck | None, on_the_wire: list[bool]
    ) -> httpx.Response | int:
        ambiguous = False  # a try failed in a way that may have had its effect

        def retry(exc: Exception) -> bool | float:
            return False if self._stopping.is_set() else _retry_hook(exc)

        async for attempt in stamina.retry_context(
            on=retry,
            attempts=None,
            timeout=None,
            wait_initial=self._backoff_base_s,
            wait_max=self._backoff_max_s,
            wait_jitter=self._backoff_base_s,
        ):
            with attempt:
                if ambiguous and recheck is not None:
                    found = await recheck()
                    if found is not None:
                        return found
                on_the_wire[0] = True
                try:
                    response = await self._http.request(method, path, json=payload)
                except httpx.TransportError as exc:
                    ambiguous = True
                    self.retried += 1
                    logger.warning("github %s %s failed (%r): retry %d", method, path, exc, attempt.num)
                    raise
                finally:
                    on_the_wire[0] = False
                try:
                    return self._check(response, method, path)
                except _ServerError as exc:
                    ambiguous = True
                    self.retried += 1
                    logger.warning("github %s %s failed (%r): retry %d", method, path, exc, attempt.num)
                    raise
        raise AssertionError("unreachable: the retries never stop")

    def _check(self, response: httpx.Response, method: str = "GET", path: str = "") -> httpx.Response:
        """``response`` when it is an answer to act on; _RateLimited or _ServerError to retry it."""
        wait = rate_limit_wait(response, secondary_wait_s=self._secondary_wait_s, now=time.time())
        if wait is not None:
            self.rate_limited += 1
            wait = min(wait, self._max_wait_s)
            logger.warning(
                "github rate limit on %s %s (%s): waiting %.1fs",
                method,
                path or response.request.url.path,
                response.status_code,
                wait,
            )
            raise _RateLimited(wait)
        if response.status_code >= 500:
            raise _ServerError(f"status {response.status_code}")
        return response
