"""Fixtures for runner tests: the scripted model server, a local origin repo, a running Runner."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from ulid import ULID

from bgagent_contracts import Event, TaskState, TaskSubmitted
from bgagent_eventstore import JetStreamEventStore, NatsSettings
from bgagent_runner import Runner, Settings
from bgagent_testing.model_server import ModelServer

GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@localhost",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/tmp",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def git_ok(cwd: Path, *args: str) -> bool:
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True).returncode == 0


async def wait_until(
    pred: Callable[[], Awaitable[bool]], timeout: float = 8.0, interval: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@pytest.fixture(scope="session")
def model_server() -> Iterator[ModelServer]:
    with ModelServer() as server:
        yield server


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A non-bare git repo with one commit on main, used as the task's origin.

    It lives in ``<tmp>/repos``, the local repository root of :func:`make_settings`.
    """
    repo = tmp_path / "repos" / "origin"
    repo.mkdir(parents=True)
    git(repo, "init", "--quiet", "-b", "main")
    (repo / "README.md").write_text("# demo\n")
    (repo / "app.py").write_text("def greet():\n    return 'hi'\n")
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "initial")
    return repo


def make_settings(nats: NatsSettings, model_url: str, work_dir: Path, **overrides: Any) -> Settings:
    """Runner settings for a test; the local repository root is ``repos`` next to ``work_dir``."""
    values: dict[str, Any] = {
        "nats": nats,
        "runner_id": "runner-a",
        "slots": 2,
        "work_dir": str(work_dir),
        "local_repo_roots": (str(work_dir.parent / "repos"),),
        "anthropic_api_key": "test-key",
        "anthropic_base_url": model_url,
        "tool_timeout_s": 20.0,
        "task_timeout_s": None,
        "in_progress_interval_s": 1.0,
        "fetch_timeout_s": 0.3,
        "nak_delay_s": 1.0,
        "shutdown_grace_s": 0.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(provisioned: NatsSettings, model_server: ModelServer, tmp_path: Path) -> Settings:
    return make_settings(provisioned, model_server.url, tmp_path / "work")


class RunnerHandle:
    def __init__(self, runner: Runner, task: asyncio.Task[None]) -> None:
        self.runner = runner
        self.task = task

    async def stop(self) -> None:
        self.runner.stop()
        await asyncio.wait_for(self.task, timeout=15)


@pytest.fixture
async def start_runner(nc: Client) -> AsyncIterator[Callable[..., Awaitable[RunnerHandle]]]:
    handles: list[RunnerHandle] = []

    async def start(settings: Settings, **kwargs: Any) -> RunnerHandle:
        runner = Runner(settings, nc=nc, **kwargs)
        task = asyncio.create_task(runner.run())
        await asyncio.wait_for(runner.ready.wait(), timeout=5)
        handle = RunnerHandle(runner, task)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        if not handle.task.done():
            await handle.stop()


class Kit:
    """Helpers for runner tests (a fixture, since test modules cannot import each other)."""

    def __init__(self, store: JetStreamEventStore, settings: Settings, start: Any) -> None:
        self.store = store
        self.settings = settings
        self.start_runner = start
        self.git = git
        self.git_ok = git_ok
        self.wait_until = wait_until
        self.make_settings = make_settings

    async def submit(self, repo: str, description: str, **fields: Any) -> str:
        return await submit(self.store, repo, description, **fields)

    async def state(self, task_id: str) -> TaskState:
        return await state_of(self.store, task_id)

    async def events(self, task_id: str) -> list[Event]:
        return await events_of(self.store, task_id)

    async def wait_terminal(self, task_id: str, timeout: float = 8.0) -> TaskState:
        return await wait_terminal(self.store, task_id, timeout)


@pytest.fixture
def kit(event_store: JetStreamEventStore, settings: Settings, start_runner: Any) -> Kit:
    return Kit(event_store, settings, start_runner)


async def submit(store: JetStreamEventStore, repo: str, description: str, **fields: Any) -> str:
    task_id = str(ULID())
    event = TaskSubmitted(
        task_id=task_id,
        event_id=str(ULID()),
        ts=datetime.now(UTC),
        actor="admission",
        user_id="alice",
        repo=repo,
        description=description,
        **fields,
    )
    await store.append(task_id, [event], expected_seq=0)
    return task_id


async def state_of(store: JetStreamEventStore, task_id: str) -> TaskState:
    state = (await store.read(task_id)).state()
    assert state is not None
    return state


async def events_of(store: JetStreamEventStore, task_id: str) -> list[Event]:
    return [r.event for r in (await store.read(task_id)).records]


async def wait_terminal(store: JetStreamEventStore, task_id: str, timeout: float = 8.0) -> TaskState:
    async def done() -> bool:
        return (await state_of(store, task_id)).terminal

    await wait_until(done, timeout)
    return await state_of(store, task_id)
