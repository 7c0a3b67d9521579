"""The policy gate in the runner, against real NATS JetStream, the scripted model and a local origin.

Admission's side of a decision is played here the way admission does it: read the log, fold,
``decide_approval``, append with the read sequence as the expected one, retry on a conflict.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from ulid import ULID

from bgagent_contracts import (
    ApprovalDecided,
    ApprovalExpired,
    ApprovalRequested,
    CancelRequested,
    DecisionError,
    Event,
    PolicyDenied,
    RequestAlreadyDecidedError,
    Status,
    TaskAlreadyTerminalError,
    TaskCancelled,
    TaskStarted,
    ToolCalled,
    ToolResult,
    decide_approval,
)
from bgagent_contracts.subjects import runner_consumer
from bgagent_eventstore import ConcurrencyError
from bgagent_eventstore.provision import runner_consumer_config
from bgagent_policy import input_sha256
from bgagent_runner.sandbox import SandboxSettings
from bgagent_testing.model_server import ModelServer

pytestmark = pytest.mark.integration

GATE_RULES = """
@rule_id("gated_marker")
@tier("hard-gate")
@severity("low")
@category("test")
@approval_timeout_s("45")
forbid (principal, action == Action::"bash", resource)
when { context.command like "*GATED*" };
"""


def bash(command: str) -> dict[str, Any]:
    return {"name": "bash", "input": {"command": command}}


def create(path: str, text: str) -> dict[str, Any]:
    return {
        "name": "str_replace_based_edit_tool",
        "input": {"command": "create", "path": path, "file_text": text},
    }


async def decide(
    kit: Any,
    task_id: str,
    request_id: str,
    decision: str,
    *,
    scope: str | None = None,
    reason: str | None = None,
) -> ApprovalDecided | DecisionError:
    """What admission's POST …/approvals/{request_id} does: the decided event, or why it was refused."""
    while True:
        log = await kit.store.read(task_id)
        try:
            event = decide_approval(
                log.state(),
                task_id=task_id,
                request_id=request_id,
                user_id="alice",
                decision=decision,
                scope=scope,
                reason=reason,
                now=datetime.now(UTC),
                event_id=str(ULID()),
            )
        except DecisionError as exc:
            return exc
        try:
            await kit.store.append(task_id, [event], expected_seq=log.last_seq)
        except ConcurrencyError:
            continue
        return event


async def cancel(kit: Any, task_id: str) -> None:
    while True:
        state = await kit.state(task_id)
        event = CancelRequested(
            task_id=task_id,
            event_id=str(ULID()),
            ts=datetime.now(UTC),
            actor="admission",
            requested_by="alice",
            reason="not today",
        )
        try:
            await kit.store.append(task_id, [event], expected_seq=state.last_seq)
            return
        except ConcurrencyError:
            continue


async def wait_event(
    kit: Any, task_id: str, kind: type[Any], pred: Callable[[Any], bool] = lambda e: True, timeout: float = 10
) -> Any:
    found: list[Event] = []

    async def seen() -> bool:
        found[:] = [e for e in await kit.events(task_id) if isinstance(e, kind) and pred(e)]
        return bool(found)

    await kit.wait_until(seen, timeout)
    return found[0]


def of(events: list[Event], kind: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def last_user(model_server: ModelServer, tag: str, index: int) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = model_server.requests(tag)[index]["body"]["messages"][-1]["content"]
    return content


async def test_an_ordinary_call_runs_with_no_policy_event(
    kit: Any, model_server: ModelServer, origin: Path
) -> None:
    tag = f"allow-{ULID()}"
    model_server.add_script(tag, [{"tool_uses": [bash("echo ok > ok.txt")]}, {"text": "Done."}])
    await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(origin), f"{tag} allow")

    state = await kit.wait_terminal(task_id)

    assert state.status is Status.COMPLETED, state.error_message
    assert kit.git(origin, "show", f"bgagent/{task_id}:ok.txt") == "ok"
    events = await kit.events(task_id)
    assert not of(events, PolicyDenied)
    assert not of(events, ApprovalRequested)
    assert state.approval_gates == 0


