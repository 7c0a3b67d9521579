"""Approvals in the pure core: scopes, the allow-list, the fold of requests and decisions, decide."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ulid import ULID

from bgagent_contracts import (
    ApprovalDecided,
    ApprovalExpired,
    ApprovalRequested,
    CancelRequested,
    InvalidCommandError,
    InvalidSubmissionError,
    RequestAlreadyDecidedError,
    RequestNotFoundError,
    Status,
    TaskAlreadyTerminalError,
    TaskFailed,
    TaskNotAwaitingApprovalError,
    TaskStarted,
    TaskState,
    TaskSubmitted,
    WorkspaceReady,
    decide_approval,
    fold,
    recent_denial,
)
from bgagent_contracts.scopes import (
    Allowlist,
    InvalidScopeError,
    check_decision_scope,
    check_initial_approvals,
    grant,
    parse_scope,
)

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
TID = str(ULID())
BASH = "bash"
EDIT = "str_replace_based_edit_tool"


def _head(at: float) -> dict[str, Any]:
    return {"task_id": TID, "event_id": str(ULID()), "ts": T0 + timedelta(seconds=at)}


def submitted(**kw: Any) -> TaskSubmitted:
    return TaskSubmitted(**_head(0), actor="admission", user_id="alice", repo="a/b", **kw)


def running(attempt: int = 1, at: float = 1) -> list[Any]:
    run = {"actor": "runner", "attempt": attempt}
    return [
        TaskStarted(**_head(at), **run, runner_id=f"r{attempt}"),
        WorkspaceReady(**_head(at), **run, branch="b"),
    ]


def requested(
    rid: str, at: float, *, attempt: int = 1, sha: str = "s1", tool: str = BASH
) -> ApprovalRequested:
    return ApprovalRequested(
        **_head(at),
        actor="runner",
        attempt=attempt,
        request_id=rid,
        tool_use_id="tu",
        tool_name=tool,
        input_preview="git push origin main",
        rule_id="push_to_protected_branch",
        rule_ids=("push_to_protected_branch",),
        severity="medium",
        timeout_s=300,
        input_sha256=sha,
        deadline=T0 + timedelta(seconds=at + 300),
    )


def decided(rid: str, at: float, decision: str = "approve", scope: str | None = None) -> ApprovalDecided:
    return ApprovalDecided(
        **_head(at),
        actor="admission",
        request_id=rid,
        decision=decision,
        decided_by="alice",
        scope=scope,  # type: ignore[arg-type]
    )


def state_of(*events: Any, **submit: Any) -> TaskState:
    state = fold([submitted(**submit), *events])
    assert state is not None
    return state


# --- scopes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scope",
    [
        "all_session",
        "tool_type:bash",
        "tool_group:file_write",
        "rule:write_env_files",
        "bash_pattern:npm test*",
        "write_path:docs/*.md",
    ],
)
def test_valid_scopes_parse_and_print_back(scope: str) -> None:
    assert str(parse_scope(scope)) == scope


@pytest.mark.parametrize(
    "scope",
    [
        "",
        "x" * 129,
        "everything",
        "tool_type:python",
        "tool_group:reads",
        "rule:",
        "bash_pattern:*",
        "bash_pattern:**/",
        "write_path:*.*",
        "bash_pattern:a",
        "rule:a\x00b",
    ],
)
def test_degenerate_or_unknown_scopes_are_refused(scope: str) -> None:
    with pytest.raises(InvalidScopeError):
        parse_scope(scope)


def test_initial_approvals_are_capped_checked_and_never_name_a_hard_deny_rule() -> None:
    assert check_initial_approvals(["tool_type:bash", "tool_type:bash"]) == ("tool_type:bash",)
    with pytest.raises(InvalidSubmissionError, match="at most 20"):
        check_initial_approvals([f"bash_pattern:make t{i}*" for i in range(21)])
    with pytest.raises(InvalidSubmissionError, match="hard-deny"):
        check_initial_approvals(["rule:rm_slash"], hard_deny_rules=["rm_slash"])
    with pytest.raises(InvalidSubmissionError, match="initial_approvals"):
        check_initial_approvals(["bash_pattern:*"])


def test_each_scope_kind_allows_exactly_its_calls() -> None:
    push = {"command": "git push origin main"}
    env_write = {"command": "create", "path": "config/.env", "file_text": "X=1"}
    env_view = {"command": "view", "path": "config/.env"}
    cases = [
        ("all_session", [(BASH, push, ()), (EDIT, env_view, ())], []),
        ("tool_type:bash", [(BASH, push, ())], [(EDIT, env_write, ())]),
        ("tool_group:file_write", [(EDIT, env_write, ())], [(EDIT, env_view, ()), (BASH, push, ())]),
        ("rule:write_env_files", [(EDIT, env_write, ("write_env_files",))], [(EDIT, env_write, ("other",))]),
        (
            "bash_pattern:git push origin *",
            [(BASH, push, ())],
            [(BASH, {"command": "Git push origin x"}, ())],
        ),
        (
            "write_path:config/*",
            [(EDIT, env_write, ())],
            [(EDIT, env_view, ()), (EDIT, {**env_write, "path": "src/.env"}, ())],
        ),
    ]
    for scope, allowed, refused in cases:
        allowlist = Allowlist((scope,))
        for tool, inp, rules in allowed:
            assert allowlist.allows(tool, inp, rules), (scope, inp)
        for tool, inp, rules in refused:
            assert not allowlist.allows(tool, inp, rules), (scope, inp)
    assert not Allowlist(("bogus",)).allows(BASH, push)  # an invalid entry allows nothing


def test_approve_time_scopes() -> None:
    assert grant(None, BASH) is None
    assert grant("this_call", BASH) is None
    assert grant("tool_type_session", EDIT) == f"tool_type:{EDIT}"
    assert grant("rule:x_y", BASH) == "rule:x_y"
    assert check_decision_scope("tool_type_session") == "tool_type_session"
    with pytest.raises(InvalidScopeError):
        check_decision_scope("bash_pattern:*")


# --- the fold -------------------------------------------------------------------------------------


def test_submission_seeds_the_allow_list_and_the_timeout() -> None:
    state = state_of(initial_approvals=("tool_type:bash",), approval_timeout_s=120)
    assert state.approved_scopes == ("tool_type:bash",)
    assert state.approval_timeout_s == 120


def test_a_request_waits_and_an_approval_with_a_scope_resumes_and_widens_the_allow_list() -> None:
    waiting = state_of(*running(), requested("q1", 5))
    assert waiting.status is Status.AWAITING_APPROVAL
    assert waiting.pending_approval == "q1"
    assert [a.request_id for a in waiting.open_approvals] == ["q1"]
    assert waiting.approval_gates == 1
    resumed = fold([decided("q1", 9, scope="tool_type_session")], waiting)
    assert resumed is not None
    assert resumed.status is Status.RUNNING
    assert resumed.pending_approval is None
    assert resumed.open_approvals == ()
    assert [(d.request_id, d.decision) for d in resumed.decided_approvals] == [("q1", "approve")]
    assert resumed.approved_scopes == ("tool_type:bash",)


def test_a_second_decision_and_a_late_expiry_change_nothing() -> None:
    once = state_of(*running(), requested("q1", 5), decided("q1", 9, "deny"))
    assert (
        fold(
            [
                decided("q1", 10, "approve", "all_session"),
                ApprovalExpired(**_head(11), actor="runner", attempt=1, request_id="q1"),
            ],
            once,
        )
        is once
    )


def test_a_later_attempt_re_waits_on_the_same_request_without_a_new_gate() -> None:
    crashed = state_of(*running(1, 1), requested("q1", 5), *running(2, 60))
    assert crashed.status is Status.RUNNING  # attempt 2 has its workspace; nothing waits yet
    assert crashed.pending_approval is None
    assert [a.request_id for a in crashed.open_approvals] == ["q1"]
    again = fold([requested("q1", 70, attempt=2)], crashed)
    assert again is not None
    assert again.status is Status.AWAITING_APPROVAL
    assert again.approval_gates == 1


def test_the_recent_decision_cache_holds_denials_and_expiries_for_60_seconds() -> None:
    denied = state_of(*running(), requested("q1", 5, sha="abc"), decided("q1", 9, "deny"))
    assert recent_denial(denied, BASH, "abc", T0 + timedelta(seconds=30)) is not None
    assert recent_denial(denied, BASH, "abc", T0 + timedelta(seconds=70)) is None
    assert recent_denial(denied, BASH, "other", T0 + timedelta(seconds=30)) is None
    approved = state_of(*running(), requested("q1", 5, sha="abc"), decided("q1", 9))
    assert recent_denial(approved, BASH, "abc", T0 + timedelta(seconds=30)) is None
    expired = state_of(
        *running(),
        requested("q1", 5, sha="abc"),
        ApprovalExpired(**_head(9), actor="runner", attempt=1, request_id="q1"),
    )
    assert recent_denial(expired, BASH, "abc", T0 + timedelta(seconds=30)) is not None


# --- decide_approval ------------------------------------------------------------------------------


def _decide(state: TaskState | None, rid: str = "q1", **kw: Any) -> ApprovalDecided:
    args: dict[str, Any] = {"decision": "approve", "scope": None, "reason": None}
    args.update(kw)
    return decide_approval(
        state, task_id=TID, request_id=rid, user_id="alice", now=T0, event_id=str(ULID()), **args
    )


def test_decide_accepts_an_open_request_and_refuses_the_rest_with_their_codes() -> None:
    waiting = state_of(*running(), requested("q1", 5))
    event = _decide(waiting, scope="rule:push_to_protected_branch", reason="  fine  ")
    assert (event.decision, event.scope) == ("approve", "rule:push_to_protected_branch")
    with pytest.raises(RequestNotFoundError):
        _decide(waiting, "nope")
    decided_state = fold([event], waiting)
    with pytest.raises(RequestAlreadyDecidedError):
        _decide(decided_state)
    cancelling = fold([CancelRequested(**_head(6), actor="admission", requested_by="alice")], waiting)
    with pytest.raises(TaskNotAwaitingApprovalError):
        _decide(cancelling)
    done = fold([TaskFailed(**_head(7), actor="runner", attempt=1, code="X", message="x")], waiting)
    with pytest.raises(TaskAlreadyTerminalError):
        _decide(done)
    with pytest.raises(InvalidCommandError, match="decision"):
        _decide(waiting, decision="maybe")
    with pytest.raises(InvalidCommandError, match="scope"):
        _decide(waiting, decision="deny", scope="all_session")
    with pytest.raises(InvalidCommandError, match="scope"):
        _decide(waiting, scope="bash_pattern:*")


def test_a_deny_reason_is_capped_at_2000_characters() -> None:
    waiting = state_of(*running(), requested("q1", 5))
    event = _decide(waiting, decision="deny", reason="x" * 5000)
    assert event.reason is not None
    assert len(event.reason) == 2000


def test_a_decision_for_an_open_request_of_an_earlier_attempt_is_accepted_after_a_crash() -> None:
    crashed = state_of(*running(1, 1), requested("q1", 5), *running(2, 60))
    assert _decide(crashed).request_id == "q1"
