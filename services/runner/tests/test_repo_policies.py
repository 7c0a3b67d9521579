"""A repository's own policies (``.bgagent/policies/``): added rules, disabled gates, refusals.

Real NATS, the scripted model and a local origin whose commits carry the policy files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ulid import ULID

from bgagent_contracts import ApprovalRequested, Milestone, PolicyDenied, Status, ToolCalled
from bgagent_testing.model_server import ModelServer

pytestmark = pytest.mark.integration

REPO_DENY = """
@rule_id("no_curl")
@tier("hard-deny")
@category("network")
forbid (principal, action == Action::"bash", resource)
when { context.command like "*curl *" };
"""


def commit_policies(kit: Any, origin: Path, files: dict[str, str]) -> None:
    folder = origin / ".bgagent" / "policies"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    kit.git(origin, "add", "-A")
    kit.git(origin, "commit", "-qm", "policies")


def of(events: list[Any], kind: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


async def test_a_repository_rule_denies_and_the_task_says_what_the_repository_changed(
    kit: Any, model_server: ModelServer, origin: Path
) -> None:
    commit_policies(kit, origin, {"hard_deny.cedar": REPO_DENY})
    tag = f"repo-deny-{ULID()}"
    model_server.add_script(
        tag, [{"tool_uses": [{"name": "bash", "input": {"command": "curl http://x"}}]}, {"text": "ok"}]
    )
    await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(origin), f"{tag} fetch")
    state = await kit.wait_terminal(task_id)
    assert state.status is Status.COMPLETED
    events = await kit.events(task_id)
    (denied,) = of(events, PolicyDenied)
    assert denied.rule_id == "no_curl"
    (note,) = [m for m in of(events, Milestone) if m.name == "repo_policies"]
    assert note.detail is not None
    assert "1 rule(s) added (no_curl)" in note.detail


async def test_a_repository_disables_a_gate_rule_and_the_call_runs_without_asking(
    kit: Any, model_server: ModelServer, origin: Path
) -> None:
    commit_policies(kit, origin, {"disabled": "# we keep secrets elsewhere\nwrite_env_files\n"})
    tag = f"repo-disable-{ULID()}"
    write_env = {"command": "create", "path": "app.env", "file_text": "MODE=dev\n"}
    model_server.add_script(
        tag, [{"tool_uses": [{"name": "str_replace_based_edit_tool", "input": write_env}]}, {"text": "done"}]
    )
    await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(origin), f"{tag} env")
    state = await kit.wait_terminal(task_id)
    assert state.status is Status.COMPLETED
    events = await kit.events(task_id)
    assert of(events, ToolCalled)
    assert not of(events, ApprovalRequested), "the disabled gate asked anyway"
    assert kit.git(origin, "show", f"bgagent/{task_id}:app.env") == "MODE=dev"


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({"disabled": "rm_slash\n"}, "hard-deny rules cannot be disabled"),
        ({"hard_gate.cedar": "forbid (principal, action, resource"}, ".bgagent/policies/hard_gate.cedar"),
        ({"hard_deny.cedar": "// " + "x" * 70_000}, "larger than 64 KiB"),
    ],
)
async def test_a_repository_cannot_weaken_hard_deny_and_a_broken_file_fails_the_task_with_a_reason(
    kit: Any, model_server: ModelServer, origin: Path, files: dict[str, str], reason: str
) -> None:
    commit_policies(kit, origin, files)
    tag = f"repo-bad-{ULID()}"
    model_server.add_script(tag, [{"text": "never asked"}])
    await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(origin), f"{tag} bad policies")
    state = await kit.wait_terminal(task_id)
    assert (state.status, state.error_code) == (Status.FAILED, "POLICY_ERROR")
    assert state.error_message is not None
    assert reason in state.error_message
    assert model_server.requests(tag) == [], "the agent ran under policies that did not load"


async def test_a_policy_file_that_is_a_link_out_of_the_repository_is_refused(
    kit: Any, model_server: ModelServer, origin: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "host-secret.cedar"
    secret.write_text("// a file of the runner's host\n")
    folder = origin / ".bgagent" / "policies"
    folder.mkdir(parents=True)
    (folder / "hard_deny.cedar").symlink_to(secret)
    kit.git(origin, "add", "-A")
    kit.git(origin, "commit", "-qm", "a link")
    tag = f"repo-link-{ULID()}"
    model_server.add_script(tag, [{"text": "never asked"}])
    await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(origin), f"{tag} link")
    state = await kit.wait_terminal(task_id)
    assert (state.status, state.error_code) == (Status.FAILED, "POLICY_ERROR")
    assert state.error_message is not None
    assert "is a link" in state.error_message
    assert "host" not in state.error_message