async def test_a_hard_deny_rule_records_policy_denied_and_the_model_learns_why(
    kit: Any, model_server: ModelServer, origin: Path
) -> None:
    tag = f"hard-deny-{ULID()}"
    model_server.add_script(
        tag, [{"tool_uses": [bash("echo 'DROP TABLE users;' > drop.sql")]}, {"text": "I will not drop it."}]
    )
    await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(origin), f"{tag} drop", initial_approvals=("all_session",))

    state = await kit.wait_terminal(task_id)

    assert state.status is Status.COMPLETED
    assert state.result == "no_changes", "the command never ran: nothing to commit"
    events = await kit.events(task_id)
    (denied,) = of(events, PolicyDenied)
    assert (denied.rule_id, denied.tool_name) == ("drop_table", "bash")
    assert "hard-deny" in denied.reason
    assert not of(events, ApprovalRequested), "all_session never overrides a hard-deny rule"
    (result,) = of(events, ToolResult)
    assert result.is_error
    tool_result = last_user(model_server, tag, 1)[0]
    assert tool_result["type"] == "tool_result"
    assert tool_result["is_error"] is True
    assert "Denied by policy (drop_table)" in tool_result["content"]


async def test_an_approved_gate_runs_the_tool_and_a_granted_scope_allows_the_next_call(
    kit: Any, model_server: ModelServer, origin: Path
) -> None:
    tag = f"approve-{ULID()}"
    model_server.add_script(
        tag,
        [
            {"tool_uses": [create("prod.env", "\x1b]0;pwned\x07MODE=\x1b[31mprod\x1b[0m\n")]},
            {"tool_uses": [create("stage.env", "MODE=stage\n")]},
            {"text": "Wrote both env files."},
        ],
    )
    await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(origin), f"{tag} env files")

    request = await wait_event(kit, task_id, ApprovalRequested)
    waiting = await kit.state(task_id)
    assert waiting.status is Status.AWAITING_APPROVAL
    assert waiting.pending_approval == request.request_id
    assert (request.rule_id, request.rule_ids, request.severity) == (
        "write_env_files",
        ("write_env_files",),
        "high",
    )
    assert request.category == "secrets"
    assert request.timeout_s == 300, "min(rule 600 s, task 300 s)"
    assert request.deadline is not None
    assert abs((request.deadline - request.ts).total_seconds() - 300) < 1
    assert len(request.request_id) == 26
    assert request.tool_name == "str_replace_based_edit_tool"
    assert "\x1b" not in request.input_preview
    assert "\x07" not in request.input_preview
    assert "pwned" not in request.input_preview, "an OSC sequence goes whole"
    assert "MODE=prod" in request.input_preview
    tool_input = create("prod.env", "\x1b]0;pwned\x07MODE=\x1b[31mprod\x1b[0m\n")["input"]
    assert request.input_sha256 == input_sha256("str_replace_based_edit_tool", tool_input)
    assert request.input_preview.startswith("create prod.env\nfile_text: MODE=prod")

    decided = await decide(kit, task_id, request.request_id, "approve", scope="write_path:*.env")
    assert isinstance(decided, ApprovalDecided)
    state = await kit.wait_terminal(task_id)

    assert state.status is Status.COMPLETED, state.error_message
    assert kit.git(origin, "show", f"bgagent/{task_id}:stage.env") == "MODE=stage"
    assert "prod" in kit.git(origin, "show", f"bgagent/{task_id}:prod.env")
    events = await kit.events(task_id)
    assert len(of(events, ApprovalRequested)) == 1, "the granted scope let the second write through"
    assert state.approval_gates == 1
    assert "write_path:*.env" in state.approved_scopes
    assert [r.is_error for r in of(events, ToolResult)] == [False, False]
    again = await decide(kit, task_id, request.request_id, "deny")
    assert isinstance(again, DecisionError)


