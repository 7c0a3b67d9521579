"""Bare repositories on disk and ``git http-backend`` as CGI (the real Git smart HTTP protocol)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Protocol, cast


class Reader(Protocol):
    """What a request body stream offers (the server's ``rfile``)."""

    def read(self, size: int = -1, /) -> bytes: ...

    def readline(self, size: int = -1, /) -> bytes: ...


logger = logging.getLogger(__name__)

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Fake GitHub",
    "GIT_AUTHOR_EMAIL": "fake-github@example.invalid",
    "GIT_COMMITTER_NAME": "Fake GitHub",
    "GIT_COMMITTER_EMAIL": "fake-github@example.invalid",
}


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_IDENTITY)
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def run_git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd``; its stdout (stripped); CalledProcessError on failure."""
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=_git_env(), capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


def repo_path(root: Path, owner: str, name: str) -> Path:
    return root / owner / f"{name}.git"


def init_bare_repo(
    root: Path, owner: str, name: str, files: Mapping[str, str], default_branch: str = "main"
) -> Path:
    """A bare repository at ``root/owner/name.git`` whose ``default_branch`` holds one commit of ``files``."""
    bare = repo_path(root, owner, name)
    if bare.exists():
        raise FileExistsError(f"repository {owner}/{name} already exists at {bare}")
    bare.parent.mkdir(parents=True, exist_ok=True)
    run_git(bare.parent, "init", "-q", "--bare", "-b", default_branch, bare.name)
    run_git(bare, "config", "http.receivepack", "true")
    with tempfile.TemporaryDirectory(prefix="fake-github-seed-") as tmp:
        work = Path(tmp)
        run_git(work, "init", "-q", "-b", default_branch)
        for rel, content in (files or {"README.md": f"# {name}\n"}).items():
            target = work / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        run_git(work, "add", "-A")
        run_git(work, "commit", "-q", "-m", "Initial commit")
        run_git(work, "push", "-q", str(bare), f"HEAD:refs/heads/{default_branch}")
    return bare


def branch_sha(bare: Path, branch: str) -> str | None:
    """The commit a branch points at, or None when it does not exist."""
    try:
        return run_git(bare, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}")
    except subprocess.CalledProcessError:
        return None


class CgiResponse:
    """Status, headers and a body iterator parsed from a CGI program's output; ``finish()`` reaps it."""

    def __init__(
        self,
        status: int,
        headers: list[tuple[str, str]],
        body: Iterator[bytes],
        proc: subprocess.Popen[bytes],
        threads: list[threading.Thread],
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self._proc = proc
        self._threads = threads

    def finish(self) -> None:
        """Wait for the program and its pipe threads; close every pipe."""
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        for thread in self._threads:
            thread.join(timeout=10)
        for pipe in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _feed(
    stdin: IO[bytes],
    body: Reader | None,
    content_length: int | None,
    chunked: bool,
    read_chunked: Callable[[Reader], Iterator[bytes]],
) -> None:
    """Copy the request body into the CGI program's stdin, then close it."""
    try:
        if body is not None and chunked:
            for piece in read_chunked(body):
                stdin.write(piece)
        elif body is not None and content_length:
            remaining = content_length
            while remaining > 0:
                piece = body.read(min(65536, remaining))
                if not piece:
                    break
                stdin.write(piece)
                remaining -= len(piece)
    except OSError:
        pass  # the program exited early; its output says why
    finally:
        with contextlib.suppress(OSError):
            stdin.close()


def _read_cgi_headers(stdout: Reader) -> tuple[int, list[tuple[str, str]]]:
    status = 200
    headers: list[tuple[str, str]] = []
    while True:
        line = stdout.readline()
        if not line or line in (b"\r\n", b"\n"):
            return status, headers
        key, _, value = line.decode("latin-1").partition(":")
        key, value = key.strip(), value.strip()
        if key.lower() == "status":
            status = int(value.split()[0])
        else:
            headers.append((key, value))


def _cgi_env(
    root: Path, method: str, path_info: str, query: str, headers: Mapping[str, str], remote_user: str
) -> dict[str, str]:
    env = _git_env()
    env.update(
        {
            "GIT_PROJECT_ROOT": str(root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path_info,
            "QUERY_STRING": query,
            "REQUEST_METHOD": method,
            "CONTENT_TYPE": headers.get("Content-Type", ""),
            "REMOTE_USER": remote_user,
            "REMOTE_ADDR": "127.0.0.1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
    )
    if "Content-Encoding" in headers:
        env["HTTP_CONTENT_ENCODING"] = headers["Content-Encoding"]
    if "Git-Protocol" in headers:
        env["GIT_PROTOCOL"] = headers["Git-Protocol"]
    return env


def run_http_backend(
    root: Path,
    *,
    method: str,
    path_info: str,
    query: str,
    headers: Mapping[str, str],
    body: Reader | None,
    content_length: int | None,
    chunked: bool,
    remote_user: str,
    read_chunked: Callable[[Reader], Iterator[bytes]],
) -> CgiResponse:
    """Start ``git http-backend``; stream the request body in (a thread), parse the CGI headers out."""
    env = _cgi_env(root, method, path_info, query, headers, remote_user)
    if content_length is not None and not chunked:
        env["CONTENT_LENGTH"] = str(content_length)
    proc = subprocess.Popen(
        ["git", "http-backend"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdin, stderr = proc.stdin, proc.stderr
    stdout = cast(io.BufferedReader, proc.stdout)
    assert stdin is not None
    assert stdout is not None
    assert stderr is not None
    feeder = threading.Thread(
        target=_feed, args=(stdin, body, content_length, chunked, read_chunked), daemon=True
    )
    feeder.start()

    def drain_stderr() -> None:
        text = stderr.read().decode(errors="replace").strip()
        if text:
            logger.debug("git http-backend %s %s: %s", method, path_info, text)

    drainer = threading.Thread(target=drain_stderr, daemon=True)
    drainer.start()
    status, out_headers = _read_cgi_headers(stdout)

    def rest() -> Iterator[bytes]:
        while True:
            piece = stdout.read1(65536)
            if not piece:
                break
            yield piece

    return CgiResponse(status, out_headers, rest(), proc, [feeder, drainer])
