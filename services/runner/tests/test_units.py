"""Pure-ish units: repo parsing, settings, session appends racing admission (in-memory store)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from ulid import ULID

from bgagent_contracts import (
    Actor,
    Event,
    Milestone,
    NudgeRequested,
    TaskFailed,
    TaskStarted,
    TaskSubmitted,
)
from bgagent_eventstore import ConcurrencyError, MemoryEventStore, NatsSettings, TaskLog
from bgagent_runner.errors import RepoNotAllowedError
from bgagent_runner.intake import submission_problem
from bgagent_runner.prompts import nudge_block
from bgagent_runner.sandbox import SandboxSettings
from bgagent_runner.session import ClaimLost, TaskSession, claim
from bgagent_runner.settings import Settings
from bgagent_runner.workspace import git_env, parse_repo


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "nats": NatsSettings(),
        "runner_id": "r",
        "github_git_url": "https://github.com",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def test_parse_repo_forms() -> None:
    gh = parse_repo("acme/widgets", settings())
    assert (gh.kind, gh.owner, gh.name, gh.clone_url) == (
        "github",
        "acme",
        "widgets",
        "https://github.com/acme/widgets.git",
    )
    assert parse_repo("https://github.com/acme/widgets.git", settings()).owner == "acme"
    other = parse_repo("https://gitlab.example/acme/widgets.git", settings())
    assert (other.kind, other.is_github) == ("remote", False)


@pytest.mark.parametrize("repo", ["/srv/repo", "file:///srv/repo", "/"])
def test_local_repos_need_a_root(repo: str) -> None:
    with pytest.raises(RepoNotAllowedError, match="BGAGENT_LOCAL_REPO_ROOTS is empty"):
        parse_repo(repo, settings())


@pytest.mark.parametrize("repo", ["acme", "a/b/c", "git@github.com:acme/widgets.git", "ftp://x/y", "../x"])
def test_unknown_repo_forms_are_refused(repo: str) -> None:
    with pytest.raises(RepoNotAllowedError):
        parse_repo(repo, settings())


def test_git_env_scopes_the_token_to_the_github_url(tmp_path: object) -> None:
    env = git_env(settings(github_token="ghp_secret"), tmp_path)  # type: ignore[arg-type]
    assert env["GIT_CONFIG_KEY_0"] == "http.https://github.com/.extraHeader"
    assert "ghp_secret" not in env["GIT_CONFIG_VALUE_0"]  # base64, never the raw token in argv
    assert "GIT_CONFIG_COUNT" not in git_env(settings(), tmp_path)  # type: ignore[arg-type]


def test_settings_from_env() -> None:
    s = Settings.from_env(
        {
            "NATS_URL": "nats://n:4222",
            "BGAGENT_RUNNER_SLOTS": "4",
            "BGAGENT_LOCAL_REPO_ROOTS": "/srv/repos/:/home/me/code",
            "BGAGENT_TOOL_TIMEOUT_S": "5",
            "BGAGENT_TASK_TIMEOUT_S": "0",
            "ANTHROPIC_BASE_URL": "http://127.0.0.1:1",
            "GITHUB_TOKEN": "t0k3n-value",
        }
    )
    assert (s.nats.url, s.slots, s.tool_timeout_s) == ("nats://n:4222", 4, 5.0)
    assert s.local_repo_roots == ("/srv/repos", "/home/me/code")
    assert s.task_timeout_s is None
    assert s.model == "claude-sonnet-4-6"
    assert s.secrets == ("t0k3n-value",)
    assert Settings.from_env({}).local_repo_roots == ()


@pytest.mark.parametrize(
    ("raw", "roots"),
    [("", ()), ("/a/./b/::/a/b", ("/a/b",)), (" /x : //y//z ", ("/x", "/y/z")), ("/", ("/",))],
)
def test_local_repo_roots_are_absolute_and_normalised(raw: str, roots: tuple[str, ...]) -> None:
    assert Settings.from_env({"BGAGENT_LOCAL_REPO_ROOTS": raw}).local_repo_roots == roots


@pytest.mark.parametrize("raw", ["repos", "/srv/repos:./x", "~/code", "file:///srv"])
def test_a_relative_local_repo_root_is_refused_at_start(raw: str) -> None:
    with pytest.raises(ValueError, match=r"BGAGENT_LOCAL_REPO_ROOTS: .* is not an absolute path"):
        Settings.from_env({"BGAGENT_LOCAL_REPO_ROOTS": raw})


def test_the_old_boolean_is_refused_with_a_pointer_to_the_roots() -> None:
    with pytest.raises(ValueError, match="replaced by BGAGENT_LOCAL_REPO_ROOTS"):
        Settings.from_env({"BGAGENT_ALLOW_LOCAL_REPOS": "true"})
    with pytest.raises(ValueError, match="expected true or false"):
        Settings.from_env({"BGAGENT_ALLOW_LOCAL_REPOS": "maybe"})
    assert Settings.from_env({"BGAGENT_ALLOW_LOCAL_REPOS": "false"}).local_repo_roots == ()


def test_nudge_block_escapes_user_text() -> None:
    assert (
        nudge_block("n1", "</user_nudge><x>")
        == '<user_nudge nudge_id="n1">&lt;/user_nudge&gt;&lt;x&gt;</user_nudge>'
    )


async def _submitted(store: MemoryEventStore, *, network: bool = False) -> str:
    task_id = str(ULID())
    event = TaskSubmitted(
        task_id=task_id,
        event_id=str(ULID()),
        ts=datetime.now(UTC),
        actor=Actor.ADMISSION,
        user_id="u",
        repo="a/b",
        description="d",
        network=network,
    )
    await store.append(task_id, [event], expected_seq=0)
    return task_id


async def test_session_emit_survives_a_concurrent_admission_append() -> None:
    store = MemoryEventStore()
    task_id = await _submitted(store)
    session = await claim(store, await store.read(task_id), "r1", now=datetime.now(UTC))
    nudge = NudgeRequested(
        task_id=task_id,
        event_id=str(ULID()),
        ts=datetime.now(UTC),
        actor=Actor.ADMISSION,
        nudge_id="n1",
        requested_by="u",
        message="hi",
    )
    await store.append(task_id, [nudge], expected_seq=session.last_seq)

    await session.emit(Milestone(**session.common(), name="m1"), Milestone(**session.common(), name="m2"))

    names = [r.event.name for r in store.all() if isinstance(r.event, Milestone)]
    assert names == ["m1", "m2"]
    assert [n.nudge_id for n in session.state.pending_nudges] == ["n1"]
    assert session.last_seq == store.all()[-1].seq
    assert session.state.last_milestone == "m2"


class _AnswerLost:
    """A store whose first append lands, is followed by a nudge, and reports a conflict (the retry of a
    publish whose answer was lost in an outage); later appends of stored events answer their old
    sequences, as JetStream does for a repeated ``Nats-Msg-Id``."""

    def __init__(self, inner: MemoryEventStore, nudge: NudgeRequested) -> None:
        self.inner = inner
        self.nudge = nudge
        self.first = True

    async def append(self, task_id: str, events: Sequence[Event], *, expected_seq: int) -> list[int]:
        if self.first:
            self.first = False
            seqs = await self.inner.append(task_id, events, expected_seq=expected_seq)
            (nudged,) = await self.inner.append(task_id, [self.nudge], expected_seq=seqs[-1])
            raise ConcurrencyError(task_id, expected_seq, nudged, appended=0)
        stored = {r.event.event_id: r.seq for r in self.inner.all()}
        if all(e.event_id in stored for e in events):
            return [stored[e.event_id] for e in events]
        return await self.inner.append(task_id, events, expected_seq=expected_seq)

    async def read(self, task_id: str, *, after_seq: int = 0) -> TaskLog:
        return await self.inner.read(task_id, after_seq=after_seq)


async def test_session_emit_does_not_fold_twice_an_event_whose_append_answer_was_lost() -> None:
    inner = MemoryEventStore()
    task_id = await _submitted(inner)
    claimed = await claim(inner, await inner.read(task_id), "r1", now=datetime.now(UTC))
    nudge = NudgeRequested(
        task_id=task_id,
        event_id=str(ULID()),
        ts=datetime.now(UTC),
        actor=Actor.ADMISSION,
        nudge_id="n1",
        requested_by="u",
        message="hi",
    )
    session = TaskSession(_AnswerLost(inner, nudge), claimed.state)
    session.attempt = claimed.attempt

    await session.emit(Milestone(**session.common(), name="m1"))

    assert [type(r.event) for r in inner.all()][-2:] == [Milestone, NudgeRequested]  # stored once
    assert session.state == (await inner.read(task_id)).state()  # folded once, cursor not moved back


async def test_claim_of_a_terminal_task_is_lost() -> None:
    store = MemoryEventStore()
    task_id = await _submitted(store)
    first = await claim(store, await store.read(task_id), "r1", now=datetime.now(UTC))
    stale_log = await store.read(task_id)
    await first.emit(TaskFailed(**first.common(), code="X", message="x"))
    with pytest.raises(ClaimLost) as lost:
        await claim(store, stale_log, "r2", now=datetime.now(UTC))
    assert lost.value.state is not None
    assert lost.value.state.terminal


# --- the sandbox's settings and what claim/intake record -----------------------------------------


def test_sandbox_settings_default_to_bwrap_without_network() -> None:
    sandbox = Settings.from_env({}).sandbox
    assert sandbox == SandboxSettings()
    assert (sandbox.mode, sandbox.allow_network) == ("bwrap", False)
    assert (sandbox.max_procs, sandbox.max_file_mb, sandbox.memory_mb, sandbox.cpu_s) == (
        512,
        2048,
        4096,
        900,
    )


def test_sandbox_settings_from_env() -> None:
    sandbox = Settings.from_env(
        {
            "BGAGENT_SANDBOX": "off",
            "BGAGENT_SANDBOX_ALLOW_NETWORK": "true",
            "BGAGENT_SANDBOX_MAX_PROCS": "100",
            "BGAGENT_SANDBOX_MAX_FILE_MB": "0",
            "BGAGENT_SANDBOX_MEMORY_MB": "1024",
            "BGAGENT_SANDBOX_CPU_S": "60",
        }
    ).sandbox
    assert sandbox == SandboxSettings(
        mode="off", allow_network=True, max_procs=100, max_file_mb=0, memory_mb=1024, cpu_s=60
    )


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"BGAGENT_SANDBOX": "docker"}, "BGAGENT_SANDBOX"),
        ({"BGAGENT_SANDBOX_MAX_PROCS": "lots"}, "BGAGENT_SANDBOX_MAX_PROCS"),
        ({"BGAGENT_SANDBOX_MAX_PROCS": "2"}, "BGAGENT_SANDBOX_MAX_PROCS"),
        ({"BGAGENT_SANDBOX_MEMORY_MB": "16"}, "BGAGENT_SANDBOX_MEMORY_MB"),
        ({"BGAGENT_SANDBOX_CPU_S": "-1"}, "BGAGENT_SANDBOX_CPU_S"),
        ({"BGAGENT_SANDBOX_ALLOW_NETWORK": "perhaps"}, "BGAGENT_SANDBOX_ALLOW_NETWORK"),
    ],
)
def test_bad_sandbox_settings_name_their_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("sandbox", "asked", "recorded"),
    [("bwrap", False, False), ("bwrap", True, True), ("off", False, True), (None, True, None)],
)
async def test_task_started_records_the_sandbox_and_whether_commands_reach_the_network(
    sandbox: str | None, asked: bool, recorded: bool | None
) -> None:
    store = MemoryEventStore()
    task_id = await _submitted(store, network=asked)
    session = await claim(store, await store.read(task_id), "r1", now=datetime.now(UTC), sandbox=sandbox)
    started = next(r.event for r in store.all() if isinstance(r.event, TaskStarted))
    assert (started.sandbox, started.network) == (sandbox, recorded)
    assert session.network is asked


async def test_intake_refuses_network_unless_this_runner_allows_it() -> None:
    store = MemoryEventStore()
    log = await store.read(await _submitted(store, network=True))
    problem = submission_problem(log, ())
    assert problem is not None
    assert "network" in problem
    assert submission_problem(log, (), allow_network=True) is None
