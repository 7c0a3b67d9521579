"""The embedded stack: a real nats-server, the local PostgreSQL, and the four services as processes.

Used by ``bgagent dev up``/``dev down``, ``bgagent demo`` and the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import msgspec

from bgagent_contracts.auth import new_token
from bgagent_eventstore import NatsAuth, NatsSettings, TokenStore, connect, provision
from bgagent_eventstore.nats_auth import ADMIN, auth_for, password_path, write_auth_dir
from bgagent_testing.servers import NatsCluster, NatsServer, ensure_database, free_port

from .config import remove_token, stack_file, write_token
from .errors import CliError

logger = logging.getLogger(__name__)

SERVICES = ("query", "admission", "runner", "fanout", "reconciler")
MODULES = {"reconciler": "bgagent_query.reconciler_main"}
"""Services whose entry point is not ``python -m bgagent_<name>``."""
DEV_TOKEN_NAME = "dev up"
"""The name of the managed token a stack issues; an older stack's tokens of that name are revoked."""


def home_database_name(home: str, prefix: str = "bgagent_dev") -> str:
    """The database of the stack in ``home``: ``<prefix>_<12 hex digits of sha256(resolved home)>``.

    One database per home, so two stacks never share (or wipe) each other's read models; always a
    plain lower-case PostgreSQL identifier well under the 63-byte limit.
    """
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,40}", prefix):
        raise ValueError(f"database prefix {prefix!r}: lower-case letters, digits and _ only")
    digest = hashlib.sha256(os.path.realpath(home).encode()).hexdigest()[:12]
    return f"{prefix}_{digest}"


class StackSpec(msgspec.Struct, frozen=True, kw_only=True):
    home: str
    database_url: str
    nats_url: str | None = None
    """An existing NATS to use; None starts a nats-server with its store under ``home``."""
    nats_nodes: int = 1
    """Without ``nats_url``: 1 starts one nats-server; 3 (``dev up --cluster 3``) a JetStream cluster of
    that many nodes on loopback (``nats-n1``…, stores under ``dev/nats-cluster``), provisioned with that
    many replicas, the services given every node's URL."""
    stream: str = "BGAGENT_TASKS"
    prefix: str = "bgagent"
    token: str = msgspec.field(default_factory=new_token)
    """The API token of ``user`` (new per stack): a managed token, registered in the tokens bucket
    after provisioning (as ``admin token create`` does); the CLI finds it in ``<home>/dev/token``."""
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


class ProcIdentity(msgspec.Struct, frozen=True, kw_only=True):
    """What proves that a live pid is still the process the stack started (pids are reused)."""

    start_ticks: int
    """Field 22 of ``/proc/<pid>/stat``: when the process started, in clock ticks after boot."""
    boot_time: int
    """``btime`` of ``/proc/stat`` (seconds since the epoch); with ``start_ticks``, the start time."""
    boot_id: str
    """``/proc/sys/kernel/random/boot_id``: the same ticks after a reboot belong to another process."""
    cmdline: list[str]

    @property
    def started_at(self) -> datetime:
        return datetime.fromtimestamp(self.boot_time + self.start_ticks / _CLOCK_TICKS, tz=UTC)

    def same_process(self, live: ProcIdentity) -> bool:
        same_boot = live.boot_id == self.boot_id and (bool(self.boot_id) or live.boot_time == self.boot_time)
        return same_boot and live.start_ticks == self.start_ticks and live.cmdline == self.cmdline


class ProcInfo(msgspec.Struct, kw_only=True):
    name: str
    pid: int
    log: str
    args: list[str]
    port: int | None = None
    identity: ProcIdentity | None = None
    """Read from /proc right after the start; None without /proc (then never signalled from a record)."""


class StackState(msgspec.Struct, kw_only=True):
    """The running stack as its starter holds it in memory (with the token and the environment)."""

    spec: StackSpec
    procs: list[ProcInfo]
    client: dict[str, str]
    env: dict[str, str]


class StackRecord(msgspec.Struct, kw_only=True):
    """``<home>/dev/stack.json``: where the stack listens and which processes are its own.

    No secret: no token (the CLI's is in ``<home>/dev/token``), no API key, no password, no
    environment. The services got their secrets in their environment when they were spawned.
    """

    client: dict[str, str]
    """What ``CliConfig.load`` needs: URLs, stream, prefix, database URL (without a password)."""
    procs: list[ProcInfo]
    repo_roots: list[str] = msgspec.field(default_factory=list)