async def test_a_denied_gate_never_runs_the_tool_and_the_next_request_holds_the_denial(
    kit: Any, model_server: ModelServer, origin: Path
) -> None:
    tag = f"deny-{ULID()}"
    model_server.add_script(
        tag, [{"tool_uses": [create("prod.env", "MODE=prod\n")]}, {"text": "Understood."}]
    )
    await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(origin), f"{tag} env file")

    request = await wait_event(kit, task_id, ApprovalRequested)
    decided = await decide(kit, task_id, request.request_id, "deny", reason="use <config.yaml> & ask first")
    assert isinstance(decided, ApprovalDecided)
    state = await kit.wait_terminal(task_id)

    assert state.status is Status.COMPLETED
    assert state.result == "no_changes"
    events = await kit.events(task_id)
    (result,) = of(events, ToolResult)
    assert result.is_error
    assert not of(events, ApprovalExpired)
    content = last_user(model_server, tag, 1)
    assert [b["type"] for b in content] == ["tool_result", "text"]
    assert content[0]["is_error"] is True
    assert "denied" in content[0]["content"]
    assert content[1]["text"] == (
        f'<user_denial request_id="{request.request_id}" tool="str_replace_based_edit_tool" outcome="denied">'
        "alice denied this str_replace_based_edit_tool call: "
        "use &lt;config.yaml&gt; &amp; ask first</user_denial>"
    )
    assert "<user_denial>" in model_server.requests(tag)[0]["body"]["system"][0]["text"]


async def test_a_timeout_appends_approval_expired_and_denies(
    kit: Any, model_server: ModelServer, origin: Path
) -> None:
    tag = f"timeout-{ULID()}"
    model_server.add_script(tag, [{"tool_uses": [create("prod.env", "MODE=prod\n")]}, {"text": "Gave up."}])
    settings = msgspec.structs.replace(
        kit.settings, approval_timeout_floor_s=0.0, approval_timeout_ceiling_s=1.0
    )
    await kit.start_runner(settings)
    task_id = await kit.submit(str(origin), f"{tag} env file")

    request = await wait_event(kit, task_id, ApprovalRequested)
    assert request.timeout_s == 1
    state = await kit.wait_terminal(task_id)

    assert state.status is Status.COMPLETED
    assert state.result == "no_changes"
    events = await kit.events(task_id)
    (expired,) = of(events, ApprovalExpired)
    assert expired.request_id == request.request_id
    assert expired.ts >= request.deadline
    assert not of(events, ApprovalDecided)
    assert [d.decision for d in state.decided_approvals] == ["expired"]
    content = last_user(model_server, tag, 1)
    assert content[0]["is_error"] is True
    assert 'outcome="timed_out"' in content[1]["text"]
    late = await decide(kit, task_id, request.request_id, "approve")
    assert isinstance(late, DecisionError), "an expired request cannot be approved any more"


async def test_the_same_call_denied_within_60_s_is_denied_again_without_a_new_request(
    kit: Any, model_server: ModelServer, origin: Path
) -> None:
    tag = f"recent-{ULID()}"
    model_server.add_script(
        tag,
        [
            {"tool_uses": [create("prod.env", "MODE=prod\n")]},
            {"tool_uses": [create("prod.env", "MODE=prod\n")]},
            {"text": "Stopped trying."},
        ],
    )
    await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(origin), f"{tag} env file twice")

    request = await wait_event(kit, task_id, ApprovalRequested)
    await decide(kit, task_id, request.request_id, "deny", reason="not in prod")
    state = await kit.wait_terminal(task_id)

    assert state.status is Status.COMPLETED
    events = await kit.events(task_id)
    assert len(of(events, ApprovalRequested)) == 1
    (denied,) = of(events, PolicyDenied)
    assert denied.rule_id == "recent_decision"
    assert "denied" in denied.reason
    assert "not in prod" in denied.reason
    assert state.approval_gates == 1
    content = last_user(model_server, tag, 2)
    assert "Denied by policy (recent_decision)" in content[0]["content"]


