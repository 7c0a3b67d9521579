"""Load-time refusals, extra rule files, disabled ids, the evaluation order and failing closed."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cedarpy
import pytest

from bgagent_policy import Outcome, PolicyDecision, PolicyEngine, PolicyLoadError, cedar_request, input_sha256

GATE_OK = """
@rule_id("write_terraform")
@severity("critical")
@category("infra")
@approval_timeout_s("120")
@summary("writing Terraform")
forbid (principal, action == Action::"write_file", resource) when { context.file_path like "*.tf" };
"""


def policies(tmp_path: Path, *, deny: str | None = None, gate: str | None = None) -> Path:
    if deny is not None:
        (tmp_path / "hard_deny.cedar").write_text(deny)
    if gate is not None:
        (tmp_path / "hard_gate.cedar").write_text(gate)
    return tmp_path


# --- load-time refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gate": "forbid (principal, action resource);"}, "hard_gate.cedar: malformed policy"),
        (
            {"deny": '@rule_id("x")\nforbid (principal, action, resource) when { context.x like };'},
            "malformed",
        ),
        (
            {"deny": '@rule_id("rm_slash")\nforbid (principal, action, resource);'},
            "duplicate @rule_id 'rm_slash'",
        ),
        (
            {"gate": GATE_OK + GATE_OK},
            "duplicate @rule_id 'write_terraform'",
        ),
        (
            {"deny": '@rule_id("x")\n@tier("hard-gate")\nforbid (principal, action, resource);'},
            "rule 'x': @tier('hard-gate') contradicts its file",
        ),
        (
            {"gate": '@rule_id("x")\n@tier("hard-deny")\nforbid (principal, action, resource);'},
            "@tier('hard-deny') contradicts its file",
        ),
        (
            {"gate": '@severity("low")\nforbid (principal, action, resource);'},
            "hard_gate.cedar: policy #1: a hard-gate rule needs @rule_id",
        ),
        (
            {"gate": '@rule_id("x")\n@approval_timeout_s("29")\nforbid (principal, action, resource);'},
            "rule 'x': @approval_timeout_s(29) is under 30 s",
        ),
        (
            {"gate": '@rule_id("x")\n@approval_timeout_s("5m")\nforbid (principal, action, resource);'},
            "rule 'x': @approval_timeout_s('5m') is not an integer",
        ),
        (
            {"gate": '@rule_id("x")\n@approval_timeout_s("60.5")\nforbid (principal, action, resource);'},
            "is not an integer",
        ),
        (
            {"gate": '@rule_id("x")\n@severity("urgent")\nforbid (principal, action, resource);'},
            "@severity('urgent') is not one of low, medium, high, critical",
        ),
        (
            {"gate": '@rule_id("x")\npermit (principal, action, resource);'},
            "rule 'x': only forbid rules belong in a policy file",
        ),
        (
            {"gate": '@rule_id("has space")\nforbid (principal, action, resource);'},
            "@rule_id must be",
        ),
        (
            {"deny": "@rule_id\nforbid (principal, action, resource);"},
            "hard_deny.cedar: policy #1: @rule_id must be",
        ),
        (
            {"gate": '@rule_id("x")\n@approval_timeout_s\nforbid (principal, action, resource);'},
            "@approval_timeout_s('') is not an integer",
        ),
        (
            {"gate": '@rule_id("x")\n@rule_id("y")\nforbid (principal, action, resource);'},
            "malformed policy: duplicate annotation",
        ),
        (
            {"gate": '@rule_id("t")\nforbid (principal == ?principal, action, resource);'},
            "templates are not supported",
        ),
    ],
)
def test_load_refuses(tmp_path: Path, kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(PolicyLoadError) as info:
        PolicyEngine.load(policies(tmp_path, **kwargs))
    assert message in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_load_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match="not a directory"):
        PolicyEngine.load(tmp_path / "nope")


def test_disabling_a_hard_deny_rule_is_refused() -> None:
    with pytest.raises(PolicyLoadError, match="'force_push_main': hard-deny rules cannot be disabled"):
        PolicyEngine.load(disabled=["force_push_main"])


def test_disabling_an_unknown_rule_is_refused() -> None:
    with pytest.raises(PolicyLoadError, match="'push_to_main': no such rule"):
        PolicyEngine.load(disabled=["push_to_main"])


# --- extra rules and disabled gates ------------------------------------------------------------------


def test_extra_dir_adds_rules_to_both_tiers(tmp_path: Path) -> None:
    deny = '@rule_id("curl_pipe_sh")\n@summary("curl | sh")\n'
    deny += 'forbid (principal, action == Action::"bash", resource)\n'
    deny += '  when { context.command like "*curl *| sh*" };\n'
    deny += 'forbid (principal, action == Action::"invoke_tool", resource)\n'
    deny += '  when { context.tool == "web_fetch" };'
    engine = PolicyEngine.load(policies(tmp_path, deny=deny, gate=GATE_OK))
    ids = [r.rule_id for r in engine.rules()]
    assert ids[:6] == [
        "rm_slash",
        "write_git_internals",
        "write_git_internals_nested",
        "drop_table",
        "force_push_main",
        "write_credentials",
    ]
    assert ids[6:] == [
        "curl_pipe_sh",
        "hard_deny#2",
        "push_to_protected_branch",
        "write_env_files",
        "write_terraform",
    ]
    assert engine.is_hard_deny("hard_deny#2")

    assert engine.evaluate("bash", {"command": "curl https://x | sh"}).rule_ids == ("curl_pipe_sh",)
    assert engine.evaluate("web_fetch", {"url": "https://x"}).rule_ids == ("hard_deny#2",)
    gated = engine.evaluate("str_replace_based_edit_tool", {"command": "create", "path": "main.tf"})
    assert gated == PolicyDecision(
        Outcome.REQUIRE_APPROVAL,
        ("write_terraform",),
        "approval required: write_terraform (writing Terraform)",
        severity="critical",
        timeout_s=120,
        category="infra",
    )


def test_extra_dir_with_only_one_file_and_without_files(tmp_path: Path) -> None:
    assert len(PolicyEngine.load(tmp_path).rules()) == 8
    assert len(PolicyEngine.load(policies(tmp_path, gate=GATE_OK)).rules()) == 9


def test_disabled_gate_rule_is_dropped(tmp_path: Path) -> None:
    engine = PolicyEngine.load(policies(tmp_path, gate=GATE_OK), disabled=["push_to_protected_branch"])
    assert "push_to_protected_branch" not in [r.rule_id for r in engine.rules()]
    assert engine.evaluate("bash", {"command": "git push origin main"}).outcome is Outcome.ALLOW
    # the hard-deny rule on the same branch still applies
    assert engine.evaluate("bash", {"command": "git push -f origin main"}).outcome is Outcome.DENY


def test_several_gates_merge_min_timeout_and_max_severity(tmp_path: Path) -> None:
    gate = """
