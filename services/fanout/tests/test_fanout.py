"""The fanout service against real NATS JetStream and the fake GitHub HTTP server."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client

from bgagent_contracts import (
    AgentFinished,
    AgentTurn,
    CostUpdated,
    Event,
    PrOpened,
    TaskCompleted,
    TaskFailed,
    TaskStarted,
    TaskSubmitted,
    ToolCalled,
    ToolResult,
    WorkspaceReady,
)
from bgagent_contracts.subjects import comments_bucket, fanout_consumer, task_subject
from bgagent_eventstore import JetStreamEventStore, NatsSettings
from bgagent_fanout.comments import CommentIds, CommentKeeper
from bgagent_fanout.consumer import Fanout
from bgagent_fanout.github import GitHubClient
from bgagent_testing.fake_github import FakeGitHub

pytestmark = pytest.mark.integration

TOKEN = "ghs_fanout_test_token"
POST = "POST /repos/{owner}/{repo}/issues/{n}/comments"
PATCH = "PATCH /repos/{owner}/{repo}/issues/comments/{id}"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id() -> str:
    """A fresh ULID-shaped id (time prefix + randomness) without a ULID library."""
    ms = int(time.time() * 1000)
    head = "".join(_CROCKFORD[(ms >> (5 * i)) & 31] for i in reversed(range(10)))
    return head + "".join(secrets.choice(_CROCKFORD) for _ in range(16))


async def wait_until(pred: Callable[[], bool], timeout: float = 8.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


class TaskWriter:
    """Appends a plausible task history with optimistic concurrency, like admission and the runner."""

    def __init__(self, store: JetStreamEventStore, *, issue_number: int | None, repo: str = "acme/widgets"):
        self.store = store
        self.task_id = new_id()
        self.repo = repo
        self.issue_number = issue_number
        self.last = 0
        self.clock = datetime.now(UTC)

    def _base(self, runner: bool = True) -> dict[str, Any]:
        self.clock += timedelta(seconds=1)
        base: dict[str, Any] = {
            "task_id": self.task_id,
            "event_id": new_id(),
            "ts": self.clock,
            "actor": "runner" if runner else "admission",
        }
        if runner:
            base["attempt"] = 1
        return base

    async def emit(self, *events: Event) -> None:
        seqs = await self.store.append(self.task_id, events, expected_seq=self.last)
        self.last = seqs[-1]

    def submitted(self) -> TaskSubmitted:
        return TaskSubmitted(
            **self._base(runner=False), user_id="alice", repo=self.repo, issue_number=self.issue_number
        )

    def start(self) -> list[Event]:
        return [
            TaskStarted(**self._base(), runner_id="r1"),
            WorkspaceReady(**self._base(), branch=f"bgagent/{self.task_id}"),
        ]

    def turn(self, n: int) -> list[Event]:
        return [
            AgentTurn(**self._base(), turn=n, model="claude"),
            ToolCalled(**self._base(), turn=n, tool_use_id=f"t{n}", tool_name="bash", input_preview="ls"),
            ToolResult(
                **self._base(),
                turn=n,
                tool_use_id=f"t{n}",
                tool_name="bash",
                is_error=False,
                output_preview="a",
            ),
            CostUpdated(
                **self._base(),
                turn=n,
                input_tokens=10,
                output_tokens=5,
                cost_usd=0.01,
                total_cost_usd=0.01 * n,
            ),
        ]

    def finish(self, turns: int, pr_url: str = "https://github.com/acme/widgets/pull/2") -> list[Event]:
        return [
            AgentFinished(**self._base(), turns=turns, stop_reason="end_turn"),
            PrOpened(**self._base(), pr_number=2, pr_url=pr_url, branch=f"bgagent/{self.task_id}"),
            TaskCompleted(**self._base(), result="pr_opened", pr_url=pr_url),
        ]


class Harness:
    """Starts and stops fanout instances wired to this test's stream and the fake GitHub."""

    def __init__(self, nc: Client, settings: NatsSettings, gh: FakeGitHub, store: JetStreamEventStore):
        self.nc = nc
        self.settings = settings
        self.gh = gh
        self.store = store
        self._running: list[tuple[asyncio.Event, asyncio.Task[None], GitHubClient]] = []

    async def start(self, **github_options: Any) -> tuple[Fanout, GitHubClient]:
        stopping = asyncio.Event()
        options = {"backoff_base_s": 0.05, **github_options}
        github = GitHubClient(self.gh.api_url, TOKEN, stopping=stopping, **options)
        kv = await self.nc.jetstream().key_value(comments_bucket(self.settings.prefix))
        fanout = Fanout(
            self.nc,
            stream=self.settings.stream,
            prefix=self.settings.prefix,
            store=self.store,
            keeper=CommentKeeper(github, CommentIds(kv)),
            fetch_timeout_s=0.2,
            linger_s=0.1,
        )
        task = asyncio.create_task(fanout.run(stopping))
        self._running.append((stopping, task, github))
        await asyncio.wait_for(fanout.bound(), timeout=5)
        return fanout, github

    async def stop_all(self) -> None:
        running, self._running = self._running, []
        for stopping, task, github in running:
            stopping.set()
            try:
                await asyncio.wait_for(task, timeout=5)
            finally:
                await github.aclose()

    def live_comments(self) -> list[dict[str, Any]]:
        return self.gh.comments()

    def body_has(self, text: str) -> Callable[[], bool]:
        return lambda: any(text in c["body"] for c in self.gh.comments())