async def test_one_gate_more_than_the_cap_fails_the_task(
    kit: Any, model_server: ModelServer, origin: Path
) -> None:
    tag = f"cap-{ULID()}"
    model_server.add_script(
        tag,
        [
            {"tool_uses": [create("a.env", "A=1\n")]},
            {"tool_uses": [create("b.env", "B=1\n")]},
            {"text": "unreachable"},
        ],
    )
    await kit.start_runner(msgspec.structs.replace(kit.settings, approval_max_gates=1))
    task_id = await kit.submit(str(origin), f"{tag} two gates")

    request = await wait_event(kit, task_id, ApprovalRequested)
    await decide(kit, task_id, request.request_id, "approve")
    state = await kit.wait_terminal(task_id)

    assert state.status is Status.FAILED
    assert state.error_code == "APPROVAL_CAP"
    assert state.error_message is not None
    assert "1" in state.error_message
    assert len(of(await kit.events(task_id), ApprovalRequested)) == 1


async def test_requests_beyond_the_rate_limit_are_denied(
    kit: Any, model_server: ModelServer, origin: Path
) -> None:
    tag = f"rate-{ULID()}"
    model_server.add_script(
        tag,
        [
            {"tool_uses": [create("a.env", "A=1\n")]},
            {"tool_uses": [create("b.env", "B=1\n")]},
            {"text": "ok"},
        ],
    )
    await kit.start_runner(msgspec.structs.replace(kit.settings, approval_requests_per_minute=1))
    task_id = await kit.submit(str(origin), f"{tag} two gates")

    request = await wait_event(kit, task_id, ApprovalRequested)
    await decide(kit, task_id, request.request_id, "approve")
    state = await kit.wait_terminal(task_id)

    assert state.status is Status.COMPLETED
    events = await kit.events(task_id)
    assert len(of(events, ApprovalRequested)) == 1
    (denied,) = of(events, PolicyDenied)
    assert denied.rule_id == "approval_rate_limit"
    assert kit.git(origin, "show", f"bgagent/{task_id}:a.env") == "A=1"
    assert not kit.git_ok(origin, "cat-file", "-e", f"bgagent/{task_id}:b.env")


async def test_cancel_during_the_wait_wins_at_once_and_a_later_decision_is_refused(
    kit: Any, model_server: ModelServer, origin: Path
) -> None:
    tag = f"cancel-{ULID()}"
    model_server.add_script(
        tag, [{"tool_uses": [create("prod.env", "MODE=prod\n")]}, {"text": "unreachable"}]
    )
    await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(origin), f"{tag} env file")

    request = await wait_event(kit, task_id, ApprovalRequested)
    await cancel(kit, task_id)
    # the approval would wait 300 s; wait_terminal's 8 s deadline fails the test unless the cancel
    # interrupted it (bench/cancel_latency.py measures how fast a cancel lands)
    state = await kit.wait_terminal(task_id)

    assert state.status is Status.CANCELLED
    events = await kit.events(task_id)
    after = events[[type(e) for e in events].index(CancelRequested) + 1 :]
    assert [type(e) for e in after] == [TaskCancelled]
    assert not of(events, ToolResult)
    late = await decide(kit, task_id, request.request_id, "approve")
    assert isinstance(late, TaskAlreadyTerminalError)
    forced = ApprovalDecided(
        task_id=task_id,
        event_id=str(ULID()),
        ts=datetime.now(UTC),
        actor="admission",
        request_id=request.request_id,
        decision="approve",
        decided_by="mallory",
    )
    await kit.store.append(task_id, [forced], expected_seq=state.last_seq)
    assert (await kit.state(task_id)).status is Status.CANCELLED, "the fold ignores it too"
    assert not kit.git_ok(origin, "rev-parse", "--verify", f"refs/heads/bgagent/{task_id}")


