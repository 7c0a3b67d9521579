"""``bgagent policies list|test``: rules, one dry-run call, and the replay of a past task's tool calls."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from typer.testing import CliRunner

from bgagent_cli.commands_policy import input_from_preview, preview_truncated, replay
from bgagent_cli.main import app
from bgagent_contracts.preview import preview
from bgagent_policy import Outcome, PolicyEngine

GATE = """
@rule_id("write_terraform")
@severity("critical")
@approval_timeout_s("120")
@summary("writing Terraform")
forbid (principal, action == Action::"write_file", resource) when { context.file_path like "*.tf" };
"""
TASK = "01JZZZZZZZZZZZZZZZZZZZZZZZ"


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    return result


# --- policies list ---------------------------------------------------------------------------------------


def test_list_shows_the_starter_rules() -> None:
    result = invoke("policies", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["RULE", "TIER", "SEVERITY", "CATEGORY", "TIMEOUT", "SUMMARY"]
    assert len(lines) == 9
    gate = next(line for line in lines if line.startswith("push_to_protected_branch"))
    assert gate.split()[:5] == ["push_to_protected_branch", "hard-gate", "medium", "git", "300s"]


def test_list_json_is_one_rule_per_line_with_repo_rules(tmp_path: Path) -> None:
    rules_dir = tmp_path / ".bgagent" / "policies"
    rules_dir.mkdir(parents=True)
    (rules_dir / "hard_gate.cedar").write_text(GATE)
    result = invoke("policies", "list", "--repo", str(tmp_path), "-o", "json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 9
    assert rows[-1] == {
        "rule_id": "write_terraform",
        "tier": "hard-gate",
        "severity": "critical",
        "category": None,
        "approval_timeout_s": 120,
        "summary": "writing Terraform",
    }
    assert rows[0]["rule_id"] == "rm_slash"


def test_list_of_a_repo_without_rules_is_the_starter_set(tmp_path: Path) -> None:
    result = invoke("policies", "list", "--repo", str(tmp_path), "-o", "json")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 8


def test_list_refuses_a_slug_and_a_broken_rule_file(tmp_path: Path) -> None:
    result = invoke("policies", "list", "--repo", "acme/widgets")
    assert result.exit_code == 2
    assert "local repository path" in result.stderr
    (tmp_path / "hard_gate.cedar").write_text(
        '@rule_id("x")\n@approval_timeout_s("10")\nforbid (principal, action, resource);'
    )
    result = invoke("policies", "list", "--policies", str(tmp_path))
    assert result.exit_code == 2
    assert "the policies do not load" in result.stderr
    assert "@approval_timeout_s(10) is under 30 s" in result.stderr


# --- policies test --input -------------------------------------------------------------------------------


def test_a_plain_bash_command(tmp_path: Path) -> None:
    result = invoke("policies", "test", "--tool", "bash", "--input", "git push origin main")
    assert result.exit_code == 0, result.output
    assert "decision: require_approval" in result.stdout
    assert "rules:    push_to_protected_branch" in result.stdout
    assert "timeout: 300s" in result.stdout


def test_json_input_and_candidate_rules(tmp_path: Path) -> None:
    (tmp_path / "hard_gate.cedar").write_text(GATE)
    edit = json.dumps({"command": "create", "path": "infra/main.tf", "file_text": "x"})
    result = invoke(
        "policies",
        "test",
        "--tool",
        "str_replace_based_edit_tool",
        "--input",
        edit,
        "--policies",
        str(tmp_path),
    )
    assert result.exit_code == 0, result.output
    assert "rules:    write_terraform" in result.stdout
    denied = invoke("policies", "test", "--input", '{"command": "rm -rf /"}', "-o", "json")
    assert denied.exit_code == 0
    assert json.loads(denied.stdout) == {
        "tool_name": "bash",
        "outcome": "deny",
        "rule_ids": ["rm_slash"],
        "reason": "hard-deny: rm_slash (rm -rf of the filesystem root)",
        "severity": "critical",
        "timeout_s": None,
        "category": "destructive",
    }


def test_bad_arguments_are_usage_errors() -> None:
    assert invoke("policies", "test").exit_code == 2
    assert invoke("policies", "test", "--input", "ls", "--replay", TASK).exit_code == 2
    result = invoke("policies", "test", "--tool", "str_replace_based_edit_tool", "--input", "a.env")
    assert result.exit_code == 2
    assert "must be a JSON object" in result.stderr


# --- the replay core --------------------------------------------------------------------------------------


def tool_called(seq: int, tool: str, text: str, turn: int = 1) -> dict[str, Any]:
    event = {"type": "tool_called", "turn": turn, "tool_use_id": f"tu{seq}", "tool_name": tool}
    return {"seq": seq, "task_id": TASK, "type": "tool_called", "event": {**event, "input_preview": text}}


def edit_preview(command: str, path: str, file_text: str = "x") -> str:
    body = {"command": command, "path": path, "file_text": file_text}
    return preview(json.dumps(body, ensure_ascii=False))


def test_preview_truncation_is_recognised() -> None:
    long_command = "echo " + "a" * 300 + " && git push origin main"
    assert preview_truncated(preview(long_command))
    assert not preview_truncated(preview("ls ..."))
    assert not preview_truncated(preview("x" * 200))
    assert preview_truncated(preview("x" * 5000, 4096))


def test_input_from_preview() -> None:
    assert input_from_preview("bash", "git push origin main") == ({"command": "git push origin main"}, False)
    whole = edit_preview("create", ".env")
    assert input_from_preview("str_replace_based_edit_tool", whole) == (
        {"command": "create", "path": ".env", "file_text": "x"},
        False,
    )
    cut = edit_preview("create", "deploy/prod.env", "y" * 500)
    assert input_from_preview("str_replace_based_edit_tool", cut) == (
        {"command": "create", "path": "deploy/prod.env"},
        True,
    )
    assert input_from_preview("web_fetch", preview(json.dumps({"url": "u" * 400}))) == (None, True)


def test_replay_decides_every_tool_call() -> None:
    views = [
        {"seq": 1, "task_id": TASK, "type": "task_started", "event": {}},
        tool_called(2, "bash", "pytest -q"),
        tool_called(3, "bash", "git push origin main", turn=2),
        tool_called(4, "bash", "rm -rf /"),
        tool_called(5, "str_replace_based_edit_tool", edit_preview("create", "a/.env", "z" * 400)),
        tool_called(6, "web_fetch", preview(json.dumps({"url": "u" * 400}))),
        {"seq": 7, "task_id": TASK, "type": "tool_result", "event": {}},
    ]
    calls = replay(PolicyEngine.load(), views)
    assert [c.seq for c in calls] == [2, 3, 4, 5, 6]
    outcomes = [c.decision.outcome if c.decision else None for c in calls]
    assert outcomes == [Outcome.ALLOW, Outcome.REQUIRE_APPROVAL, Outcome.DENY, Outcome.REQUIRE_APPROVAL, None]
    assert [c.truncated for c in calls] == [False, False, False, True, True]
    assert calls[1].turn == 2


# --- policies test --replay through query's events endpoint -----------------------------------------------


class _Query(BaseHTTPRequestHandler):
    views: list[dict[str, Any]] = []
    requests: list[dict[str, list[str]]] = []

    def do_GET(self) -> None:
        url = urlparse(self.path)
        params = parse_qs(url.query)
        type(self).requests.append(params)
        if url.path != f"/v1/tasks/{TASK}/events":
            status, body = 404, {"error": {"code": "TASK_NOT_FOUND", "message": "no", "request_id": "r"}}
        else:
            after = int(params["after"][0])
            rest = [v for v in type(self).views if v["seq"] > after]
            page = rest[:2]  # small pages: the CLI must follow the cursor
            next_after = page[-1]["seq"] if page else None
            status, body = (
                200,
                {"data": page, "pagination": {"next_after": next_after, "has_more": len(rest) > 2}},
            )
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def query(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Query]]:
    handler = type("Handler", (_Query,), {"views": [], "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for name in ("BGAGENT_API_URL", "NATS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BGAGENT_QUERY_URL", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("BGAGENT_TOKEN", "t")
    monkeypatch.setenv("BGAGENT_HOME", str(tmp_path / "home"))
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_replay_reads_every_page_and_reports_each_call(query: type[_Query], tmp_path: Path) -> None:
    long_push = "echo " + "a" * 300 + " && git push origin main"
    query.views = [
        {"seq": 1, "task_id": TASK, "type": "task_started", "event": {}},
        tool_called(2, "bash", "pytest -q"),
        tool_called(3, "bash", "git push origin main"),
        tool_called(4, "bash", "rm -rf /"),
        tool_called(5, "bash", preview(long_push)),
        tool_called(6, "str_replace_based_edit_tool", edit_preview("create", "main.tf")),
    ]
    (tmp_path / "hard_gate.cedar").write_text(GATE)
    result = invoke("policies", "test", "--replay", TASK, "--policies", str(tmp_path))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 6
    assert lines[0].startswith("#2")
    assert " allow " in lines[0]
    assert "require_approval [push_to_protected_branch]" in lines[1]
    assert "deny" in lines[2]
    assert "[rm_slash]" in lines[2]
    assert "(preview truncated: replayed as far as it goes)" in lines[3]
    assert " allow " in lines[3]
    assert "[write_terraform]" in lines[4]
    assert lines[5] == f"task {TASK}: 5 tool call(s): 2 allow, 1 deny, 2 require_approval"
    assert [r["after"] for r in query.requests] == [["0"], ["2"], ["4"]]

    as_json = invoke("policies", "test", "--replay", TASK, "-o", "json")
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["decision"]["outcome"] for r in rows] == ["allow", "require_approval", "deny", "allow", "allow"]
    assert rows[3]["preview_truncated"] is True


def test_replay_of_an_unknown_task_is_an_error(query: type[_Query]) -> None:
    result = invoke("policies", "test", "--replay", "01JYYYYYYYYYYYYYYYYYYYYYYY")
    assert result.exit_code == 2
    assert "TASK_NOT_FOUND" in result.stderr
