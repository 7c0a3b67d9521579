"""The REST subset of api.github.com that bgagent uses, as an in-memory model with GitHub's shapes.

Thread-safe: the HTTP server calls ``RestModel.handle`` from many threads.
"""

from __future__ import annotations

import copy
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .git import branch_sha, init_bare_repo, repo_path

DOCS = "https://docs.github.com/rest"
MAX_COMMENT_BODY = 65536
CONDITIONAL_HEADERS = ("if-match", "if-none-match", "if-modified-since", "if-unmodified-since")
UNSAFE_METHODS = ("POST", "PATCH", "PUT", "DELETE")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    applied: bool = False
    """An injected failure whose request took effect anyway (a gateway error after the write)."""


@dataclass
class Fault:
    """An injected failure: the next ``times`` matching requests get ``status`` (None = until cleared)."""

    status: int
    retry_after: int | None = None
    reset_in: float | None = None
    times: int | None = 1
    path_prefix: str = ""
    method: str | None = None
    message: str | None = None
    hits: int = 0
    applied: bool = False

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        return path.startswith(self.path_prefix)

    def reply(self) -> Reply:
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        if self.reset_in is not None:
            headers["x-ratelimit-remaining"] = "0"
            headers["x-ratelimit-limit"] = "5000"
            headers["x-ratelimit-reset"] = str(int(time.time() + self.reset_in + 0.999))
        if self.message:
            message = self.message
        elif self.status in (403, 429) and self.reset_in is not None:
            message = "API rate limit exceeded for installation."
        elif self.status in (403, 429):
            message = "You have exceeded a secondary rate limit. Please wait a few minutes and try again."
        elif self.status >= 500:
            message = "Server Error"
        else:
            message = "Injected failure"
        return Reply(
            self.status, {"message": message, "documentation_url": DOCS}, headers, applied=self.applied
        )


def _error(status: int, message: str, **extra: Any) -> Reply:
    return Reply(status, {"message": message, "documentation_url": DOCS, **extra})


def _validation(message: str, **error: Any) -> Reply:
    return _error(422, "Validation Failed", errors=[{"message": message, **error}])


Handler = Callable[["RestModel", re.Match[str], Mapping[str, list[str]], Any], Reply]
_ROUTES: list[tuple[str, re.Pattern[str], str, Handler]] = []
_SEG = r"([A-Za-z0-9_.-]+)"


def route(method: str, template: str) -> Callable[[Handler], Handler]:
    pattern = "^" + re.sub(r"\{(\w+)\}", lambda m: r"(\d+)" if m.group(1) in ("n", "id") else _SEG, template)
    compiled = re.compile(pattern + "$")

    def register(fn: Handler) -> Handler:
        _ROUTES.append((method, compiled, f"{method} {template}", fn))
        return fn

    return register


def match_route(method: str, path: str) -> tuple[str, re.Match[str], Handler] | None:
    for m, pattern, name, fn in _ROUTES:
        if m == method:
            found = pattern.match(path)
            if found:
                return name, found, fn
    return None