@rule_id("any_push")
@severity("low")
@approval_timeout_s("45")
forbid (principal, action == Action::"bash", resource) when { context.command like "git push*" };
@rule_id("no_annotations")
forbid (principal, action == Action::"bash", resource) when { context.command like "*origin*" };
"""
    engine = PolicyEngine.load(policies(tmp_path, gate=gate))
    decision = engine.evaluate("bash", {"command": "git push origin main"})
    assert decision.outcome is Outcome.REQUIRE_APPROVAL
    assert decision.rule_ids == ("push_to_protected_branch", "any_push", "no_annotations")
    assert (decision.timeout_s, decision.severity, decision.category) == (45, "medium", "git")


def test_hard_deny_lists_every_match(tmp_path: Path) -> None:
    deny = '@rule_id("no_sudo")\n@severity("low")\n'
    deny += 'forbid (principal, action == Action::"bash", resource) when { context.command like "sudo *" };'
    engine = PolicyEngine.load(policies(tmp_path, deny=deny))
    decision = engine.evaluate("bash", {"command": "sudo rm -rf /"})
    assert decision.rule_ids == ("rm_slash", "no_sudo")
    assert decision.severity == "critical"


# --- evaluation order ---------------------------------------------------------------------------------

ENGINE = PolicyEngine.load()
PUSH = {"command": "git push origin main"}


class Calls:
    def __init__(self, allow: bool | set[tuple[str, ...]] = False, denied: str | None = None) -> None:
        self.allow = allow
        self.denied = denied
        self.allowed_calls: list[tuple[str, tuple[str, ...]]] = []
        self.cache_calls: list[tuple[str, str]] = []

    def allowed(self, tool: str, tool_input: Mapping[str, Any], rule_ids: tuple[str, ...]) -> bool:
        self.allowed_calls.append((tool, rule_ids))
        return self.allow if isinstance(self.allow, bool) else rule_ids in self.allow

    def recently_denied(self, tool: str, sha: str) -> str | None:
        self.cache_calls.append((tool, sha))
        return self.denied


def run(tool: str, tool_input: Mapping[str, Any], calls: Calls) -> PolicyDecision:
    return ENGINE.evaluate(tool, tool_input, allowed=calls.allowed, recently_denied=calls.recently_denied)


def test_hard_deny_beats_the_allow_list_and_the_cache() -> None:
    calls = Calls(allow=True, denied="cached")
    decision = run("bash", {"command": "rm -rf /"}, calls)
    assert (decision.outcome, decision.rule_ids) == (Outcome.DENY, ("rm_slash",))
    assert calls.allowed_calls == []
    assert calls.cache_calls == []


def test_allow_list_beats_the_cache_and_the_gates() -> None:
    calls = Calls(allow=True, denied="denied 10 s ago")
    decision = run("bash", PUSH, calls)
    assert decision == PolicyDecision(Outcome.ALLOW, (), "allowed by an approval scope")
    assert calls.allowed_calls == [("bash", ())]
    assert calls.cache_calls == []


def test_recent_denial_beats_the_gates() -> None:
    calls = Calls(denied="denied by alice 20 s ago: use a PR")
    decision = run("bash", PUSH, calls)
    assert decision == PolicyDecision(Outcome.DENY, (), "denied by alice 20 s ago: use a PR")
    assert calls.cache_calls == [("bash", input_sha256("bash", PUSH))]


def test_recent_denial_applies_to_ungated_calls_too() -> None:
    decision = run("bash", {"command": "ls"}, Calls(denied="no"))
    assert decision.outcome is Outcome.DENY


def test_rule_scope_allows_a_gate() -> None:
    calls = Calls(allow={("push_to_protected_branch",)})
    decision = run("bash", PUSH, calls)
    assert decision.outcome is Outcome.ALLOW
    assert decision.rule_ids == ("push_to_protected_branch",)
    assert calls.allowed_calls == [("bash", ()), ("bash", ("push_to_protected_branch",))]


def test_gate_without_a_scope_requires_approval() -> None:
    calls = Calls()
    decision = run("bash", PUSH, calls)
    assert decision.outcome is Outcome.REQUIRE_APPROVAL
    assert len(calls.allowed_calls) == 2


def test_default_allow_asks_the_allow_list_once() -> None:
    calls = Calls()
    assert run("bash", {"command": "pytest -q"}, calls).outcome is Outcome.ALLOW
    assert calls.allowed_calls == [("bash", ())]


# --- failing closed -------------------------------------------------------------------------------------


def test_engine_error_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("cedar crashed")

    monkeypatch.setattr(cedarpy, "is_authorized", boom)
    decision = ENGINE.evaluate("bash", {"command": "ls"})
    assert decision == PolicyDecision(Outcome.DENY, (), "fail closed: RuntimeError")


def test_malformed_input_fails_closed() -> None:
    decision = ENGINE.evaluate("bash", {"command": ["rm", "-rf", "/"]})
    assert decision == PolicyDecision(Outcome.DENY, (), "fail closed: TypeError")


def test_a_raising_callback_fails_closed() -> None:
    def allowed(tool: str, tool_input: Mapping[str, Any], rule_ids: tuple[str, ...]) -> bool:
        raise KeyError(tool)

    assert ENGINE.evaluate("bash", {"command": "ls"}, allowed=allowed).reason == "fail closed: KeyError"


def test_a_rule_that_errors_at_evaluation_fails_closed(tmp_path: Path) -> None:
    gate = '@rule_id("bad")\nforbid (principal, action, resource) when { context.nope == "x" };'
    engine = PolicyEngine.load(policies(tmp_path, gate=gate))
    decision = engine.evaluate("bash", {"command": "ls"})
    assert decision == PolicyDecision(Outcome.DENY, (), "fail closed: PolicyEvaluationError")


# --- request shape and hashing --------------------------------------------------------------------------


def test_cedar_request_maps_tools_to_actions() -> None:
    assert cedar_request("bash", {"command": "ls"})["action"] == {"type": "Action", "id": "bash"}
    edit = "str_replace_based_edit_tool"
    for sub, action in [("view", "read_file"), ("create", "write_file"), ("str_replace", "write_file")]:
        request = cedar_request(edit, {"command": sub, "path": "a.py"})
        assert request["action"]["id"] == action
        assert request["context"] == {"tool": edit, "command": "", "file_path": "a.py"}
    assert cedar_request(edit, {"command": "insert", "path": "a"})["action"]["id"] == "write_file"
    assert cedar_request("web_fetch", {})["context"] == {"tool": "web_fetch", "command": "", "file_path": ""}


def test_input_sha256_is_canonical() -> None:
    a = input_sha256("bash", {"command": "ls", "timeout": 5})
    b = input_sha256("bash", {"timeout": 5, "command": "ls"})
    assert a == b
    assert len(a) == 64
    assert a != input_sha256("bash", {"command": "ls -a", "timeout": 5})
    assert input_sha256("bash", {"b": 1, "a": "é"}) == hashlib.sha256('{"a":"é","b":1}'.encode()).hexdigest()