@pytest.fixture
def github(tmp_path: Path) -> Iterator[FakeGitHub]:
    with FakeGitHub(tmp_path / "github", token=TOKEN) as gh:
        gh.create_repo("acme", "widgets")
        yield gh


@pytest.fixture
async def harness(
    nc: Client, provisioned: NatsSettings, github: FakeGitHub, event_store: JetStreamEventStore
) -> AsyncIterator[Harness]:
    h = Harness(nc, provisioned, github, event_store)
    try:
        yield h
    finally:
        await h.stop_all()


async def test_task_events_keep_one_comment_posted_once_then_patched(
    harness: Harness, github: FakeGitHub, event_store: JetStreamEventStore
) -> None:
    await harness.start()
    task = TaskWriter(event_store, issue_number=github.create_issue("acme", "widgets", "Bug"))
    await task.emit(task.submitted())
    await wait_until(harness.body_has("### bgagent — SUBMITTED"), what="the first comment")

    await task.emit(*task.start(), *task.turn(1))
    await wait_until(harness.body_has("**RUNNING**"), what="the running state")
    await task.emit(*task.finish(turns=1))
    await wait_until(harness.body_has("### bgagent — COMPLETED"), what="the final state")

    (comment,) = github.comments(include_deleted=True)
    assert comment["issue_number"] == task.issue_number
    assert comment["history"][0]["action"] == "created"
    assert {h["action"] for h in comment["history"][1:]} == {"edited"}
    assert "SUBMITTED" in comment["history"][0]["body"]
    assert f"<!-- bgagent:task-id={task.task_id} -->" in comment["body"]
    assert "[#2](https://github.com/acme/widgets/pull/2)" in comment["body"]
    assert "$0.0100" in comment["body"]
    assert "| Turn | 1/100 |" in comment["body"]
    counts = github.request_counts()
    assert counts[POST] == 1
    assert counts[PATCH] == len(comment["history"]) - 1 >= 2
    log = github.request_log()
    assert not any(entry["conditional"] for entry in log)
    assert all(entry["user_agent"].startswith("bgagent-fanout/") for entry in log)


async def test_a_burst_of_events_coalesces_into_fewer_edits_with_the_final_state(
    harness: Harness, github: FakeGitHub, event_store: JetStreamEventStore
) -> None:
    await harness.start()
    task = TaskWriter(event_store, issue_number=github.create_issue("acme", "widgets"))
    events: list[Event] = [task.submitted(), *task.start()]
    for n in range(1, 21):
        events += task.turn(n)
    events += task.finish(turns=20)
    await task.emit(*events)
    await wait_until(harness.body_has("### bgagent — COMPLETED"), what="the final state")

    # Coalescing, not speed: one comment, fewer writes than events, and the last write holds
    # the final state (edits per event for a burst: bench/fanout_coalescing.py).
    edits = github.request_counts().get(POST, 0) + github.request_counts().get(PATCH, 0)
    assert len(events) == 86
    assert 1 <= edits < len(events), f"{edits} edits for {len(events)} events"
    (comment,) = github.comments(include_deleted=True)
    assert len(comment["history"]) == edits
    assert "### bgagent — COMPLETED" in comment["body"]
    assert "| Turn | 20/100 |" in comment["body"]