class RestModel:
    """Repositories, issues, pull requests, comments and reviews, with an edit history of every comment."""

    def __init__(self, root: Path, base_url: str, bot_login: str) -> None:
        self.root = root
        self.base_url = base_url
        self.bot_login = bot_login
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], dict[str, Any]] = {}
        self.issues: dict[tuple[str, str, int], dict[str, Any]] = {}
        self.pulls: dict[tuple[str, str, int], dict[str, Any]] = {}
        self.comments: dict[int, dict[str, Any]] = {}
        self.reviews: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self.log: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self._next_number: Counter[tuple[str, str]] = Counter()
        self._next_id = 1_000_000

    # ---- test controls -------------------------------------------------------------------------

    def create_repo(self, owner: str, name: str, files: Mapping[str, str], default_branch: str) -> None:
        with self.lock:
            if (owner, name) in self.repos:
                raise FileExistsError(f"repository {owner}/{name} already exists")
            init_bare_repo(self.root, owner, name, files, default_branch)
            self.repos[(owner, name)] = {"id": self._new_id(), "default_branch": default_branch}

    def create_issue(self, owner: str, name: str, title: str, body: str) -> int:
        with self.lock:
            if (owner, name) not in self.repos:
                raise KeyError(f"no repository {owner}/{name}")
            number = self._new_number(owner, name)
            self.issues[(owner, name, number)] = {
                "id": self._new_id(),
                "number": number,
                "title": title,
                "body": body,
                "state": "open",
                "created_at": _now(),
            }
            return number

    def delete_comment(self, comment_id: int) -> None:
        """Delete a comment as a user would in the web UI (later PATCHes get 404)."""
        with self.lock:
            c = self.comments[comment_id]
            c["deleted"] = True
            c["history"].append({"body": None, "at": _now(), "action": "deleted"})

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(
                {
                    "repos": [
                        {"full_name": f"{o}/{n}", "default_branch": r["default_branch"]}
                        for (o, n), r in self.repos.items()
                    ],
                    "issues": [
                        {"repo": f"{o}/{n}", **issue} for (o, n, _), issue in sorted(self.issues.items())
                    ],
                    "pulls": [self._pull_json(o, n, pr) for (o, n, _), pr in sorted(self.pulls.items())],
                    "comments": [dict(c) for c in self.comments.values()],
                    "reviews": list(self.reviews),
                    "requests": dict(self.counts),
                }
            )

    def take_fault(self, method: str, path: str) -> Reply | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    return fault.reply()
            return None

    def record(
        self, route_name: str, method: str, path: str, status: int, headers: Mapping[str, str]
    ) -> None:
        with self.lock:
            self.counts[route_name] += 1
            self.log.append(
                {
                    "route": route_name,
                    "method": method,
                    "path": path,
                    "status": status,
                    "at": time.time(),
                    "conditional": any(h in headers for h in CONDITIONAL_HEADERS),
                    "user_agent": headers.get("user-agent"),
                }
            )

    # ---- helpers -------------------------------------------------------------------------------

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _new_number(self, owner: str, name: str) -> int:
        self._next_number[(owner, name)] += 1
        return self._next_number[(owner, name)]

    def _repo_json(self, owner: str, name: str) -> dict[str, Any]:
        repo = self.repos[(owner, name)]
        return {
            "id": repo["id"],
            "name": name,
            "full_name": f"{owner}/{name}",
            "owner": {"login": owner, "type": "User"},
            "private": False,
            "default_branch": repo["default_branch"],
            "html_url": f"{self.base_url}/{owner}/{name}",
            "clone_url": f"{self.base_url}/{owner}/{name}.git",
            "url": f"{self.base_url}/repos/{owner}/{name}",
        }

    def _pull_json(self, owner: str, name: str, pr: dict[str, Any]) -> dict[str, Any]:
        bare = repo_path(self.root, owner, name)
        head_sha = branch_sha(bare, pr["head"]) or pr["head_sha"]
        base_sha = branch_sha(bare, pr["base"]) or ""
        repo = self._repo_json(owner, name)
        number = pr["number"]
        return {
            "id": pr["id"],
            "number": number,
            "state": pr["state"],
            "title": pr["title"],
            "body": pr["body"],
            "draft": pr["draft"],
            "merged": False,
            "user": {"login": self.bot_login, "type": "Bot"},
            "html_url": f"{self.base_url}/{owner}/{name}/pull/{number}",
            "url": f"{self.base_url}/repos/{owner}/{name}/pulls/{number}",
            "head": {"ref": pr["head"], "label": f"{owner}:{pr['head']}", "sha": head_sha, "repo": repo},
            "base": {"ref": pr["base"], "label": f"{owner}:{pr['base']}", "sha": base_sha, "repo": repo},
            "created_at": pr["created_at"],
            "updated_at": pr["updated_at"],
        }

    def _comment_json(self, c: dict[str, Any]) -> dict[str, Any]:
        kind = "pull" if (c["owner"], c["repo"], c["issue_number"]) in self.pulls else "issues"
        return {
            "id": c["id"],
            "node_id": f"IC_{c['id']}",
            "body": c["body"],
            "user": {"login": self.bot_login, "type": "Bot"},
            "html_url": f"{self.base_url}/{c['owner']}/{c['repo']}/{kind}/{c['issue_number']}"
            f"#issuecomment-{c['id']}",
            "issue_url": f"{self.base_url}/repos/{c['owner']}/{c['repo']}/issues/{c['issue_number']}",
            "url": f"{self.base_url}/repos/{c['owner']}/{c['repo']}/issues/comments/{c['id']}",
            "created_at": c["created_at"],
            "updated_at": c["updated_at"],
        }

    def _live_comment(self, owner: str, name: str, comment_id: int) -> dict[str, Any] | None:
        c = self.comments.get(comment_id)
        if c is None or c["deleted"] or (c["owner"], c["repo"]) != (owner, name):
            return None
        return c


def _body_text(body: Any, key: str = "body") -> str | None:
    if not isinstance(body, dict):
        return None
    value = body.get(key)
    return value if isinstance(value, str) else None


def _has_repo(m: RestModel, owner: str, name: str) -> bool:
    return (owner, name) in m.repos


@route("GET", "/user")
def get_user(m: RestModel, match: re.Match[str], query: Mapping[str, list[str]], body: Any) -> Reply:
    return Reply(200, {"login": m.bot_login, "type": "Bot"})


