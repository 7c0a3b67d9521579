"""The runner clones and pushes only inside its local repository roots, whatever a task names.

Tasks here are appended straight to the stream (no admission in front), so the runner's own
checks are what stands between a task and the rest of the machine. ``origin`` lives in
``<tmp>/repos``, the root of these settings; ``victim`` is another repository next to it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest
from ulid import ULID

from bgagent_contracts import Milestone, Status, WorkspaceReady
from bgagent_eventstore import NatsSettings
from bgagent_runner.errors import RepoNotAllowedError, WorkspaceError
from bgagent_runner.sandbox import SandboxSettings
from bgagent_runner.settings import Settings
from bgagent_runner.workspace import NOT_UNDER_ROOTS, Git, clone, commit_all, parse_repo, push
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


def refs(repo: Path) -> str:
    """Every ref of a repository with its object: equal before and after means nothing was pushed."""
    return git(repo, "for-each-ref", "--format=%(refname) %(objectname)")


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """Another repository on the machine, outside the root, with a branch of its own."""
    repo = tmp_path / "elsewhere" / "victim"
    repo.mkdir(parents=True)
    git(repo, "init", "--quiet", "-b", "main")
    (repo / "secret.txt").write_text("not for tasks\n")
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "victim")
    git(repo, "branch", "keep-me")
    return repo


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "nats": NatsSettings(),
        "runner_id": "r",
        "work_dir": str(tmp_path / "work"),
        "local_repo_roots": (str(tmp_path / "repos"),),
    }
    values.update(overrides)
    return Settings(**values)


def assert_reveals_nothing(exc: BaseException, *paths: Path) -> None:
    text = str(exc)
    assert "/" not in text.replace("file://", "").replace("url.<base>", ""), text
    for path in paths:
        assert str(path) not in text


# --- parse_repo: where a task's repository may be ----------------------------------------


def test_a_repository_under_the_root_is_cloned_from_its_real_path(origin: Path, tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    (origin.parent / "alias").symlink_to(origin)
    assert parse_repo(str(origin), s).clone_url == str(origin)
    assert parse_repo(f"file://{origin}", s).clone_url == f"file://{origin}"
    alias = parse_repo(str(origin.parent / "alias"), s)
    assert (alias.kind, alias.clone_url, alias.is_github) == ("local", str(origin), False)


def test_outside_the_root_existing_and_missing_paths_get_the_same_refusal(
    origin: Path, victim: Path, tmp_path: Path
) -> None:
    s = settings_for(tmp_path)
    root = origin.parent
    (root / "to-victim").symlink_to(victim)
    (root / "to-nothing").symlink_to(tmp_path / "nothing")
    (root / "to-proc").symlink_to("/proc/self/cwd")
    pointer = root / "pointer"
    pointer.mkdir()
    (pointer / ".git").write_text(f"gitdir: {victim / '.git'}\n")
    linked = root / "linked"
    linked.mkdir()
    (linked / ".git").symlink_to(victim / ".git")
    (tmp_path / "repos-evil").mkdir()
    for repo in (
        "/etc",
        "/proc/self/cwd",
        str(victim),
        f"file://{victim}",
        str(tmp_path / "nothing"),
        str(root / "to-victim"),
        str(root / "to-nothing"),
        str(root / "to-proc"),
        str(pointer),
        str(linked),
        str(tmp_path / "repos-evil"),
    ):
        with pytest.raises(RepoNotAllowedError) as info:
            parse_repo(repo, s)
        assert str(info.value) == NOT_UNDER_ROOTS, repo
        assert info.value.code == "REPO_NOT_ALLOWED"


@pytest.mark.parametrize("repo", ["{root}/../elsewhere/victim", "file://{root}/origin/../..", "file://x/y"])
def test_dot_dot_and_relative_file_urls_are_refused(origin: Path, victim: Path, repo: str) -> None:
    with pytest.raises(RepoNotAllowedError) as info:
        parse_repo(repo.format(root=origin.parent), settings_for(origin.parent.parent))
    assert_reveals_nothing(info.value, victim, origin)


def test_inside_the_root_a_missing_path_or_plain_directory_is_a_workspace_error(
    origin: Path, tmp_path: Path
) -> None:
    (origin.parent / "plain").mkdir()
    for name, text in (("missing", "does not exist"), ("plain", "not a git repository")):
        with pytest.raises(WorkspaceError, match=text) as info:
            parse_repo(str(origin.parent / name), settings_for(tmp_path))
        assert info.value.code == "WORKSPACE_ERROR"
        assert_reveals_nothing(info.value, tmp_path)


# --- clone and push check again ------------------------------------------------------------


async def test_clone_refuses_when_the_repository_was_swapped_for_a_symlink_out(
    origin: Path, victim: Path, tmp_path: Path
) -> None:
    s = settings_for(tmp_path)
    ref = parse_repo(str(origin), s)
    origin.rename(origin.parent / "moved")
    origin.symlink_to(victim)
    before = refs(victim)
    attempt = tmp_path / "work" / "t" / "attempt-1"

    with pytest.raises(RepoNotAllowedError) as info:
        await clone(s, ref, attempt)

    assert str(info.value) == NOT_UNDER_ROOTS
    assert not (attempt / "repo").exists()
    assert refs(victim) == before


async def _cloned_with_a_change(s: Settings, origin: Path, tmp_path: Path) -> Git:
    g, repo_dir, _ = await clone(s, parse_repo(str(origin), s), tmp_path / "work" / "t" / "attempt-1")
    await g.run("checkout", "--quiet", "-b", "bgagent/t")
    (repo_dir / "change.txt").write_text("change\n")
    assert await commit_all(g, "change")
    return g


async def test_push_goes_to_the_checked_repository_even_if_origin_was_repointed(
    origin: Path, victim: Path, tmp_path: Path
) -> None:
    s = settings_for(tmp_path)
    g = await _cloned_with_a_change(s, origin, tmp_path)
    await g.run("remote", "set-url", "origin", str(victim))
    await g.run("remote", "set-url", "--push", "origin", str(victim))
    hook = g.cwd / ".git" / "hooks" / "pre-push"
    hook.write_text(f"#!/bin/sh\ntouch {tmp_path / 'hook-ran'}\n")
    hook.chmod(0o755)
    before = refs(victim)

    await push(g, "bgagent/t", force=True)

    assert git(origin, "show", "bgagent/t:change.txt") == "change"
    assert refs(victim) == before
    assert not (tmp_path / "hook-ran").exists()


@pytest.mark.parametrize("scope", ["--local", "--global"])
async def test_push_refuses_url_rewrites(origin: Path, victim: Path, tmp_path: Path, scope: str) -> None:
    s = settings_for(tmp_path)
    g = await _cloned_with_a_change(s, origin, tmp_path)
    await g.run("config", scope, f"url.{victim}.pushInsteadOf", str(origin))
    before = (refs(victim), refs(origin))

    with pytest.raises(RepoNotAllowedError, match="insteadOf") as info:
        await push(g, "bgagent/t", force=True)

    assert_reveals_nothing(info.value, victim, origin)
    assert (refs(victim), refs(origin)) == before


async def test_push_refuses_when_the_repository_was_swapped_for_a_symlink_out(
    origin: Path, victim: Path, tmp_path: Path
) -> None:
    s = settings_for(tmp_path)
    g = await _cloned_with_a_change(s, origin, tmp_path)
    origin.rename(origin.parent / "moved")
    origin.symlink_to(victim)
    before = refs(victim)

    with pytest.raises(RepoNotAllowedError) as info:
        await push(g, "bgagent/t", force=True)

    assert str(info.value) == NOT_UNDER_ROOTS
    assert refs(victim) == before


# --- a running runner, tasks appended straight to the stream -----------------------------


def _bash(command: str) -> dict[str, Any]:
    return {"name": "bash", "input": {"command": command}}


@pytest.mark.integration
async def test_a_task_on_a_symlink_out_of_the_root_fails_before_any_clone(
    kit: Any, origin: Path, victim: Path, tmp_path: Path
) -> None:
    (origin.parent / "shortcut").symlink_to(victim)
    settings = kit.make_settings(
        kit.settings.nats, "http://127.0.0.1:9", Path(kit.settings.work_dir), keep_workspaces=True
    )
    await kit.start_runner(settings)
    before = refs(victim)

    task_id = await kit.submit(str(origin.parent / "shortcut"), "escape the root")
    state = await kit.wait_terminal(task_id)

    assert state.status is Status.FAILED
    assert state.error_code == "REPO_NOT_ALLOWED"
    assert state.error_message == NOT_UNDER_ROOTS
    events = await kit.events(task_id)
    assert not any(isinstance(e, WorkspaceReady) for e in events)
    assert not any(isinstance(e, Milestone) and e.name == "repo_cloned" for e in events)
    assert not (Path(settings.work_dir) / task_id / "attempt-1" / "repo").exists()
    assert refs(victim) == before


@pytest.mark.integration
async def test_a_task_on_another_repository_of_the_machine_changes_nothing_there(
    kit: Any, victim: Path
) -> None:
    await kit.start_runner(kit.settings)
    before = refs(victim)

    task_id = await kit.submit(str(victim), "push into another repository")
    state = await kit.wait_terminal(task_id)

    assert state.status is Status.FAILED
    # the runner's re-check of the submission, or its workspace: either refuses before any clone
    assert state.error_code in ("REPO_NOT_ALLOWED", "INVALID_SUBMISSION")
    assert str(victim) not in (state.error_message or "")
    assert not any(isinstance(e, WorkspaceReady) for e in await kit.events(task_id))
    assert refs(victim) == before


@pytest.mark.integration
async def test_an_agent_repointing_origin_still_pushes_only_to_the_task_repository(
    kit: Any, model_server: ModelServer, origin: Path, victim: Path
) -> None:
    tag = f"repoint-{ULID()}"
    model_server.add_script(
        tag,
        [
            {"tool_uses": [_bash(f"git remote set-url origin {victim} && echo x > x.txt")]},
            {"text": "done"},
        ],
    )
    # without the sandbox, which would keep .git read-only: the push's own checks are under test
    await kit.start_runner(msgspec.structs.replace(kit.settings, sandbox=SandboxSettings(mode="off")))
    before = refs(victim)

    task_id = await kit.submit(str(origin), f"{tag}: try to push elsewhere")
    state = await kit.wait_terminal(task_id)

    assert state.status is Status.COMPLETED, state.error_message
    assert git(origin, "show", f"bgagent/{task_id}:x.txt") == "x"
    assert refs(victim) == before


@pytest.mark.integration
async def test_an_agent_adding_a_url_rewrite_fails_the_task_without_pushing(
    kit: Any, model_server: ModelServer, origin: Path, victim: Path
) -> None:
    tag = f"rewrite-{ULID()}"
    model_server.add_script(
        tag,
        [
            {"tool_uses": [_bash(f"git config url.{victim}.insteadOf {origin} && echo x > x.txt")]},
            {"text": "done"},
        ],
    )
    # without the sandbox, which would keep .git read-only: the push's own checks are under test
    await kit.start_runner(msgspec.structs.replace(kit.settings, sandbox=SandboxSettings(mode="off")))
    before = (refs(victim), refs(origin))

    task_id = await kit.submit(str(origin), f"{tag}: rewrite the remote")
    state = await kit.wait_terminal(task_id)

    assert state.status is Status.FAILED
    assert state.error_code == "REPO_NOT_ALLOWED"
    assert str(victim) not in (state.error_message or "")
    assert (refs(victim), refs(origin)) == before