@pytest.mark.parametrize("offset_s", [-0.05, 0.0, 0.05])
async def test_a_decision_racing_the_deadline_exactly_one_takes_effect(
    kit: Any, model_server: ModelServer, origin: Path, tmp_path: Path, offset_s: float
) -> None:
    tag = f"race-{ULID()}"
    model_server.add_script(
        tag,
        [
            {"tool_uses": [create("prod.env", "MODE=prod\n")]},
            {"tool_uses": [bash("sleep 1")]},  # the task is still live when a late decision is tried
            {"text": "Done."},
        ],
    )
    settings = msgspec.structs.replace(
        kit.settings, approval_timeout_floor_s=0.0, approval_timeout_ceiling_s=1.0
    )
    await kit.start_runner(settings)
    task_id = await kit.submit(str(origin), f"{tag} env file")

    request = await wait_event(kit, task_id, ApprovalRequested)
    assert request.deadline is not None
    await asyncio.sleep(max(0.0, (request.deadline - datetime.now(UTC)).total_seconds() + offset_s))
    outcome = await decide(kit, task_id, request.request_id, "approve")
    state = await kit.wait_terminal(task_id)

    assert state.status is Status.COMPLETED
    events = await kit.events(task_id)
    closing = [
        e
        for e in events
        if isinstance(e, ApprovalDecided | ApprovalExpired) and e.request_id == request.request_id
    ]
    assert len(closing) == 1, f"both landed: {closing}"
    assert len(state.decided_approvals) == 1
    ran = kit.git_ok(origin, "cat-file", "-e", f"bgagent/{task_id}:prod.env")
    if isinstance(closing[0], ApprovalDecided):
        assert isinstance(outcome, ApprovalDecided)
        assert ran
        assert state.decided_approvals[0].decision == "approve"
    else:
        assert isinstance(outcome, RequestAlreadyDecidedError), outcome
        assert not ran
        assert state.decided_approvals[0].decision == "expired"