async def test_deleted_comment_is_posted_again(
    harness: Harness,
    github: FakeGitHub,
    event_store: JetStreamEventStore,
    nc: Client,
    provisioned: NatsSettings,
) -> None:
    fanout, _ = await harness.start()
    task = TaskWriter(event_store, issue_number=github.create_issue("acme", "widgets"))
    await task.emit(task.submitted())
    await wait_until(harness.body_has("SUBMITTED"), what="the first comment")
    (first,) = github.comments()
    github.delete_comment(first["id"])

    await task.emit(*task.start())
    await wait_until(harness.body_has("**RUNNING**"), what="a new comment")
    await wait_until(lambda: fanout.last_acked_seq >= task.last, what="the batch to be acked")
    (second,) = github.comments()
    assert second["id"] != first["id"]
    assert github.request_counts()[POST] == 2
    kv = await nc.jetstream().key_value(comments_bucket(provisioned.prefix))
    stored = msgspec.json.decode((await kv.get(task.task_id)).value or b"{}")
    assert stored["comment_id"] == second["id"]


async def test_rate_limit_waits_and_the_final_state_lands(
    harness: Harness, github: FakeGitHub, event_store: JetStreamEventStore
) -> None:
    _, client = await harness.start()
    task = TaskWriter(event_store, issue_number=github.create_issue("acme", "widgets"))
    await task.emit(task.submitted())
    await wait_until(harness.body_has("SUBMITTED"), what="the first comment")

    github.inject(403, retry_after=1, times=1, path_prefix="/repos/acme/widgets/issues/comments/")
    await task.emit(*task.start(), *task.turn(1), *task.finish(turns=1))
    await wait_until(harness.body_has("### bgagent — COMPLETED"), timeout=10, what="the final state")

    patches = [e for e in github.request_log() if e["route"] == PATCH]
    limited = [e for e in patches if e["status"] == 403]
    assert len(limited) == 1
    after = [e for e in patches if e["status"] == 200 and e["at"] > limited[0]["at"]]
    assert after, "no successful PATCH after the rate limit"
    assert after[0]["at"] - limited[0]["at"] >= 0.9  # waited for Retry-After
    assert client.rate_limited == 1
    assert len(github.comments(include_deleted=True)) == 1


async def test_server_errors_are_retried_with_backoff(
    harness: Harness, github: FakeGitHub, event_store: JetStreamEventStore
) -> None:
    _, client = await harness.start()
    github.inject(502, times=2, path_prefix="/repos/acme/widgets/issues/", method="POST")
    task = TaskWriter(event_store, issue_number=github.create_issue("acme", "widgets"))
    await task.emit(task.submitted(), *task.start())
    await wait_until(harness.body_has("**RUNNING**"), what="the comment after two 502s")
    posts = [e["status"] for e in github.request_log() if e["route"] == POST]
    assert posts == [502, 502, 201]
    assert client.retried == 2
    assert len(github.comments(include_deleted=True)) == 1


@pytest.mark.faults
async def test_github_answering_5xx_for_a_while_ends_with_the_final_state_in_one_comment(
    harness: Harness, github: FakeGitHub, event_store: JetStreamEventStore
) -> None:
    outage_s = 6.0  # stands for minutes: the backoff cap (BGAGENT_FANOUT_BACKOFF_MAX_S) is what scales
    _, client = await harness.start(backoff_max_s=0.5)
    task = TaskWriter(event_store, issue_number=github.create_issue("acme", "widgets"))
    await task.emit(task.submitted())
    await wait_until(harness.body_has("SUBMITTED"), what="the first comment")

    github.inject(503, times=None, path_prefix="/repos/acme/widgets/")
    down_at = time.monotonic()
    await task.emit(*task.start(), *task.turn(1), *task.finish(turns=1))
    await wait_until(lambda: time.monotonic() - down_at >= outage_s, timeout=outage_s + 1, what="the outage")
    failed = [e for e in github.request_log() if e["status"] == 503]
    assert len(failed) >= 3, "the fanout stopped retrying during the outage"
    assert "COMPLETED" not in github.comments()[0]["body"]
    github.clear_faults()
    recovered_at = time.monotonic()

    await wait_until(harness.body_has("### bgagent — COMPLETED"), timeout=10, what="the catch-up")
    assert time.monotonic() - recovered_at < 5  # backoff capped, not grown with the outage
    assert len(github.comments(include_deleted=True)) == 1
    assert github.request_counts()[POST] == 1
    assert client.retried >= len(failed)