def without_password(url: str) -> str:
    """``url`` without a password in its user part or a ``password=`` query parameter."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{host}" if user else host
    query = "&".join(p for p in parts.query.split("&") if p and p.split("=", 1)[0].lower() != "password")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def public_client(client: Mapping[str, str]) -> dict[str, str]:
    """The client settings fit for ``stack.json``: no token, no password in any URL."""
    public = {k: without_password(v) if "://" in v else v for k, v in client.items() if k != "token"}
    if "nats_url" in public:  # a cluster's URLs, comma-separated: each on its own
        public["nats_url"] = ",".join(without_password(u) for u in client["nats_url"].split(","))
    return public


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
        self.created_database = False
        """True when this stack's start created its database (only then may its owner drop it)."""
        self.cluster: NatsCluster | None = None
        """The NATS cluster this process started (``nats_nodes`` > 1), to kill and restart its nodes."""
        self._popen: dict[str, subprocess.Popen[bytes]] = {}

    # --- lifecycle -----------------------------------------------------------

    def start(self, timeout: float = 60.0) -> StackState:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.spec.repos_dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "ready").mkdir(exist_ok=True)
        procs: list[ProcInfo] = []
        nats_url = self.spec.nats_url
        if nats_url is None and self.spec.nats_nodes > 1:
            nats_url = self._start_cluster(procs)
        if nats_url is None:
            # its own server runs with a user per service (passwords kept across restarts of the stack)
            auth = write_auth_dir(self.nats_auth_dir, stream=self.spec.stream, prefix=self.spec.prefix)
            server = NatsServer(
                store_dir=str(self.dir / "nats"),
                log_file=str(self.logs / "nats-server.log"),
                config_file=auth.config,
            )
            server.start()
            process = server.process
            assert process is not None
            self._popen["nats-server"] = process  # stopped and reaped like the spawned services
            log = str(self.logs / "nats-server.log")
            identity = _identity_after_exec(process.pid)
            procs.append(ProcInfo(name="nats-server", pid=process.pid, log=log, args=[], identity=identity))
            nats_url = server.url
        try:
            asyncio.run(self._prepare(nats_url))
        except BaseException:
            self._identify(procs)
            _stop_all(procs, self._popen, grace=10.0)  # the nats-server started above
            raise
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
        if self.replicas > 1:
            client["replicas"] = str(self.replicas)  # what 'admin init' provisions on this stack
        if self.spec.nats_url is None:
            client["nats_auth_dir"] = str(self.nats_auth_dir)  # a folder: the CLI reads operator/admin there
        self.state = StackState(spec=self.spec, procs=procs, client=client, env=env)
        try:
            self._save()  # from here on a 'dev up' that dies leaves a record 'dev down' can clean up
            if model_url:
                self._wait_http(procs[-1], model_url + "/_requests", timeout)
            for name in SERVICES:
                self.state.procs.append(self._start_service(name, env, timeout))
                self._save()
        except BaseException:
            self.stop()
            raise
        return self.state

    def _start_cluster(self, procs: list[ProcInfo]) -> str:
        """Start the NATS cluster (same users as the single server); its nodes join ``procs``."""
        auth = write_auth_dir(self.nats_auth_dir, stream=self.spec.stream, prefix=self.spec.prefix)
        self.cluster = NatsCluster(
            self.spec.nats_nodes,
            base_dir=str(self.dir / "nats-cluster"),
            log_dir=str(self.logs),
            auth_config=auth.config,
        )
        self.cluster.start()
        for name, process in self.cluster.processes.items():
            self._popen[f"nats-{name}"] = process  # stopped and reaped like the spawned services
            procs.append(
                ProcInfo(
                    name=f"nats-{name}",
                    pid=process.pid,
                    log=str(self.logs / f"nats-{name}.log"),
                    args=[],
                    port=self.cluster.node(name).port,
                    identity=_identity_after_exec(process.pid),
                )
            )
        return self.cluster.url

    async def _prepare(self, nats_url: str) -> None:
        self.created_database = await ensure_database(self.spec.database_url)
        # provisioning settings of the environment the services get (fault tests shorten the waits)
        base = NatsSettings.from_env({**self.spec.extra_env, "NATS_URL": nats_url})
        settings = msgspec.structs.replace(
            base, stream=self.spec.stream, prefix=self.spec.prefix, replicas=self.replicas, auth=NatsAuth()
        )
        admin = auth_for(self.nats_auth_dir, ADMIN) if self.spec.nats_url is None else None
        nc = await connect(nats_url, name="bgagent-dev", auth=admin)
        try:
            await provision(nc.jetstream(), settings)
            await self._issue_token(TokenStore(nc.jetstream(), self.spec.prefix))
        finally:
            await nc.close()

    async def _issue_token(self, tokens: TokenStore) -> None:
        """Register the stack's token as a managed token of ``user``; revoke an earlier stack's."""
        for record in await tokens.list():
            if record.active and record.name == DEV_TOKEN_NAME and record.user_id == self.spec.user:
                await tokens.revoke(record.token_id)
        await tokens.create(self.spec.user, name=DEV_TOKEN_NAME, token=self.spec.token)

    @property
    def replicas(self) -> int:
        """Stream and bucket replicas: one per node of the stack's own cluster, else 1."""
        return self.spec.nats_nodes if self.spec.nats_url is None and self.spec.nats_nodes > 1 else 1

    @property
    def work_dir(self) -> Path:
        """``<home>/dev/work``: the runner's ``BGAGENT_WORK_DIR`` (task workspaces)."""
        return self.dir / "work"

    @property
    def nats_auth_dir(self) -> Path:
        """``<home>/dev/nats-auth``: the NATS users of the stack's own nats-server (0700, files 0600)."""
        return self.dir / "nats-auth"

    def _service_env(self, nats_url: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("BGAGENT_")
            and k not in ("NATS_USER", "NATS_PASSWORD", "NATS_PASSWORD_FILE", "NATS_CREDS")
        }
        env.update(
            {
                "NATS_URL": nats_url,
                "DATABASE_URL": self.spec.database_url,
                "BGAGENT_STREAM": self.spec.stream,
                "BGAGENT_PREFIX": self.spec.prefix,
                "BGAGENT_API_TOKENS": "",  # the stack's token is a managed one (tokens bucket)
                "BGAGENT_WORK_DIR": str(self.work_dir),
                "BGAGENT_LOCAL_REPO_ROOTS": os.pathsep.join(self.spec.local_repo_roots),
                "BGAGENT_LOG_LEVEL": os.environ.get("BGAGENT_LOG_LEVEL", "INFO"),
            }
        )
        for key in ("BGAGENT_OTEL_FILE", "BGAGENT_LOG_FORMAT"):  # telemetry settings pass through
            if os.environ.get(key):
                env[key] = os.environ[key]
        if self.replicas > 1:
            env["BGAGENT_STREAM_REPLICAS"] = str(self.replicas)
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
        # our child, not reaped before we read /proc: the identity read is its own
        return ProcInfo(
            name=name, pid=proc.pid, log=str(log), args=args, identity=_identity_after_exec(proc.pid)
        )

    def _start_service(self, name: str, env: dict[str, str], timeout: float) -> ProcInfo:
        ready = self.dir / "ready" / f"{name}.{secrets.token_hex(3)}"
        svc_env = dict(env, BGAGENT_READY_FILE=str(ready))
        if self.spec.nats_url is None:  # each service is its own NATS user; the password stays in its file
            svc_env.update(NATS_USER=name, NATS_PASSWORD_FILE=str(password_path(self.nats_auth_dir, name)))
        info = self._spawn(name, [sys.executable, "-m", MODULES.get(name, f"bgagent_{name}")], svc_env)
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
        """Write ``stack.json`` (nothing secret in it) and the CLI's token file (0600)."""
        assert self.state is not None
        self._identify(self.state.procs)
        for info in self.state.procs:
            if info.port is None:
                info.port = self._port_of(info.name)
        record = StackRecord(
            client=public_client(self.state.client),
            procs=self.state.procs,
            repo_roots=list(self.spec.local_repo_roots),
        )
        write_token(Path(self.spec.home), self.state.client.get("token") or self.spec.token)
        path = stack_file(Path(self.spec.home))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(msgspec.json.format(msgspec.json.encode(record)))
        tmp.chmod(0o600)
        os.replace(tmp, path)

    def _identify(self, procs: list[ProcInfo]) -> None:
        """Record the identity of processes not spawned by ``_spawn`` (nats-server): still our unreaped
        child while ``start`` runs, so its pid is still its own."""
        for info in procs:
            if info.identity is None and info.name not in self._popen:
                info.identity = _identity_after_exec(info.pid)

    def _port_of(self, name: str) -> int | None:
        assert self.state is not None
        key = {
            "nats-server": "nats_url",
            "model-server": "model_url",
            "admission": "api_url",
            "query": "query_url",
        }
        url = self.state.client.get(key.get(name, ""))
        return urlsplit(url).port if url else None

    # --- control -------------------------------------------------------------

    @classmethod
    def load(cls, home: str) -> Stack | None:
        """The stack recorded in ``<home>/dev/stack.json`` (to stop or inspect it), or None.

        It can stop, kill and report on its processes, not restart them: the environment the
        services got is not recorded (it holds secrets).
        """
        path = stack_file(Path(home))
        if not path.exists():
            return None
        try:
            record = msgspec.json.decode(path.read_bytes(), type=StackRecord)
        except (OSError, msgspec.DecodeError) as exc:
            raise CliError(
                f"cannot read {path}: {exc}", hint="stop its processes by hand, then delete the file"
            ) from exc
        spec = StackSpec(
            home=home,
            database_url=record.client.get("database_url", ""),
            nats_url=record.client.get("nats_url"),
            token="",
        )
        stack = cls(spec)
        stack.state = StackState(spec=spec, procs=record.procs, client=record.client, env={})
        return stack

    def proc(self, name: str) -> ProcInfo:
        assert self.state is not None
        for info in self.state.procs:
            if info.name == name:
                return info
        raise KeyError(name)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal one process (SIGKILL by default, as a crash would) and wait for it to go.

        Only a process provably the stack's: one whose pid now belongs to another is left alone.
        """
        info = self.proc(name)
        if self.owns(info):
            _signal_and_wait(info.pid, sig, self._popen.get(name))

    def restart(self, name: str, timeout: float = 30.0) -> ProcInfo:
        """Start a service again with the stack's environment (after kill); or a node of its cluster."""
        assert self.state is not None
        if self.cluster is not None and name != "nats-server" and _is_nats(name):
            return self._restart_node(name, timeout)
        if not self.state.env:
            raise CliError("only the process that started the stack can restart its services")
        new = self._start_service(name, self.state.env, timeout)
        new.port = self.proc(name).port
        self.state.procs = [p if p.name != name else new for p in self.state.procs]
        self._save()
        return new

    def _restart_node(self, name: str, timeout: float) -> ProcInfo:
        """Start a killed cluster node on its ports and store; returns once the cluster has a leader."""
        assert self.state is not None
        assert self.cluster is not None
        node = name.removeprefix("nats-")
        self.cluster.restart(node, timeout)
        process = self.cluster.processes[node]
        self._popen[name] = process
        old = self.proc(name)
        new = ProcInfo(
            name=name,
            pid=process.pid,
            log=old.log,
            args=[],
            port=old.port,
            identity=_identity_after_exec(process.pid),
        )
        self.state.procs = [p if p.name != name else new for p in self.state.procs]
        self._save()
        return new

    def owns(self, info: ProcInfo) -> bool:
        """True when ``info``'s process runs and is provably the one this stack started."""
        return _is_ours(info, self._popen.get(info.name))

    def stop(self, grace: float = 10.0) -> list[tuple[ProcInfo, str]]:
        """Stop the processes this stack can prove it started, in parallel; forget the stack.

        SIGTERM, then SIGKILL after ``grace`` seconds; services and the model server first,
        nats-server last. Returns each process with its outcome: ``stopped``, ``killed``, or
        ``gone`` (not running, or its pid now belongs to another process: never signalled).
        """
        if self.state is None:
            return []
        procs = self.state.procs
        outcomes = _stop_all([p for p in procs if not _is_nats(p.name)], self._popen, grace)
        outcomes += _stop_all([p for p in procs if _is_nats(p.name)], self._popen, grace)
        stack_file(Path(self.spec.home)).unlink(missing_ok=True)
        remove_token(Path(self.spec.home))
        return outcomes

    def status(self) -> list[dict[str, object]]:
        """Each process: name, pid, alive (checked as ``stop`` checks it), port, log, start time."""
        assert self.state is not None
        return [
            {
                "name": p.name,
                "pid": p.pid,
                "alive": self.owns(p),
                "port": p.port,
                "log": p.log,
                "started_at": p.identity.started_at.isoformat() if p.identity else None,
            }
            for p in self.state.procs
        ]

    def as_json(self) -> str:
        assert self.state is not None
        return json.dumps(public_client(self.state.client))


