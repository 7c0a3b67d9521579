"""The HTTP front of the fake GitHub: Git smart HTTP, the REST subset, and ``/_admin`` test controls."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .git import Reader, branch_sha, repo_path, run_http_backend
from .rest import CONDITIONAL_HEADERS, UNSAFE_METHODS, Fault, Reply, RestModel, match_route

logger = logging.getLogger(__name__)

_GIT = re.compile(
    r"^/(?P<owner>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+?)(?:\.git)?"
    r"/(?P<rest>info/refs|git-upload-pack|git-receive-pack)$"
)
_GIT_ROUTES = {
    "info/refs": "GET /{owner}/{repo}.git/info/refs",
    "git-upload-pack": "POST /{owner}/{repo}.git/git-upload-pack",
    "git-receive-pack": "POST /{owner}/{repo}.git/git-receive-pack",
}


def read_chunked(stream: Reader) -> Iterator[bytes]:
    """Decode an HTTP/1.1 chunked request body."""
    while True:
        line = stream.readline()
        if not line:
            return
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while stream.readline() not in (b"\r\n", b"\n", b""):
                pass
            return
        data = stream.read(size)
        stream.readline()
        yield data


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], model: RestModel, token: str) -> None:
        super().__init__(address, _Handler)
        self.model = model
        self.token = token


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("fake github: %s", format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    # ---- plumbing ------------------------------------------------------------------------------

    def _lower_headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def _chunked(self) -> bool:
        return "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    def _read_body(self) -> bytes:
        if self._chunked():
            return b"".join(read_chunked(self.rfile))
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme in ("bearer", "token"):
            return value.strip() == self.server.token
        if scheme == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return self.server.token in (password, user)
        return False

    def _send_json(self, reply: Reply) -> None:
        payload = b"" if reply.body is None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("x-github-request-id", f"FAKE:{id(self):x}")
        self.send_header("x-github-api-version-selected", "2022-11-28")
        for key, value in reply.headers.items():
            self.send_header(key, value)
        if "x-ratelimit-remaining" not in {k.lower() for k in reply.headers}:
            self.send_header("x-ratelimit-limit", "5000")
            self.send_header("x-ratelimit-remaining", "4999")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        model = self.server.model
        if path.startswith("/_admin/"):
            self._send_json(_admin(model, method, path, self._read_body()))
            return
        git = _GIT.match(path)
        found = None
        raw = b""
        if git:
            name = _GIT_ROUTES[git.group("rest")]
            body_unread = method == "POST"
        else:
            found = match_route(method, path)
            name = found[0] if found else f"{method} <unknown>"
            raw = self._read_body()
            body_unread = False
        headers = self._lower_headers()
        reply = model.take_fault(method, path)
        if reply is None and not self._authorized():
            message = "Requires authentication" if "authorization" not in headers else "Bad credentials"
            reply = Reply(401, {"message": message, "documentation_url": "https://docs.github.com/rest"})
            if git:
                reply.headers["WWW-Authenticate"] = 'Basic realm="GitHub"'
        if reply is None and git:
            status = self._serve_git(method, git, parts.query)
            model.record(name, method, path, status, headers)
            return
        if reply is None:
            reply = self._rest(method, path, query, raw, headers, found)
        elif reply.applied and not git and self._authorized():
            self._rest(method, path, query, raw, headers, found)  # it happens; the caller hears the fault
        if body_unread:
            self.close_connection = True
        model.record(name, method, path, reply.status, headers)
        self._send_json(reply)

    def _rest(
        self,
        method: str,
        path: str,
        query: Mapping[str, list[str]],
        raw: bytes,
        headers: Mapping[str, str],
        found: Any,
    ) -> Reply:
        if method in UNSAFE_METHODS and any(h in headers for h in CONDITIONAL_HEADERS):
            return Reply(
                400,
                {
                    "message": "Conditional request headers are not allowed in unsafe requests "
                    "unless supported by the endpoint",
                    "documentation_url": "https://docs.github.com/rest",
                },
            )
        if found is None:
            return Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return Reply(400, {"message": "Problems parsing JSON"})
        _, match, handler = found
        with self.server.model.lock:
            reply: Reply = handler(self.server.model, match, query, body)
        return reply

    def _serve_git(self, method: str, git: re.Match[str], query: str) -> int:
        length = self.headers.get("Content-Length")
        response = run_http_backend(
            self.server.model.root,
            method=method,
            path_info=f"/{git.group('owner')}/{git.group('repo')}.git/{git.group('rest')}",
            query=query,
            headers=dict(self.headers.items()),
            body=self.rfile if method == "POST" else None,
            content_length=int(length) if length else None,
            chunked=self._chunked(),
            remote_user="x-access-token",
            read_chunked=read_chunked,
        )
        try:
            self.send_response(response.status)
            known_length = None
            for key, value in response.headers:
                if key.lower() == "content-length":
                    known_length = value
                    continue
                self.send_header(key, value)
            if known_length is not None:
                self.send_header("Content-Length", known_length)
                self.end_headers()
                for piece in response.body:
                    self.wfile.write(piece)
            else:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for piece in response.body:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        finally:
            response.finish()
        return response.status


def _admin(model: RestModel, method: str, path: str, raw: bytes) -> Reply:
    """Test controls over HTTP for the process mode (no auth: bind it to loopback)."""
    try:
        body: dict[str, Any] = json.loads(raw) if raw else {}
    except ValueError:
        return Reply(400, {"message": "Problems parsing JSON"})
    try:
        if method == "GET" and path == "/_admin/state":
            return Reply(200, model.snapshot())
        if method == "GET" and path == "/_admin/requests":
            with model.lock:
                return Reply(200, {"counts": dict(model.counts), "log": list(model.log)})
        if method == "POST" and path == "/_admin/repos":
            model.create_repo(
                body["owner"], body["name"], body.get("files") or {}, body.get("default_branch", "main")
            )
            return Reply(201, {"full_name": f"{body['owner']}/{body['name']}"})
        if method == "POST" and path == "/_admin/issues":
            title, text = body.get("title", ""), body.get("body", "")
            number = model.create_issue(body["owner"], body["repo"], title, text)
            return Reply(201, {"number": number})
        if method == "POST" and path == "/_admin/faults":
            fault = Fault(**{k: v for k, v in body.items() if k != "hits"})
            with model.lock:
                model.faults.append(fault)
            return Reply(201, {"status": fault.status})
        if method == "DELETE" and path == "/_admin/faults":
            with model.lock:
                model.faults.clear()
            return Reply(204)
        deleted = re.match(r"^/_admin/comments/(\d+)$", path)
        if method == "DELETE" and deleted:
            model.delete_comment(int(deleted.group(1)))
            return Reply(204)
        branch = re.match(r"^/_admin/branches/([^/]+)/([^/]+)/(.+)$", path)
        if method == "GET" and branch:
            sha = branch_sha(repo_path(model.root, branch.group(1), branch.group(2)), branch.group(3))
            return Reply(200 if sha else 404, {"sha": sha})
    except (KeyError, TypeError, FileExistsError) as exc:
        return Reply(400, {"message": f"bad admin request: {exc!r}"})
    return Reply(404, {"message": "Not Found"})


class FakeGitHub:
    """github.com + api.github.com on one local port, in a background thread.

    >>> with FakeGitHub(tmp_path, token="t") as gh:
    ...     gh.create_repo("acme", "widgets", {"README.md": "hi"})
    ...     number = gh.create_issue("acme", "widgets", "Bug")
    """

    def __init__(
        self,
        root_dir: str | Path,
        *,
        token: str = "ghs_fake_token",
        host: str = "127.0.0.1",
        port: int = 0,
        bot_login: str = "bgagent[bot]",
    ) -> None:
        self.root = Path(root_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = token
        self._host = host
        self._port = port
        self._bot_login = bot_login
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.model = RestModel(self.root, base_url="http://unstarted", bot_login=bot_login)

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeGitHub:
        self._server = _Server((self._host, self._port), self.model, self.token)
        self._port = int(self._server.server_address[1])
        self.model.base_url = self.url
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-github", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def api_url(self) -> str:
        """Base for REST calls (BGAGENT_GITHUB_API_URL)."""
        return self.url

    @property
    def git_url(self) -> str:
        """Base for clone URLs (BGAGENT_GITHUB_GIT_URL): ``{git_url}/{owner}/{repo}.git``."""
        return self.url

    # ---- test controls -------------------------------------------------------------------------

    def create_repo(
        self, owner: str, name: str, files: Mapping[str, str] | None = None, default_branch: str = "main"
    ) -> str:
        """A bare repository with one commit of ``files`` on ``default_branch``; returns ``owner/name``."""
        self.model.create_repo(owner, name, files or {}, default_branch)
        return f"{owner}/{name}"

    def create_issue(self, owner: str, name: str, title: str = "An issue", body: str = "") -> int:
        """An open issue; returns its number (issues and pull requests share the numbering)."""
        return self.model.create_issue(owner, name, title, body)

    def clone_url(self, owner: str, name: str, *, with_token: bool = False) -> str:
        if with_token:
            return f"http://x-access-token:{self.token}@{self._host}:{self._port}/{owner}/{name}.git"
        return f"{self.git_url}/{owner}/{name}.git"

    def repo_dir(self, owner: str, name: str) -> Path:
        return repo_path(self.root, owner, name)

    def branch_sha(self, owner: str, name: str, branch: str) -> str | None:
        return branch_sha(self.repo_dir(owner, name), branch)

    def state(self) -> dict[str, Any]:
        """Repos, issues, pulls, comments (each with ``history`` and ``deleted``), reviews, request counts."""
        return self.model.snapshot()

    def comments(self, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        return [c for c in self.state()["comments"] if include_deleted or not c["deleted"]]

    def pulls(self) -> list[dict[str, Any]]:
        return list(self.state()["pulls"])

    def delete_comment(self, comment_id: int) -> None:
        """Delete a comment as a person would in the web UI."""
        self.model.delete_comment(comment_id)

    def inject(
        self,
        status: int = 403,
        *,
        retry_after: int | None = None,
        reset_in: float | None = None,
        times: int | None = 1,
        path_prefix: str = "",
        method: str | None = None,
        message: str | None = None,
        applied: bool = False,
    ) -> Fault:
        """Fail the next ``times`` requests whose path starts with ``path_prefix`` (and method, if given).

        ``retry_after`` sets ``Retry-After``; ``reset_in`` (seconds) sets ``x-ratelimit-remaining: 0`` and
        ``x-ratelimit-reset`` (epoch seconds), like GitHub's primary limit. ``times=None`` lasts until
        ``clear_faults()``. ``applied=True``: the request takes effect and then fails (GitHub's 502 after
        the write), so a blind retry of a POST would create a second object.
        """
        fault = Fault(status, retry_after, reset_in, times, path_prefix, method, message, applied=applied)
        with self.model.lock:
            self.model.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.model.lock:
            self.model.faults.clear()

    def request_counts(self) -> dict[str, int]:
        """Requests per route template, e.g. ``"PATCH /repos/{owner}/{repo}/issues/comments/{id}"``."""
        with self.model.lock:
            return dict(self.model.counts)

    def request_count(self, route: str) -> int:
        with self.model.lock:
            return self.model.counts[route]

    def request_log(self) -> list[dict[str, Any]]:
        """Every request: route, method, path, status, time, whether it carried conditional headers."""
        with self.model.lock:
            return [dict(entry) for entry in self.model.log]
