"""Two dev stacks with different BGAGENT_HOMEs run side by side without touching each other.

Driven only through the ``bgagent`` CLI, as a user would: ``dev up`` in two homes at once, a task
in one, ``dev down`` of one while the other keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bgagent_cli.demo import make_demo_repo
from bgagent_cli.stack import home_database_name, proc_identity
from bgagent_testing.servers import database_name, drop_database, with_database

pytestmark = pytest.mark.e2e

EXE = str(Path(sys.executable).parent / "bgagent")
API_KEY = "sk-ant-e2e-never-in-a-file-0000000000"
GH_TOKEN = "ghp_e2eDevStacksNeverInAFile000000000000"


class Home:
    """One BGAGENT_HOME and the CLI run in it."""

    def __init__(self, path: Path, server_url: str) -> None:
        self.path = path
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("BGAGENT_", "NATS_"))}
        self.env.update(
            BGAGENT_HOME=str(path),
            DATABASE_URL=server_url,  # the server; each home names its own database on it
            # a key in the environment, yet the scripted model: ANTHROPIC_BASE_URL is set
            ANTHROPIC_API_KEY=API_KEY,
            ANTHROPIC_BASE_URL="http://127.0.0.1:9",
            GITHUB_TOKEN=GH_TOKEN,
            NO_COLOR="1",
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [EXE, *args], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([EXE, *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def json(self, *args: str, ok: bool = True) -> list[dict[str, Any]]:
        done = self.run(*args, "-o", "json")
        if ok:
            assert done.returncode == 0, f"bgagent {' '.join(args)} failed ({done.returncode}): {done}"
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    @property
    def stack_json(self) -> Path:
        return self.path / "dev" / "stack.json"


async def _existing(server_url: str, names: list[str]) -> set[str]:
    conn = await asyncpg.connect(with_database(server_url, "postgres"), timeout=5)
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname = ANY($1::text[])", names)
        return {row["datname"] for row in rows}
    finally:
        await conn.close()


@pytest.fixture
def homes(tmp_path: Path, postgres_server_url: str) -> Iterator[tuple[Home, Home]]:
    a, b = Home(tmp_path / "a", postgres_server_url), Home(tmp_path / "b", postgres_server_url)
    ours = [home_database_name(str(h.path)) for h in (a, b)]
    assert asyncio.run(_existing(postgres_server_url, ours)) == set(), "fresh homes have no database yet"
    try:
        yield a, b
    finally:
        for home in (a, b):
            if home.stack_json.exists():
                home.run("dev", "down")
        # only the databases this test's stacks created (they did not exist before it)
        for name in asyncio.run(_existing(postgres_server_url, ours)):
            asyncio.run(drop_database(with_database(postgres_server_url, name)))


def test_two_dev_stacks_run_side_by_side_without_touching_each_other(homes: tuple[Home, Home]) -> None:
    a, b = homes
    ups = [home.popen("dev", "up", "-o", "json") for home in (a, b)]
    started = []
    for up in ups:
        out, err = up.communicate(timeout=90)
        assert up.returncode == 0, err
        started.append(json.loads(out))
    up_a, up_b = started

    # each home has a database of its own, named from the home
    assert database_name(up_a["database_url"]) == home_database_name(str(a.path))
    assert database_name(up_b["database_url"]) == home_database_name(str(b.path))
    assert up_a["database_url"] != up_b["database_url"]
    assert {up_a["api_url"], up_a["nats_url"]}.isdisjoint({up_b["api_url"], up_b["nats_url"]})

    # nothing secret on disk but the token file (0600)
    for home, up in ((a, up_a), (b, up_b)):
        token_file = Path(up["token_file"])
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        assert token
        assert "token" not in up
        text = home.stack_json.read_text()
        for secret in (token, API_KEY, GH_TOKEN):
            assert secret not in text, f"{home.stack_json} holds a secret"
    assert a.path.joinpath("dev/token").read_text() != b.path.joinpath("dev/token").read_text()

    # a task submitted to one stack is not listed by the other
    repo = make_demo_repo(a.path / "repos")
    done = a.run("submit", "--repo", str(repo), "--task", "say done", "--watch", "-o", "json")
    assert done.returncode == 0, done.stderr
    task_id = json.loads(done.stdout.splitlines()[0])["task_id"]
    assert [t["task_id"] for t in a.json("list")] == [task_id]
    assert b.json("list") == []
    assert b.run("status", task_id).returncode != 0

    # dev down of one leaves the other running
    before = a.json("dev", "status")
    assert [row["name"] for row in before] == [
        "nats-server",
        "model-server",
        "query",
        "admission",
        "runner",
        "fanout",
        "reconciler",
    ]
    assert all(row["alive"] for row in before), before
    down = a.json("dev", "down")
    assert {row["name"]: row["result"] for row in down} == {row["name"]: "stopped" for row in before}
    assert not a.stack_json.exists()
    assert a.run("dev", "status").returncode == 1
    for row in before:
        live = proc_identity(row["pid"])
        assert live is None or live.started_at.isoformat() != row["started_at"], f"{row['name']} still runs"

    after = b.json("dev", "status")
    assert len(after) == len(before)
    assert all(row["alive"] for row in after), after
    assert b.json("list") == []
    assert b.run("dev", "down").returncode == 0