def _is_nats(name: str) -> bool:
    """``nats-server``, or a node of the stack's cluster (``nats-n1``…): stopped after the services."""
    return name == "nats-server" or re.fullmatch(r"nats-n\d+", name) is not None


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _boot() -> tuple[int, str]:
    """``btime`` of /proc/stat and the boot id (empty where the kernel has none)."""
    btime = next(
        int(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime")
    )
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = ""
    return btime, boot_id


def proc_identity(pid: int) -> ProcIdentity | None:
    """Start time and command line of the live process ``pid`` from /proc; None when it is gone,
    a zombie, or there is no /proc (other systems: nothing can be proved there)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        again = Path(f"/proc/{pid}/stat").read_bytes()
        boot_time, boot_id = _boot()
    except (OSError, StopIteration, ValueError):
        return None
    # "pid (comm) state ppid …": comm may hold spaces and ')'; fields after it start at field 3.
    fields = stat[stat.rindex(b")") + 2 :].split()
    again_fields = again[again.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X") or fields[19] != again_fields[19]:
        return None
    return ProcIdentity(
        start_ticks=int(fields[19]),  # field 22: starttime
        boot_time=boot_time,
        boot_id=boot_id,
        cmdline=[arg.decode(errors="surrogateescape") for arg in cmdline.split(b"\0")[:-1]],
    )


def _identity_after_exec(pid: int, timeout: float = 5.0) -> ProcIdentity | None:
    """The identity of a child just spawned, once its command line is in place.

    Popen returns while the kernel is still inside execve (the parent resumes before the new
    program's arguments are set up): /proc/<pid>/cmdline can read empty for a moment. An identity
    with an empty command line would never match the live process, so wait for it.
    """
    deadline = time.monotonic() + timeout
    while True:
        identity = proc_identity(pid)
        if identity is None or identity.cmdline or time.monotonic() > deadline:
            return identity
        time.sleep(0.001)


def _is_ours(info: ProcInfo, popen: subprocess.Popen[bytes] | None) -> bool:
    if popen is not None and popen.pid == info.pid:
        return popen.poll() is None  # our unreaped child: its pid cannot have been reused
    live = proc_identity(info.pid)
    return info.identity is not None and live is not None and info.identity.same_process(live)


def _stop_all(
    procs: list[ProcInfo], popens: Mapping[str, subprocess.Popen[bytes]], grace: float
) -> list[tuple[ProcInfo, str]]:
    if not procs:
        return []
    with ThreadPoolExecutor(max_workers=len(procs), thread_name_prefix="bgagent-stop") as pool:
        return list(
            zip(procs, pool.map(lambda p: _terminate(p, popens.get(p.name), grace), procs), strict=True)
        )


def _terminate(info: ProcInfo, popen: subprocess.Popen[bytes] | None, grace: float) -> str:
    """SIGTERM, SIGKILL after ``grace``: ``stopped``, ``killed``, or ``gone`` (and then not signalled)."""
    if popen is not None and popen.pid == info.pid:
        if popen.poll() is not None:
            return "gone"
        popen.terminate()
        try:
            popen.wait(grace)
            return "stopped"
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(10)
            return "killed"
    # From a record: hold the process by a pidfd (Linux ≥ 5.3), so the pid cannot pass to another
    # process between the check and the signal.
    fd: int | None = None
    try:
        fd = os.pidfd_open(info.pid)
    except ProcessLookupError:
        return "gone"
    except (AttributeError, OSError):
        fd = None  # no pidfd here: the check and the signal are microseconds apart
    try:
        if not _is_ours(info, None) or not _send(info.pid, fd, signal.SIGTERM):
            return "gone"
        if _wait_exit(info, fd, grace):
            return "stopped"
        if not _send(info.pid, fd, signal.SIGKILL):
            return "stopped"
        _wait_exit(info, fd, 10.0)
        return "killed"
    finally:
        if fd is not None:
            os.close(fd)


def _send(pid: int, fd: int | None, sig: int) -> bool:
    try:
        if fd is not None:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _wait_exit(info: ProcInfo, fd: int | None, timeout: float) -> bool:
    """True once the process ended (a pidfd turns readable then), False after ``timeout``."""
    if fd is not None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    deadline = time.monotonic() + timeout
    while _is_ours(info, None):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


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
