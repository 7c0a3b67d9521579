"""The embedded stack: a real nats-server, the local PostgreSQL, and the four services as processes.

Used by ``bgagent dev up``/``dev down``, ``bgagent demo`` and the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import msgspec

from bgagent_eventstore import NatsSettings, connect, provision
from bgagent_testing.servers import NatsServer, ensure_database, free_port

from .errors import CliError

logger = logging.getLogger(__name__)

SERVICES = ("query", "admission", "runner", "fanout")


class StackSpec(msgspec.Struct, frozen=True, kw_only=True):
    home: str
    database_url: str
    nats_url: str | None = None
    """An existing NATS to use; None starts a nats-server with its store under ``home``."""
    stream: str = "BGAGENT_TASKS"
    prefix: str = "bgagent"
    token: str = "dev-token"
    user: str = "dev"
    scripted_model: bool = True
    model_script: str | None = None
    github_api_url: str | None = None
    github_git_url: str | None = None
    github_token: str | None = None
    repo_roots: tuple[str, ...] = ()
    """Local repository roots besides the stack's own ``<home>/repos`` (absolute paths)."""
    extra_env: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def repos_dir(self) -> Path:
        """The stack's own folder for local repositories (``<home>/repos``): always a root."""
        return Path(os.path.abspath(self.home)) / "repos"

    @property
    def local_repo_roots(self) -> tuple[str, ...]:
        """Every root admission and the runner get (``BGAGENT_LOCAL_REPO_ROOTS``), own folder first.

        A root reached through a symlink is given in both spellings, so a path a user types either
        way passes the services' textual check (they compare real paths on disk as well).
        """
        roots: list[str] = []
        for root in (str(self.repos_dir), *self.repo_roots):
            if not os.path.isabs(root) or os.pathsep in root:
                raise CliError(f"repository root {root!r} must be an absolute path without {os.pathsep!r}")
            roots += [os.path.normpath(root), os.path.realpath(root)]
        return tuple(dict.fromkeys(roots))


class ProcInfo(msgspec.Struct, kw_only=True):
    name: str
    pid: int
    log: str
    args: list[str]


class StackState(msgspec.Struct, kw_only=True):
    spec: StackSpec
    procs: list[ProcInfo]
    client: dict[str, str]
    env: dict[str, str]


