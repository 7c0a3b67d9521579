"""The forge port (pull requests, reviews, issues) and its GitHub REST adapter."""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

import httpx
import msgspec
import stamina

from bgagent_contracts.redact import redact
from bgagent_contracts.text import BODY_MAX, PR_TITLE_MAX, bounded, title_line
from bgagent_eventstore.telemetry import record_github_error

from .errors import ForgeError

logger = logging.getLogger(__name__)


class PullRequest(msgspec.Struct, frozen=True, kw_only=True):
    number: int
    url: str
    head_ref: str
    base_ref: str
    title: str = ""
    body: str = ""


class Issue(msgspec.Struct, frozen=True, kw_only=True):
    number: int
    title: str
    body: str = ""


class Forge(Protocol):
    async def get_issue(self, owner: str, name: str, number: int) -> Issue: ...

    async def get_pull(self, owner: str, name: str, number: int) -> PullRequest: ...

    async def find_open_pull(self, owner: str, name: str, branch: str) -> PullRequest | None: ...

    async def open_pull(
        self, owner: str, name: str, *, head: str, base: str, title: str, body: str
    ) -> PullRequest: ...

    async def post_review(self, owner: str, name: str, number: int, body: str) -> str:
        """Post a comment review; returns its URL."""
        ...

    async def aclose(self) -> None: ...


def _pull(data: dict[str, Any]) -> PullRequest:
    return PullRequest(
        number=int(data["number"]),
        url=str(data.get("html_url") or data.get("url") or ""),
        head_ref=str(data["head"]["ref"]),
        base_ref=str(data["base"]["ref"]),
        title=str(data.get("title") or ""),
        body=str(data.get("body") or ""),
    )


class _RetryableAnswer(Exception):
    """A 5xx or a rate limit: retried after ``wait`` seconds; after the last try, the answer."""

    def __init__(self, response: httpx.Response, wait: float) -> None:
        super().__init__(f"answered {response.status_code}")
        self.response = response
        self.wait = wait


def _retry_hook(exc: Exception) -> bool | float:
    """stamina's ``on``: the wait GitHub's answer calls for, or plain backoff for connection errors."""
    if isinstance(exc, _RetryableAnswer):
        return exc.wait
    return isinstance(exc, httpx.HTTPError)


class GitHubForge:
    """GitHub REST v3 over httpx (``BGAGENT_GITHUB_API_URL``), bearer-token auth."""

    def __init__(
        self,
        api_url: str,
        token: str | None,
        *,
        timeout: float = 30.0,
        attempts: int = 4,
        retry_base_s: float = 0.5,
        max_wait_s: float = 30.0,
    ) -> None:
        self._attempts = attempts
        self._secrets = (token,) if token else ()
        self._retry_base_s = retry_base_s
        self._max_wait_s = max_wait_s
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.AsyncClient(base_url=api_url.rstrip("/"), headers=headers, timeout=timeout)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST call; 5xx, connection errors and rate limits are retried with backoff (stamina).

        After ``attempts`` tries the last answer (or connection error) is final: ForgeError.
        """
        try:
            async for attempt in stamina.retry_context(
                on=_retry_hook,
                attempts=self._attempts,
                timeout=None,
                wait_initial=self._retry_base_s,
                wait_max=self._max_wait_s,
                wait_jitter=self._retry_base_s,
            ):
                with attempt:
                    response = await self._client.request(method, path, **kwargs)
                    if response.status_code >= 400:
                        record_github_error("runner", method, response.status_code)
                    wait = self._retry_wait(response, attempt.num)
                    if wait is not None:
                        if attempt.num < self._attempts:
                            logger.warning(
                                "GitHub %s %s answered %d; retrying in %.1fs",
                                method,
                                path,
                                response.status_code,
                                wait,
                            )
                        raise _RetryableAnswer(response, wait)
        except _RetryableAnswer as exc:
            response = exc.response  # still failing after the last try
        except httpx.HTTPError as exc:
            record_github_error("runner", method, "transport")
            raise ForgeError(self._redact(f"GitHub {method} {path} failed: {exc!r}")) from exc
        if response.status_code >= 400:
            detail = self._redact(response.text)[:300]
            raise ForgeError(f"GitHub {method} {path} answered {response.status_code}: {detail}")
        return response.json()

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def _retry_wait(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying, or None when the answer is final."""
        status = response.status_code
        headers = response.headers
        backoff = self._retry_base_s * 2.0 ** (attempt - 1)
        if status >= 500:
            return backoff
        if status not in (403, 429):
            return None
        if "retry-after" in headers:
            wait = float(headers["retry-after"])
        elif headers.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in headers:
            wait = float(headers["x-ratelimit-reset"]) - time.time()
        elif status == 429:
            wait = backoff
        else:
            return None  # a plain 403 is a permission problem, not a limit
        return min(max(wait, backoff), self._max_wait_s)

    async def get_issue(self, owner: str, name: str, number: int) -> Issue:
        data = await self._call("GET", f"/repos/{owner}/{name}/issues/{number}")
        return Issue(number=number, title=str(data.get("title") or ""), body=str(data.get("body") or ""))

    async def get_pull(self, owner: str, name: str, number: int) -> PullRequest:
        return _pull(await self._call("GET", f"/repos/{owner}/{name}/pulls/{number}"))

    async def find_open_pull(self, owner: str, name: str, branch: str) -> PullRequest | None:
        data = await self._call(
            "GET", f"/repos/{owner}/{name}/pulls", params={"head": f"{owner}:{branch}", "state": "open"}
        )
        pulls = [p for p in data if p.get("head", {}).get("ref") == branch]
        return _pull(pulls[0]) if pulls else None

    async def open_pull(
        self, owner: str, name: str, *, head: str, base: str, title: str, body: str
    ) -> PullRequest:
        # The caller builds title and body (prompts.py); shaped again here so that no caller can send
        # GitHub a secret of ours, a control character, a multi-line title or an oversized body.
        data = await self._call(
            "POST",
            f"/repos/{owner}/{name}/pulls",
            json={
                "title": title_line(self._redact(title), PR_TITLE_MAX),
                "head": head,
                "base": base,
                "body": bounded(self._redact(body), BODY_MAX),
            },
        )
        return _pull(data)

    async def post_review(self, owner: str, name: str, number: int, body: str) -> str:
        review = bounded(self._redact(body), BODY_MAX)
        data = await self._call(
            "POST", f"/repos/{owner}/{name}/pulls/{number}/reviews", json={"body": review, "event": "COMMENT"}
        )
        return str(data.get("html_url") or data.get("url") or "")
