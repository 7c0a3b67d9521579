"""Approvals in the CLI: the watch prompt, status, pending, and the approve/deny/submit commands."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from bgagent_cli import main
from bgagent_cli.render import Printer, event_summary, strip_control, time_left
from bgagent_contracts import (
    ApprovalDecided,
    ApprovalExpired,
    ApprovalRequested,
    Event,
    PolicyDenied,
    Recorded,
)
from bgagent_contracts.views import event_view

TASK = "01J00000000000000000000000"
REQ = "01J0000000000000000000000R"
NOW = datetime.now(UTC)
ESCAPES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _view(event: Event, seq: int = 5) -> dict[str, Any]:
    view: dict[str, Any] = json.loads(json.dumps(event_view(Recorded(seq=seq, subject="s", event=event))))
    return view


def _requested(preview: str = "git push origin main", deadline: datetime | None = None) -> ApprovalRequested:
    return ApprovalRequested(
        task_id=TASK,
        event_id="e",
        ts=NOW,
        actor="runner",
        attempt=1,
        request_id=REQ,
        tool_use_id="toolu_1",
        tool_name="bash",
        input_preview=preview,
        rule_id="push_to_protected_branch",
        rule_ids=("push_to_protected_branch",),
        severity="medium",
        timeout_s=300,
        deadline=deadline or NOW + timedelta(seconds=300),
    )


def _printer(json_output: bool = False) -> tuple[Printer, io.StringIO]:
    out = io.StringIO()
    return Printer(json_output=json_output, out=out, err=io.StringIO()), out


def test_watch_renders_a_gate_as_a_prompt_with_the_commands_and_the_deadline() -> None:
    printer, out = _printer()
    printer.event(_view(_requested()))
    lines = out.getvalue().splitlines()
    assert "approval_requested" in lines[0]
    assert "[MEDIUM] bash: git push origin main" in lines[0]
    assert "rule push_to_protected_branch" in lines[0]
    assert lines[1].strip() == f"approve: bgagent approve {TASK} {REQ}"
    assert lines[2].strip() == f"deny:    bgagent deny {TASK} {REQ} --reason '<why>'"
    assert "deadline:" in lines[3]
    assert "left" in lines[3]
    assert (NOW + timedelta(seconds=300)).strftime("%H:%M:%S") in lines[3]


def test_the_preview_loses_ansi_and_control_characters_at_render() -> None:
    hostile = "git push \x1b[2J\x1b]0;pwned\x07origin\x1b[31m main\x00\x9b1m\r\u202eevil"
    printer, out = _printer()
    printer.event(_view(_requested(hostile)))
    text = out.getvalue()
    assert not ESCAPES.search(text.replace("\n", ""))
    assert "pwned" not in text
    assert "\u202e" not in text
    assert "git push origin main" in text
    assert strip_control("a\x1b[1;31mb\x1b[0m\tc\nd") == "ab c d"


def test_decided_expired_and_denied_are_readable_lines() -> None:
    decided = ApprovalDecided(
        task_id=TASK,
        event_id="e",
        ts=NOW,
        actor="admission",
        request_id=REQ,
        decision="approve",
        decided_by="alice",
        scope="tool_type_session",
    )
    assert event_summary(_view(decided)) == f"request {REQ} approved by alice (scope tool_type_session)"
    denied = ApprovalDecided(
        task_id=TASK,
        event_id="e",
        ts=NOW,
        actor="admission",
        request_id=REQ,
        decision="deny",
        decided_by="bob",
        reason="open a PR instead",
    )
    assert event_summary(_view(denied)) == f"request {REQ} denied by bob: open a PR instead"
    expired = ApprovalExpired(task_id=TASK, event_id="e", ts=NOW, actor="runner", attempt=1, request_id=REQ)
    assert "no decision in time" in event_summary(_view(expired))
    blocked = PolicyDenied(
        task_id=TASK,
        event_id="e",
        ts=NOW,
        actor="runner",
        attempt=1,
        tool_use_id="t",
        tool_name="bash",
        rule_id="rm_slash",
        reason="rm -rf of the filesystem root\x1b[0m",
    )
    line = event_summary(_view(blocked))
    assert line == "bash blocked by rule rm_slash: rm -rf of the filesystem root"


def test_json_watch_output_is_the_view_only() -> None:
    printer, out = _printer(json_output=True)
    view = _view(_requested())
    printer.event(view)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [view]


def _task(**extra: Any) -> dict[str, Any]:
    return {
        "task_id": TASK,
        "status": "AWAITING_APPROVAL",
        "repo": "acme/widgets",
        "task_type": "new_task",
        "turn": 3,
        "max_turns": 100,
        "cost_usd": 0.01,
        "pending_approval": REQ,
        **extra,
    }


def _approval(**extra: Any) -> dict[str, Any]:
    return {
        "task_id": TASK,
        "user_id": "alice",
        "repo": "acme/widgets",
        "request_id": REQ,
        "tool_name": "bash",
        "input_preview": "git push origin main\x1b[31m",
        "rule_ids": ["push_to_protected_branch"],
        "severity": "medium",
        "deadline": (NOW + timedelta(seconds=125)).isoformat().replace("+00:00", "Z"),
        "requested_at": NOW.isoformat(),
        "attempt": 1,
        "waiting": True,
        **extra,
    }


def test_status_shows_the_pending_request_and_the_commands() -> None:
    printer, out = _printer()
    printer.task(_task(), _approval())
    text = out.getvalue()
    assert "waiting for your decision" in text
    assert f"Request:      {REQ}".replace("      ", "") in text.replace(" ", "")
    assert "git push origin main" in text
    assert "[MEDIUM] push_to_protected_branch" in text
    assert f"bgagent approve {TASK} {REQ}" in text
    assert f"bgagent deny {TASK} {REQ}" in text
    assert not ESCAPES.search(text.replace("\n", ""))


def test_pending_rows_and_time_left() -> None:
    printer, out = _printer()
    printer.approval_row_header()
    printer.approval_row(_approval())
    header, row = out.getvalue().splitlines()
    assert header.split()[:4] == ["TASK", "ID", "REQUEST", "ID"]
    assert row.split()[:4] == [TASK, REQ, "bash", "medium"]
    assert row.rstrip().endswith("git push origin main")
    assert time_left(None) == "?"
    assert time_left("nonsense") == "?"
    assert time_left((NOW - timedelta(seconds=1)).isoformat()) == "expired"
    assert time_left((NOW + timedelta(seconds=61)).isoformat(), now=NOW) == "1m 01s"
    assert time_left((NOW + timedelta(hours=2)).isoformat(), now=NOW) == "2h 00m"


class FakeApi:
    """Stands in for bgagent_cli.client.Api: records calls, answers from ``replies``."""

    calls: list[tuple[str, str, Any]] = []
    replies: dict[str, Any] = {}

    def __init__(self, config: Any) -> None:
        pass

    def __enter__(self) -> FakeApi:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def write(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        FakeApi.calls.append(("POST", path, body))
        return FakeApi.replies[path]

    def read(self, path: str, params: dict[str, Any] | None = None) -> Any:
        FakeApi.calls.append(("GET", path, params))
        return FakeApi.replies[path]


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> type[FakeApi]:
    FakeApi.calls = []
    FakeApi.replies = {}
    monkeypatch.setattr(main, "Api", FakeApi)
    monkeypatch.setenv("NO_COLOR", "1")
    return FakeApi


def _decided(decision: str, scope: str | None = None) -> dict[str, Any]:
    return {
        "data": {
            "task_id": TASK,
            "request_id": REQ,
            "decision": decision,
            "scope": scope,
            "reason": None,
            "decided_by": "alice",
            "decided_at": NOW.isoformat(),
            "task": _task(pending_approval=None, status="RUNNING"),
        },
        "meta": {"seq": 9},
    }


def test_approve_and_deny_post_the_decision(fake_api: type[FakeApi]) -> None:
    path = f"/v1/tasks/{TASK}/approvals/{REQ}"
    fake_api.replies[path] = _decided("approve", "tool_type_session")
    done = CliRunner().invoke(main.app, ["approve", TASK, REQ, "--scope", "tool_type_session"])
    assert done.exit_code == 0, done.output
    assert "Approved request" in done.output
    assert fake_api.calls[-1] == ("POST", path, {"decision": "approve", "scope": "tool_type_session"})

    fake_api.replies[path] = _decided("deny")
    done = CliRunner().invoke(main.app, ["deny", TASK, REQ, "--reason", "use a PR", "-o", "json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["decision"] == "deny"
    assert fake_api.calls[-1] == ("POST", path, {"decision": "deny", "reason": "use a PR"})


def test_all_session_needs_yes(fake_api: type[FakeApi]) -> None:
    path = f"/v1/tasks/{TASK}/approvals/{REQ}"
    fake_api.replies[path] = _decided("approve", "all_session")
    refused = CliRunner().invoke(main.app, ["approve", TASK, REQ, "--scope", "all_session"])
    assert refused.exit_code != 0
    assert "hard-deny rules still apply" in refused.output
    assert fake_api.calls == []
    ok = CliRunner().invoke(main.app, ["approve", TASK, REQ, "--scope", "all_session", "--yes"])
    assert ok.exit_code == 0, ok.output

    submit = ["submit", "--repo", "acme/widgets", "--task", "x", "--pre-approve", "all_session"]
    refused = CliRunner().invoke(main.app, submit)
    assert refused.exit_code != 0
    assert "--yes" in refused.output


def test_submit_sends_pre_approvals_and_the_approval_timeout(fake_api: type[FakeApi]) -> None:
    fake_api.replies["/v1/tasks"] = {
        "data": _task(status="SUBMITTED", pending_approval=None),
        "meta": {"seq": 1},
    }
    args = [
        "submit",
        "--repo",
        "acme/widgets",
        "--task",
        "x",
        "--pre-approve",
        "tool_type:bash",
        "--pre-approve",
        "all_session",
        "--yes",
        "--approval-timeout",
        "60",
        "-o",
        "json",
    ]
    done = CliRunner().invoke(main.app, args)
    assert done.exit_code == 0, done.output
    _, path, body = fake_api.calls[-1]
    assert path == "/v1/tasks"
    assert body["initial_approvals"] == ["tool_type:bash", "all_session"]
    assert body["approval_timeout_s"] == 60
    too_short = CliRunner().invoke(main.app, [*args[:5], "--approval-timeout", "10"])
    assert too_short.exit_code == 2


def test_pending_prints_a_table_or_ndjson(fake_api: type[FakeApi]) -> None:
    fake_api.replies["/v1/approvals"] = {
        "data": [_approval(), _approval(request_id="R2")],
        "pagination": {"has_more": False},
    }
    done = CliRunner().invoke(main.app, ["pending", "-o", "json"])
    assert done.exit_code == 0, done.output
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["request_id"] for r in rows] == [REQ, "R2"]
    assert fake_api.calls[-1] == ("GET", "/v1/approvals", {"status": "pending", "limit": 100})
    text = CliRunner().invoke(main.app, ["pending"])
    assert text.exit_code == 0
    assert "TASK ID" in text.stdout
    assert REQ in text.stdout
    fake_api.replies["/v1/approvals"] = {"data": [], "pagination": {"has_more": False}}
    empty = CliRunner().invoke(main.app, ["pending"])
    assert empty.exit_code == 0
    assert "no approval requests are waiting" in empty.output


def test_status_fetches_the_pending_request(fake_api: type[FakeApi]) -> None:
    fake_api.replies[f"/v1/tasks/{TASK}"] = {"data": _task()}
    fake_api.replies["/v1/approvals"] = {"data": [_approval()], "pagination": {"has_more": False}}
    done = CliRunner().invoke(main.app, ["status", TASK])
    assert done.exit_code == 0, done.output
    assert "git push origin main" in done.stdout
    assert f"bgagent approve {TASK} {REQ}" in done.stdout