@pytest.mark.faults
async def test_a_post_that_fails_after_github_created_the_comment_is_not_posted_again(
    harness: Harness, github: FakeGitHub, event_store: JetStreamEventStore
) -> None:
    _, client = await harness.start()
    github.inject(502, times=1, method="POST", path_prefix="/repos/acme/widgets/issues/", applied=True)
    task = TaskWriter(event_store, issue_number=github.create_issue("acme", "widgets"))
    await task.emit(task.submitted())
    await wait_until(lambda: client.retried == 1, what="the failed POST")
    await task.emit(*task.start(), *task.turn(1), *task.finish(turns=1))
    await wait_until(harness.body_has("### bgagent — COMPLETED"), what="the final state")

    (comment,) = github.comments(include_deleted=True)
    assert [e["status"] for e in github.request_log() if e["route"] == POST] == [502]
    assert comment["history"][0]["action"] == "created"


async def test_malformed_message_is_skipped_and_later_events_processed(
    harness: Harness,
    github: FakeGitHub,
    event_store: JetStreamEventStore,
    nc: Client,
    provisioned: NatsSettings,
) -> None:
    fanout, _ = await harness.start()
    task = TaskWriter(event_store, issue_number=github.create_issue("acme", "widgets"))
    await task.emit(task.submitted())
    js = nc.jetstream()
    for junk in (b"not json at all", b'{"type": "agent_turn", "task_id": 42}', b'{"type": "no_such_event"}'):
        ack = await js.publish(task_subject(task.task_id, "agent_turn", provisioned.prefix), junk)
        task.last = ack.seq
    await task.emit(*task.start(), *task.turn(1), *task.finish(turns=1))

    await wait_until(harness.body_has("### bgagent — COMPLETED"), what="the final state")
    assert fanout.malformed == 3
    await wait_until(lambda: fanout.last_acked_seq >= task.last, what="every message acked")
    info = await js.consumer_info(provisioned.stream, fanout_consumer(provisioned.prefix))
    assert info.num_ack_pending == 0
    assert info.num_pending == 0


async def test_restart_keeps_the_same_comment(
    harness: Harness, github: FakeGitHub, event_store: JetStreamEventStore
) -> None:
    first, _ = await harness.start()
    task = TaskWriter(event_store, issue_number=github.create_issue("acme", "widgets"))
    await task.emit(task.submitted())
    await wait_until(harness.body_has("SUBMITTED"), what="the first comment")
    await wait_until(lambda: first.last_acked_seq >= task.last, what="the first instance to ack")
    await harness.stop_all()

    await task.emit(*task.start(), *task.turn(1), *task.finish(turns=1))
    second, _ = await harness.start()  # a new instance: empty memory, task first seen mid-log
    await wait_until(harness.body_has("### bgagent — COMPLETED"), what="the final state")
    assert len(github.comments(include_deleted=True)) == 1
    assert github.request_counts()[POST] == 1
    assert second.malformed == 0


