"""Golden tests for the shipped starter set: each rule fires on its inputs and stays quiet on near misses."""

from __future__ import annotations

from typing import Any

import pytest

from bgagent_policy import Outcome, PolicyEngine

ENGINE = PolicyEngine.load()


def bash(command: str) -> tuple[str, dict[str, Any]]:
    return "bash", {"command": command}


def write(path: str, command: str = "create") -> tuple[str, dict[str, Any]]:
    return "str_replace_based_edit_tool", {"command": command, "path": path, "file_text": "x"}


def view(path: str) -> tuple[str, dict[str, Any]]:
    return "str_replace_based_edit_tool", {"command": "view", "path": path}


HARD_DENY_CASES = [
    ("rm_slash", bash("rm -rf /")),
    ("rm_slash", bash("sudo rm -rf / --verbose")),
    ("rm_slash", bash("cd /tmp && rm -rf /*")),
    ("rm_slash", bash("rm -fr /; echo done")),
    ("rm_slash", bash("rm -r --no-preserve-root /")),
    ("write_git_internals", write(".git/config")),
    ("write_git_internals", write(".git/hooks/pre-commit", "str_replace")),
    ("write_git_internals_nested", write("/workspace/repo/.git/HEAD", "insert")),
    ("write_git_internals_nested", write("vendor/lib/.git/config")),
    ("drop_table", bash("psql -c 'DROP TABLE users'")),
    ("drop_table", bash("sqlite3 db 'drop table users;'")),
    ("force_push_main", bash("git push --force origin main")),
    ("force_push_main", bash("git push origin main --force")),
    ("force_push_main", bash("git push -f origin main")),
    ("force_push_main", bash("git push --force-with-lease origin HEAD:main")),
    ("force_push_main", bash("git push -f origin prod")),
    ("force_push_main", bash("git push origin +main")),
    ("write_credentials", write("/home/agent/.aws/credentials")),
    ("write_credentials", write("config/credentials.json", "str_replace")),
]

GATE_CASES = [
    ("push_to_protected_branch", bash("git push origin main"), "medium", 300),
    ("push_to_protected_branch", bash("git push origin master"), "medium", 300),
    ("push_to_protected_branch", bash("git push origin HEAD:prod"), "medium", 300),
    ("push_to_protected_branch", bash("git push origin release/2.1"), "medium", 300),
    ("push_to_protected_branch", bash("git push -u origin main && echo ok"), "medium", 300),
    ("push_to_protected_branch", bash("git push --force origin master"), "medium", 300),
    ("write_env_files", write(".env"), "high", 600),
    ("write_env_files", write("/workspace/app/prod.env", "str_replace"), "high", 600),
]

NEAR_MISSES = [
    bash("rm -rf ./build"),
    bash("rm -rf /tmp/scratch"),
    bash("rm -rf build/"),
    bash("RM -RF /"),  # case-sensitive `like`: only the exact spelling matches
    bash("echo 'Drop Table users'"),
    bash("git push origin mainline"),
    bash("git push origin feature/main-menu"),
    bash("git push --force origin feature"),
    bash("git push -f origin my-branch"),
    bash("git pull origin main"),
    bash("git push origin releases"),
    bash("git commit -m 'fix the main loop'"),
    write(".github/workflows/ci.yml"),
    write(".gitignore"),
    write("src/env.py"),
    write(".env.example"),
    write("docs/environment.md"),
    write("src/creds.py"),
    view(".git/config"),
    view("/home/agent/.aws/credentials"),
    view(".env"),
    ("some_other_tool", {"command": "rm -rf /"}),
]


@pytest.mark.parametrize(("rule_id", "call"), HARD_DENY_CASES)
def test_hard_deny_rule_fires(rule_id: str, call: tuple[str, dict[str, Any]]) -> None:
    decision = ENGINE.evaluate(*call, allowed=lambda t, i, r: True)
    assert decision.outcome is Outcome.DENY
    assert rule_id in decision.rule_ids
    assert decision.reason.startswith("hard-deny: ")
    assert ENGINE.is_hard_deny(rule_id)


@pytest.mark.parametrize(("rule_id", "call", "severity", "timeout"), GATE_CASES)
def test_gate_rule_requires_approval(
    rule_id: str, call: tuple[str, dict[str, Any]], severity: str, timeout: int
) -> None:
    decision = ENGINE.evaluate(*call)
    assert decision.outcome is Outcome.REQUIRE_APPROVAL
    assert decision.rule_ids == (rule_id,)
    assert (decision.severity, decision.timeout_s) == (severity, timeout)
    assert not ENGINE.is_hard_deny(rule_id)


@pytest.mark.parametrize("call", NEAR_MISSES)
def test_near_misses_are_allowed(call: tuple[str, dict[str, Any]]) -> None:
    decision = ENGINE.evaluate(*call)
    assert decision.outcome is Outcome.ALLOW, decision
    assert decision.rule_ids == ()
    assert decision.reason == "no rule matched"


def test_starter_set_lists_every_rule_with_its_annotations() -> None:
    rules = {r.rule_id: r for r in ENGINE.rules()}
    assert list(rules) == [
        "rm_slash",
        "write_git_internals",
        "write_git_internals_nested",
        "drop_table",
        "force_push_main",
        "write_credentials",
        "push_to_protected_branch",
        "write_env_files",
    ]
    assert {r.tier for r in ENGINE.rules()[:6]} == {"hard-deny"}
    gate = rules["push_to_protected_branch"]
    assert (gate.tier, gate.severity, gate.category) == ("hard-gate", "medium", "git")
    assert gate.approval_timeout_s == 300
    env = rules["write_env_files"]
    assert (env.severity, env.approval_timeout_s) == ("high", 600)
    assert all(r.summary for r in rules.values())
    assert not ENGINE.is_hard_deny("no_such_rule")


def test_every_starter_rule_is_exercised_by_a_golden_case() -> None:
    covered = {c[0] for c in HARD_DENY_CASES} | {c[0] for c in GATE_CASES}
    assert covered == {r.rule_id for r in ENGINE.rules()}