def _log_tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Stack:
    """Start, stop, kill and restart the processes of one stack; state kept in ``<home>/dev/stack.json``."""

    def __init__(self, spec: StackSpec) -> None:
        self.spec = spec
        self.dir = Path(spec.home) / "dev"
        self.logs = self.dir / "logs"
        self.state: StackState | None = None
        self._popen: dict[str, subprocess.Popen[bytes]] = {}

    # --- lifecycle -----------------------------------------------------------

    def start(self, timeout: float = 60.0) -> StackState:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.spec.repos_dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "ready").mkdir(exist_ok=True)
        procs: list[ProcInfo] = []
        nats_url = self.spec.nats_url
        if nats_url is None:
            server = NatsServer(store_dir=str(self.dir / "nats"), log_file=str(self.logs / "nats-server.log"))
            server.start()
            assert server.pid is not None
            procs.append(
                ProcInfo(name="nats-server", pid=server.pid, log=str(self.logs / "nats-server.log"), args=[])
            )
            nats_url = server.url
        asyncio.run(self._prepare(nats_url))
        env = self._service_env(nats_url)
        model_url = None
        if self.spec.scripted_model:
            port = free_port()
            args = [sys.executable, "-m", "bgagent_testing.model_server", "--port", str(port)]
            if self.spec.model_script:
                args += ["--script", self.spec.model_script]
            procs.append(self._spawn("model-server", args, env))
            model_url = f"http://127.0.0.1:{port}"
            env["ANTHROPIC_BASE_URL"] = model_url
            env.setdefault("ANTHROPIC_API_KEY", "scripted-model-key")
        ports = {"admission": free_port(), "query": free_port()}
        env["BGAGENT_ADMISSION_PORT"] = str(ports["admission"])
        env["BGAGENT_QUERY_PORT"] = str(ports["query"])
        client = {
            "api_url": f"http://127.0.0.1:{ports['admission']}",
            "query_url": f"http://127.0.0.1:{ports['query']}",
            "token": self.spec.token,
            "nats_url": nats_url,
            "stream": self.spec.stream,
            "prefix": self.spec.prefix,
            "database_url": self.spec.database_url,
        }
        if model_url:
            client["model_url"] = model_url
        self.state = StackState(spec=self.spec, procs=procs, client=client, env=env)
        try:
            if model_url:
                self._wait_http(procs[-1], model_url + "/_requests", timeout)
            for name in SERVICES:
                self.state.procs.append(self._start_service(name, env, timeout))
        except BaseException:
            self.stop()
            raise
        self._save()
        return self.state

    async def _prepare(self, nats_url: str) -> None:
        await ensure_database(self.spec.database_url)
        settings = NatsSettings(url=nats_url, stream=self.spec.stream, prefix=self.spec.prefix)
        nc = await connect(nats_url, name="bgagent-dev")
        try:
            await provision(nc.jetstream(), settings)
        finally:
            await nc.close()

    def _service_env(self, nats_url: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BGAGENT_")}
        env.update(
            {
                "NATS_URL": nats_url,
                "DATABASE_URL": self.spec.database_url,
                "BGAGENT_STREAM": self.spec.stream,
                "BGAGENT_PREFIX": self.spec.prefix,
                "BGAGENT_API_TOKENS": f"{self.spec.token}={self.spec.user}",
                "BGAGENT_WORK_DIR": str(self.dir / "work"),
                "BGAGENT_LOCAL_REPO_ROOTS": os.pathsep.join(self.spec.local_repo_roots),
                "BGAGENT_LOG_LEVEL": os.environ.get("BGAGENT_LOG_LEVEL", "INFO"),
            }
        )
        if self.spec.github_api_url:
            env["BGAGENT_GITHUB_API_URL"] = self.spec.github_api_url
        if self.spec.github_git_url:
            env["BGAGENT_GITHUB_GIT_URL"] = self.spec.github_git_url
        if self.spec.github_token:
            env["GITHUB_TOKEN"] = self.spec.github_token
        env.update(self.spec.extra_env)
        return env

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str]) -> ProcInfo:
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                args, env=dict(env), stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self._popen[name] = proc
        return ProcInfo(name=name, pid=proc.pid, log=str(log), args=args)

    def _start_service(self, name: str, env: dict[str, str], timeout: float) -> ProcInfo:
        ready = self.dir / "ready" / f"{name}.{secrets.token_hex(3)}"
        svc_env = dict(env, BGAGENT_READY_FILE=str(ready))
        info = self._spawn(name, [sys.executable, "-m", f"bgagent_{name}"], svc_env)
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self._exited(info):
                raise CliError(
                    f"{name} exited while starting; last lines of {info.log}:\n{_log_tail(info.log)}",
                    hint="fix the cause above, then 'bgagent dev up' again",
                )
            if time.monotonic() > deadline:
                raise CliError(
                    f"{name} not ready after {timeout:.0f}s; see {info.log}:\n{_log_tail(info.log)}"
                )
            time.sleep(0.02)
        return info

    def _wait_http(self, info: ProcInfo, url: str, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(url, timeout=1.0).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            if self._exited(info) or time.monotonic() > deadline:
                raise CliError(f"{info.name} did not start; see {info.log}:\n{_log_tail(info.log)}")
            time.sleep(0.02)

    def _exited(self, info: ProcInfo) -> bool:
        proc = self._popen.get(info.name)
        if proc is not None:
            return proc.poll() is not None
        return not _alive(info.pid)

    def _save(self) -> None:
        assert self.state is not None
        path = self.dir / "stack.json"
        path.write_bytes(msgspec.json.format(msgspec.json.encode(self.state)))
        path.chmod(0o600)

    # --- control -------------------------------------------------------------

    @classmethod
    def load(cls, home: str) -> Stack | None:
        path = Path(home) / "dev" / "stack.json"
        if not path.exists():
            return None
        state = msgspec.json.decode(path.read_bytes(), type=StackState)
        stack = cls(state.spec)
        stack.state = state
        return stack

    def proc(self, name: str) -> ProcInfo:
        assert self.state is not None
        for info in self.state.procs:
            if info.name == name:
                return info
        raise KeyError(name)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal one process (SIGKILL by default, as a crash would) and wait for it to go."""
        info = self.proc(name)
        _signal_and_wait(info.pid, sig, self._popen.get(name))

    def restart(self, name: str, timeout: float = 30.0) -> ProcInfo:
        """Start a service again with the stack's environment (after kill)."""
        assert self.state is not None
        new = self._start_service(name, self.state.env, timeout)
        self.state.procs = [p if p.name != name else new for p in self.state.procs]
        self._save()
        return new

    def stop(self) -> None:
        """SIGTERM every process (services first, nats-server last), SIGKILL stragglers."""
        if self.state is None:
            return
        for info in reversed(self.state.procs):
            _signal_and_wait(info.pid, signal.SIGTERM, self._popen.get(info.name), grace=10.0)
        path = self.dir / "stack.json"
        path.unlink(missing_ok=True)

    def as_json(self) -> str:
        assert self.state is not None
        return json.dumps(msgspec.to_builtins(self.state.client))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_and_wait(pid: int, sig: int, proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return
        elif not _alive(pid):
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if proc is not None:
        proc.wait(timeout=10)
