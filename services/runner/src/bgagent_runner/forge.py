"""The forge port (pull requests, reviews, issues) and its GitHub REST adapter."""

from __future__ import annotations

import logging
from typing import Any, Protocol

import httpx
import msgspec

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


class GitHubForge:
    """GitHub REST v3 over httpx (``BGAGENT_GITHUB_API_URL``), bearer-token auth."""

    def __init__(self, api_url: str, token: str | None, *, timeout: float = 30.0) -> None:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.AsyncClient(base_url=api_url.rstrip("/"), headers=headers, timeout=timeout)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ForgeError(f"GitHub {method} {path} failed: {exc!r}") from exc
        if response.status_code >= 400:
            raise ForgeError(f"GitHub {method} {path} answered {response.status_code}: {response.text[:300]}")
        return response.json()

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
        data = await self._call(
            "POST",
            f"/repos/{owner}/{name}/pulls",
            json={"title": title, "head": head, "base": base, "body": body},
        )
        return _pull(data)

    async def post_review(self, owner: str, name: str, number: int, body: str) -> str:
        data = await self._call(
            "POST", f"/repos/{owner}/{name}/pulls/{number}/reviews", json={"body": body, "event": "COMMENT"}
        )
        return str(data.get("html_url") or data.get("url") or "")