@route("GET", "/repos/{owner}/{repo}")
def get_repo(m: RestModel, match: re.Match[str], query: Mapping[str, list[str]], body: Any) -> Reply:
    owner, name = match.groups()
    if not _has_repo(m, owner, name):
        return _error(404, "Not Found")
    return Reply(200, m._repo_json(owner, name))


@route("GET", "/repos/{owner}/{repo}/pulls")
def list_pulls(m: RestModel, match: re.Match[str], query: Mapping[str, list[str]], body: Any) -> Reply:
    owner, name = match.groups()
    if not _has_repo(m, owner, name):
        return _error(404, "Not Found")
    state = query.get("state", ["open"])[0]
    head = query.get("head", [None])[0]
    base = query.get("base", [None])[0]
    out = []
    for (o, n, _), pr in sorted(m.pulls.items()):
        if (o, n) != (owner, name) or (state != "all" and pr["state"] != state):
            continue
        if head is not None and head not in (f"{owner}:{pr['head']}", pr["head"]):
            continue
        if base is not None and base != pr["base"]:
            continue
        out.append(m._pull_json(o, n, pr))
    return Reply(200, out)


@route("POST", "/repos/{owner}/{repo}/pulls")
def create_pull(m: RestModel, match: re.Match[str], query: Mapping[str, list[str]], body: Any) -> Reply:
    owner, name = match.groups()
    if not _has_repo(m, owner, name):
        return _error(404, "Not Found")
    title, head, base = _body_text(body, "title"), _body_text(body, "head"), _body_text(body, "base")
    if not title or not head or not base:
        return _validation("title, head and base are required", resource="PullRequest", code="missing_field")
    head = head.split(":", 1)[-1]
    bare = repo_path(m.root, owner, name)
    head_sha, base_sha = branch_sha(bare, head), branch_sha(bare, base)
    if base_sha is None:
        return _validation("base does not exist", resource="PullRequest", field="base", code="invalid")
    if head_sha is None:
        return _validation("head does not exist", resource="PullRequest", field="head", code="invalid")
    for (o, n, _), pr in m.pulls.items():
        if (o, n) == (owner, name) and pr["head"] == head and pr["state"] == "open":
            return _validation(f"A pull request already exists for {owner}:{head}.", resource="PullRequest")
    if head_sha == base_sha:
        return _validation(f"No commits between {base} and {head}", resource="PullRequest", code="custom")
    number = m._new_number(owner, name)
    pr = {
        "id": m._new_id(),
        "number": number,
        "state": "open",
        "title": title,
        "body": _body_text(body) or "",
        "draft": bool(body.get("draft", False)),
        "head": head,
        "base": base,
        "head_sha": head_sha,
        "created_at": _now(),
        "updated_at": _now(),
    }
    m.pulls[(owner, name, number)] = pr
    m.issues[(owner, name, number)] = {
        "id": pr["id"],
        "number": number,
        "title": title,
        "body": pr["body"],
        "state": "open",
        "created_at": pr["created_at"],
        "pull_request": True,
    }
    return Reply(201, m._pull_json(owner, name, pr))


@route("GET", "/repos/{owner}/{repo}/pulls/{n}")
def get_pull(m: RestModel, match: re.Match[str], query: Mapping[str, list[str]], body: Any) -> Reply:
    owner, name, n = match.groups()
    pr = m.pulls.get((owner, name, int(n)))
    if pr is None:
        return _error(404, "Not Found")
    return Reply(200, m._pull_json(owner, name, pr))


@route("PATCH", "/repos/{owner}/{repo}/pulls/{n}")
def update_pull(m: RestModel, match: re.Match[str], query: Mapping[str, list[str]], body: Any) -> Reply:
    owner, name, n = match.groups()
    pr = m.pulls.get((owner, name, int(n)))
    if pr is None:
        return _error(404, "Not Found")
    if isinstance(body, dict):
        for key in ("title", "body", "state"):
            if isinstance(body.get(key), str):
                pr[key] = body[key]
        pr["updated_at"] = _now()
    return Reply(200, m._pull_json(owner, name, pr))


@route("GET", "/repos/{owner}/{repo}/pulls/{n}/reviews")
def list_reviews(m: RestModel, match: re.Match[str], query: Mapping[str, list[str]], body: Any) -> Reply:
    owner, name, n = match.groups()
    if (owner, name, int(n)) not in m.pulls:
        return _error(404, "Not Found")
    return Reply(200, [r for r in m.reviews if (r["repo"], r["pull_number"]) == (f"{owner}/{name}", int(n))])