async def test_stop_during_a_rate_limit_wait_hands_the_batch_to_the_next_instance(
    harness: Harness, github: FakeGitHub, event_store: JetStreamEventStore
) -> None:
    await harness.start()
    task = TaskWriter(event_store, issue_number=github.create_issue("acme", "widgets"))
    await task.emit(task.submitted())
    await wait_until(harness.body_has("SUBMITTED"), what="the first comment")
    github.inject(429, retry_after=600, times=1, method="PATCH")
    await task.emit(*task.start(), *task.turn(1), *task.finish(turns=1))
    await wait_until(lambda: any(e["status"] == 429 for e in github.request_log()), what="the rate limit")

    # The stop interrupts the 600 s wait: the deadline only bounds a failure, a tenth of that wait.
    await asyncio.wait_for(harness.stop_all(), timeout=60)
    await harness.start()
    await wait_until(harness.body_has("### bgagent — COMPLETED"), what="the next instance to finish the job")
    assert len(github.comments(include_deleted=True)) == 1


async def test_unroutable_and_missing_targets_do_not_stall_others(
    harness: Harness, github: FakeGitHub, event_store: JetStreamEventStore
) -> None:
    await harness.start()
    no_target = TaskWriter(event_store, issue_number=None)
    missing_issue = TaskWriter(event_store, issue_number=999)
    other_repo = TaskWriter(event_store, issue_number=1, repo="acme/ghost")
    good = TaskWriter(event_store, issue_number=github.create_issue("acme", "widgets"))
    for task in (no_target, missing_issue, other_repo, good):
        await task.emit(task.submitted(), *task.start())
    await wait_until(harness.body_has("**RUNNING**"), what="the routable task's comment")
    await good.emit(*good.finish(turns=0))
    await wait_until(harness.body_has("COMPLETED"), what="the routable task's final state")
    (comment,) = github.comments()
    assert good.task_id in comment["body"]
    posts = [e for e in github.request_log() if e["route"] == POST]
    assert sorted(e["status"] for e in posts) == [201, 404, 404]  # each bad target tried once


async def test_failed_task_shows_its_error(
    harness: Harness, github: FakeGitHub, event_store: JetStreamEventStore
) -> None:
    await harness.start()
    task = TaskWriter(event_store, issue_number=github.create_issue("acme", "widgets"))
    await task.emit(
        task.submitted(),
        *task.start(),
        TaskFailed(**task._base(), code="TESTS_FAILED", message="3 tests | failed\n`boom`"),
    )
    await wait_until(harness.body_has("### bgagent — FAILED"), what="the failed state")
    assert "`TESTS_FAILED: 3 tests \\| failed 'boom'`" in github.comments()[0]["body"]


async def test_service_process_serves_until_sigterm(
    github: FakeGitHub, provisioned: NatsSettings, event_store: JetStreamEventStore, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    env = {
        **os.environ,
        "NATS_URL": provisioned.url,
        "BGAGENT_STREAM": provisioned.stream,
        "BGAGENT_PREFIX": provisioned.prefix,
        "GITHUB_TOKEN": TOKEN,
        "BGAGENT_GITHUB_API_URL": github.api_url,
        "BGAGENT_READY_FILE": str(ready),
        "BGAGENT_FANOUT_LINGER_S": "0.05",
    }
    with subprocess.Popen(
        [sys.executable, "-m", "bgagent_fanout"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as proc:
        try:
            await wait_until(ready.exists, timeout=15, what="the ready file")
            task = TaskWriter(event_store, issue_number=github.create_issue("acme", "widgets"))
            await task.emit(task.submitted(), *task.start())
            await wait_until(lambda: any("RUNNING" in c["body"] for c in github.comments()), what="a comment")
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.to_thread(proc.communicate, timeout=15)
    assert proc.returncode == 0, err.decode()[-2000:]


async def test_two_instances_racing_keep_a_single_comment(
    github: FakeGitHub, nc: Client, provisioned: NatsSettings
) -> None:
    kv = await nc.jetstream().key_value(comments_bucket(provisioned.prefix))
    issue = github.create_issue("acme", "widgets")
    clients = [GitHubClient(github.api_url, TOKEN) for _ in range(2)]
    try:
        keepers = [CommentKeeper(client, CommentIds(kv)) for client in clients]
        task_id = new_id()
        ids = await asyncio.gather(
            *(k.upsert(task_id, "acme/widgets", issue, f"body from {i}") for i, k in enumerate(keepers))
        )
    finally:
        for client in clients:
            await client.aclose()
    live = github.comments()
    assert len(live) == 1
    assert ids[0] == ids[1] == live[0]["id"]