async def _crash_while_waiting(
    kit: Any, model_server: ModelServer, origin: Path, tmp_path: Path, tag: str
) -> tuple[str, ApprovalRequested, Any]:
    """Runner A claims the task and waits on a gate, then stops abruptly (grace 0: the job is cancelled
    mid-wait and its message nak'ed, as when the process dies). Returns the task and the request."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "hard_gate.cedar").write_text(GATE_RULES)
    marker = tmp_path / "ran"
    model_server.add_script(tag, [{"tool_uses": [bash(f"echo GATED >> {marker}")]}, {"text": "Done."}])

    def settings(name: str) -> Any:
        return kit.make_settings(
            kit.settings.nats,
            model_server.url,
            tmp_path / f"w{name}",
            runner_id=f"runner-{name}",
            slots=1,
            sandbox=SandboxSettings(mode="off"),  # the marker is a host file, which the sandbox would hide
            policy_dir=str(policies),
        )

    a = await kit.start_runner(settings("a"))
    task_id = await kit.submit(str(origin), f"{tag} gated command")
    request = await wait_event(kit, task_id, ApprovalRequested)
    assert request.rule_ids == ("gated_marker",)
    assert request.timeout_s == 45, "min(rule 45 s, task 300 s)"
    await a.stop()
    assert (await kit.state(task_id)).status is Status.AWAITING_APPROVAL
    assert not marker.exists()
    return task_id, request, settings


async def test_a_runner_crash_during_the_wait_the_next_attempt_waits_on_the_same_request(
    kit: Any, model_server: ModelServer, origin: Path, tmp_path: Path
) -> None:
    tag = f"crash-rewait-{ULID()}"
    task_id, request, settings = await _crash_while_waiting(kit, model_server, origin, tmp_path, tag)

    await kit.start_runner(settings("b"))
    again = await wait_event(kit, task_id, ApprovalRequested, lambda e: e.attempt == 2)
    assert again.request_id == request.request_id, "never two live requests for one call"
    assert again.deadline == request.deadline
    waiting = await kit.state(task_id)
    assert waiting.status is Status.AWAITING_APPROVAL
    assert (waiting.approval_gates, len(waiting.open_approvals)) == (1, 1)
    await decide(kit, task_id, request.request_id, "approve")
    state = await kit.wait_terminal(task_id)

    assert state.status is Status.COMPLETED, state.error_message
    assert (state.attempt, state.runner_id) == (2, "runner-b")
    assert (tmp_path / "ran").read_text() == "GATED\n", "the tool ran once, after the approval"
    events = await kit.events(task_id)
    assert [e.attempt for e in of(events, ApprovalRequested)] == [1, 2]
    assert {e.request_id for e in of(events, ApprovalRequested)} == {request.request_id}
    assert [(e.attempt, e.tool_name) for e in of(events, ToolResult)] == [(2, "bash")]


async def test_a_runner_crash_during_the_wait_a_decision_made_meanwhile_is_honoured(
    kit: Any, model_server: ModelServer, origin: Path, tmp_path: Path
) -> None:
    tag = f"crash-decided-{ULID()}"
    task_id, request, settings = await _crash_while_waiting(kit, model_server, origin, tmp_path, tag)

    decided = await decide(kit, task_id, request.request_id, "approve")  # no runner holds the task
    assert isinstance(decided, ApprovalDecided)
    await kit.start_runner(settings("b"))
    state = await kit.wait_terminal(task_id)

    assert state.status is Status.COMPLETED, state.error_message
    assert state.attempt == 2
    assert (tmp_path / "ran").read_text() == "GATED\n"
    events = await kit.events(task_id)
    assert len(of(events, ApprovalRequested)) == 1, "the decided request is honoured, not asked again"
    assert [s.attempt for s in of(events, TaskStarted)] == [1, 2]
    calls = of(events, ToolCalled)
    assert [c.attempt for c in calls] == [1, 2]


async def test_a_long_wait_keeps_the_slot_and_the_message_without_a_redelivery(
    kit: Any, model_server: ModelServer, origin: Path, nc: Any, tmp_path: Path
) -> None:
    s = kit.settings.nats
    js = nc.jetstream()
    config = runner_consumer_config(s)
    config.ack_wait = 1.0
    await js.add_consumer(s.stream, config)
    tag = f"long-wait-{ULID()}"
    model_server.add_script(tag, [{"tool_uses": [create("prod.env", "MODE=prod\n")]}, {"text": "Done."}])
    for name in ("runner-a", "runner-b"):  # b is idle: a redelivered message would start attempt 2
        settings = kit.make_settings(
            s, model_server.url, tmp_path / name, runner_id=name, slots=1, in_progress_interval_s=0.3
        )
        await kit.start_runner(settings)
    task_id = await kit.submit(str(origin), f"{tag} wait longer than ack_wait")

    request = await wait_event(kit, task_id, ApprovalRequested)
    await asyncio.sleep(2.5)  # 2.5 ack waits
    assert (await kit.state(task_id)).status is Status.AWAITING_APPROVAL
    await decide(kit, task_id, request.request_id, "approve")
    state = await kit.wait_terminal(task_id)

    assert state.status is Status.COMPLETED
    assert len(of(await kit.events(task_id), TaskStarted)) == 1
    assert (await js.consumer_info(s.stream, runner_consumer(s.prefix))).num_redelivered == 0


async def test_a_request_the_next_attempt_never_reaches_again_is_expired_when_the_agent_finishes(
    kit: Any, model_server: ModelServer, origin: Path, tmp_path: Path
) -> None:
    tag = f"crash-leftover-{ULID()}"
    task_id, request, settings = await _crash_while_waiting(kit, model_server, origin, tmp_path, tag)

    # runner b loads no extra rules (an operator dropped the rule): the same call is allowed now
    await kit.start_runner(msgspec.structs.replace(settings("b"), policy_dir=None))
    state = await kit.wait_terminal(task_id)

    assert state.status is Status.COMPLETED, state.error_message
    assert (tmp_path / "ran").read_text() == "GATED\n"
    events = await kit.events(task_id)
    (expired,) = of(events, ApprovalExpired)
    assert (expired.request_id, expired.attempt) == (request.request_id, 2)
    assert len(of(events, ApprovalRequested)) == 1
    assert state.open_approvals == ()
    assert [d.decision for d in state.decided_approvals] == ["expired"]
