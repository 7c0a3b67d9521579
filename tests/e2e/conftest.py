"""The whole system as processes: nats-server, the four services, the scripted model, a fake GitHub.

Tests drive it only through the ``bgagent`` CLI (subprocesses) and HTTP.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bgagent_cli.stack import Stack, StackSpec
from bgagent_eventstore import NatsAuth
from bgagent_eventstore.nats_auth import auth_for
from bgagent_testing.fake_github import FakeGitHub

GH_TOKEN = "ghp_e2eFakeToken000000000000000000000000"


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


class E2E:
    """Handles to the running stack plus helpers that act as a user would."""

    def __init__(self, stack: Stack, github: FakeGitHub, home: Path) -> None:
        self.stack = stack
        self.github = github
        self.home = home
        assert stack.state is not None
        self.client = stack.state.client
        self.env = dict(os.environ, BGAGENT_HOME=str(home), NO_COLOR="1")
        for key in ("NATS_URL", "DATABASE_URL", "BGAGENT_API_URL", "BGAGENT_QUERY_URL", "BGAGENT_TOKEN"):
            self.env.pop(key, None)
        for key in ("NATS_USER", "NATS_PASSWORD", "NATS_PASSWORD_FILE", "NATS_CREDS"):
            self.env.pop(key, None)

    def nats_auth(self, user: str) -> NatsAuth:
        """One of the stack's NATS users, for tests that use NATS directly: ``admin`` may publish raw
        messages (poison, backlogs), ``operator`` only reads. The services run as their own users."""
        return auth_for(self.client["nats_auth_dir"], user)

    # --- the CLI -------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        exe = str(Path(sys.executable).parent / "bgagent")
        return subprocess.run([exe, *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def cli_popen(self, *args: str) -> subprocess.Popen[str]:
        exe = str(Path(sys.executable).parent / "bgagent")
        return subprocess.Popen(
            [exe, *args], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def cli_json(self, *args: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        done = self.cli(*args, "--output", "json", timeout=timeout)
        assert done.returncode == 0, f"bgagent {' '.join(args)} failed ({done.returncode}): {done.stderr}"
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    # --- HTTP ----------------------------------------------------------------

    def query(self, path: str, **params: Any) -> Any:
        r = httpx.get(
            self.client["query_url"] + path,
            params=params,
            headers={"Authorization": f"Bearer {self.client['token']}"},
            timeout=10,
        )
        r.raise_for_status()
        return r.json()

    def task(self, task_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.query(f"/v1/tasks/{task_id}")["data"]
        return data

    def script(self, turns: list[dict[str, Any]]) -> str:
        """Register a model script; returns the token to put in the task description to select it."""
        token = f"[script-{secrets.token_hex(4)}]"
        r = httpx.post(
            self.client["model_url"] + "/_scripts", json={"match": token, "turns": turns}, timeout=10
        )
        r.raise_for_status()
        return token

    def model_requests(self, token: str) -> list[dict[str, Any]]:
        r = httpx.get(self.client["model_url"] + "/_requests", timeout=10)
        r.raise_for_status()
        return [req for req in r.json() if token in json.dumps(req)]

    def events(self, task_id: str) -> list[dict[str, Any]]:
        """The task's events so far; none while query has not projected its submission yet (404)."""
        try:
            data: list[dict[str, Any]] = self.query(f"/v1/tasks/{task_id}/events", limit=1000)["data"]
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:
                return []
            raise
        return data

    def wait_event(self, task_id: str, event_type: str, timeout: float = 20.0) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((e for e in self.events(task_id) if e["type"] == event_type), None)

        result: dict[str, Any] = wait_until(find, timeout, f"{event_type} on {task_id}")
        return result

    def task_or_none(self, task_id: str) -> dict[str, Any] | None:
        """The task, or None while query has not projected its submission yet (404)."""
        try:
            return self.task(task_id)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:
                return None
            raise

    def wait_status(self, task_id: str, status: str, timeout: float = 30.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            task = self.task_or_none(task_id)
            return task if task is not None and task["status"] == status else None

        result: dict[str, Any] = wait_until(reached, timeout, f"{task_id} to be {status}")
        return result


@contextlib.contextmanager
def running_stack(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    database_url: str,
    *,
    nats_nodes: int = 1,
    extra_env: dict[str, str] | None = None,
) -> Iterator[E2E]:
    """A whole stack with a fake GitHub: its own nats-server (or cluster) with a NATS user per
    service (auth end to end), stream and prefix; the tests' repositories live under pytest's base
    temp, a local root of the stack. ``{root}`` in an ``extra_env`` value is the stack's folder."""
    root = tmp_path_factory.mktemp(name)
    github = FakeGitHub(root / "github", token=GH_TOKEN)
    github.start()
    tag = secrets.token_hex(3)
    spec = StackSpec(
        home=str(root / "home"),
        database_url=database_url,
        nats_nodes=nats_nodes,
        stream=f"{name.replace('-', '').upper()}{tag.upper()}",
        prefix=f"{name.replace('-', '')}{tag}",
        scripted_model=True,
        github_api_url=github.api_url,
        github_git_url=github.git_url,
        github_token=GH_TOKEN,
        repo_roots=(str(tmp_path_factory.getbasetemp()),),
        extra_env={
            "BGAGENT_RUNNER_SLOTS": "4",
            "BGAGENT_LOG_LEVEL": "INFO",
            **{k: v.replace("{root}", str(root)) for k, v in (extra_env or {}).items()},
        },
    )
    stack = Stack(spec)
    try:
        stack.start()
        yield E2E(stack, github, root / "home")
    finally:
        stack.stop()
        github.stop()


@contextlib.contextmanager
def own_database(postgres_server_url: str, name: str) -> Iterator[str]:
    """A database of the caller's own on the test server, dropped afterwards if it created it."""
    import asyncio

    from bgagent_testing.servers import drop_database, ensure_database, with_database

    database_url = with_database(postgres_server_url, f"bgagent_test_{name}_{secrets.token_hex(4)}")
    created = asyncio.run(ensure_database(database_url))
    try:
        yield database_url
    finally:
        if created:
            asyncio.run(drop_database(database_url))


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[E2E]:
    # each service writes its spans and metrics to <root>/otel/<service>.jsonl (test_tracing.py)
    otel = {"BGAGENT_OTEL_FILE": "{root}/otel/{service}.jsonl", "OTEL_METRIC_EXPORT_INTERVAL": "2000"}
    with running_stack(tmp_path_factory, "e2e", database_url, extra_env=otel) as e2e:
        yield e2e


@pytest.fixture(scope="module")
def e2e_cluster(tmp_path_factory: pytest.TempPathFactory, postgres_server_url: str) -> Iterator[E2E]:
    """The same stack on a 3-node NATS cluster (``nats-n1``…``nats-n3``, R3), with a database of its own.

    Per module: its tests kill nodes. ``e2e.stack.cluster`` is the ``NatsCluster``.
    """
    with (
        own_database(postgres_server_url, "cluster") as database_url,
        running_stack(tmp_path_factory, "e2e-cluster", database_url, nats_nodes=3) as e2e,
    ):
        yield e2e