@route("POST", "/repos/{owner}/{repo}/pulls/{n}/reviews")
def create_review(m: RestModel, match: re.Match[str], query: Mapping[str, list[str]], body: Any) -> Reply:
    owner, name, n = match.groups()
    pr = m.pulls.get((owner, name, int(n)))
    if pr is None:
        return _error(404, "Not Found")
    event = (body.get("event") if isinstance(body, dict) else None) or "PENDING"
    text = _body_text(body) or ""
    if event in ("COMMENT", "REQUEST_CHANGES") and not text and not (body or {}).get("comments"):
        return _validation(f"Body is required for event {event}", resource="PullRequestReview")
    states = {"APPROVE": "APPROVED", "REQUEST_CHANGES": "CHANGES_REQUESTED", "COMMENT": "COMMENTED"}
    review_id = m._new_id()
    review = {
        "id": review_id,
        "repo": f"{owner}/{name}",
        "pull_number": int(n),
        "body": text,
        "state": states.get(event, "PENDING"),
        "event": event,
        "comments": list((body or {}).get("comments") or []),
        "commit_id": m._pull_json(owner, name, pr)["head"]["sha"],
        "user": {"login": m.bot_login, "type": "Bot"},
        "html_url": f"{m.base_url}/{owner}/{name}/pull/{n}#pullrequestreview-{review_id}",
        "submitted_at": _now(),
    }
    m.reviews.append(review)
    return Reply(200, review)


@route("GET", "/repos/{owner}/{repo}/issues/{n}")
def get_issue(m: RestModel, match: re.Match[str], query: Mapping[str, list[str]], body: Any) -> Reply:
    owner, name, n = match.groups()
    issue = m.issues.get((owner, name, int(n)))
    if issue is None:
        return _error(404, "Not Found")
    return Reply(200, {**issue, "html_url": f"{m.base_url}/{owner}/{name}/issues/{n}"})


@route("GET", "/repos/{owner}/{repo}/issues/{n}/comments")
def list_comments(m: RestModel, match: re.Match[str], query: Mapping[str, list[str]], body: Any) -> Reply:
    owner, name, n = match.groups()
    if (owner, name, int(n)) not in m.issues:
        return _error(404, "Not Found")
    out = [
        m._comment_json(c)
        for c in m.comments.values()
        if (c["owner"], c["repo"], c["issue_number"]) == (owner, name, int(n)) and not c["deleted"]
    ]
    return Reply(200, out)


def _check_body(text: str | None) -> Reply | None:
    if not text:
        return _validation("Body cannot be blank", resource="IssueComment", code="missing_field")
    if len(text) > MAX_COMMENT_BODY:
        return _validation(
            f"Body is too long (maximum is {MAX_COMMENT_BODY} characters)", resource="IssueComment"
        )
    return None


@route("POST", "/repos/{owner}/{repo}/issues/{n}/comments")
def create_comment(m: RestModel, match: re.Match[str], query: Mapping[str, list[str]], body: Any) -> Reply:
    owner, name, n = match.groups()
    if (owner, name, int(n)) not in m.issues:
        return _error(404, "Not Found")
    text = _body_text(body)
    invalid = _check_body(text)
    if invalid:
        return invalid
    now = _now()
    comment: dict[str, Any] = {
        "id": m._new_id(),
        "owner": owner,
        "repo": name,
        "issue_number": int(n),
        "body": text,
        "deleted": False,
        "created_at": now,
        "updated_at": now,
        "history": [{"body": text, "at": now, "action": "created"}],
    }
    m.comments[int(comment["id"])] = comment
    return Reply(201, m._comment_json(comment))


@route("GET", "/repos/{owner}/{repo}/issues/comments/{id}")
def get_comment(m: RestModel, match: re.Match[str], query: Mapping[str, list[str]], body: Any) -> Reply:
    owner, name, cid = match.groups()
    c = m._live_comment(owner, name, int(cid))
    if c is None:
        return _error(404, "Not Found")
    return Reply(200, m._comment_json(c))


@route("PATCH", "/repos/{owner}/{repo}/issues/comments/{id}")
def update_comment(m: RestModel, match: re.Match[str], query: Mapping[str, list[str]], body: Any) -> Reply:
    owner, name, cid = match.groups()
    c = m._live_comment(owner, name, int(cid))
    if c is None:
        return _error(404, "Not Found")
    text = _body_text(body)
    invalid = _check_body(text)
    if invalid:
        return invalid
    c["body"] = text
    c["updated_at"] = _now()
    c["history"].append({"body": text, "at": c["updated_at"], "action": "edited"})
    return Reply(200, m._comment_json(c))


@route("DELETE", "/repos/{owner}/{repo}/issues/comments/{id}")
def delete_comment(m: RestModel, match: re.Match[str], query: Mapping[str, list[str]], body: Any) -> Reply:
    owner, name, cid = match.groups()
    c = m._live_comment(owner, name, int(cid))
    if c is None:
        return _error(404, "Not Found")
    c["deleted"] = True
    c["history"].append({"body": None, "at": _now(), "action": "deleted"})
    return Reply(204)
