"""The scripted model server: strict request validation, scripts, admin endpoints, process mode."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from ulid import ULID

from bgagent_testing.model_server import ModelServer
from bgagent_testing.servers import free_port, wait_for_port

HEADERS = {"x-api-key": "test", "anthropic-version": "2023-06-01"}
USER = {"role": "user", "content": "hello"}
TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"command": "ls"}}
TOOL_RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.py"}


def body(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"model": "claude-sonnet-4-6", "max_tokens": 100, "messages": [USER]}
    base.update(overrides)
    return base


async def test_real_sdk_gets_a_scripted_message(model_server: ModelServer) -> None:
    tag = f"sdk-{ULID()}"
    model_server.add_script(
        tag, [{"text": "Let me look.", "tool_uses": [{"name": "bash", "input": {"command": "ls"}}]}]
    )
    async with anthropic.AsyncAnthropic(base_url=model_server.url, api_key="test") as client:
        first = await client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=1024,
            system=[{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
            tools=[
                {"type": "bash_20250124", "name": "bash"},
                {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
                {
                    "name": "lookup",
                    "description": "custom tool",
                    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
                    "cache_control": {"type": "ephemeral"},
                },
            ],
            messages=[{"role": "user", "content": f"{tag} please"}],
        )
        assert first.type == "message"
        assert first.stop_reason == "tool_use"
        text, use = first.content
        assert text.type == "text"
        assert text.text == "Let me look."
        assert use.type == "tool_use"
        assert use.id.startswith("toolu_")
        assert use.input == {"command": "ls"}
        assert first.usage.input_tokens > 0
        assert first.usage.output_tokens > 0
        assert (first.usage.cache_creation_input_tokens or 0) > 0

        second = await client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=1024,
            messages=[
                {"role": "user", "content": f"{tag} please"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": use.id, "name": "bash", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "ok"}],
                },
            ],
        )
        assert second.stop_reason == "end_turn"
        assert [b.type for b in second.content] == ["text"]
        assert second.content[0].type == "text"
        assert second.content[0].text == "Done."
    recorded = model_server.requests(tag)
    assert [r["turn"] for r in recorded] == [0, 1]


async def test_missing_credentials_are_401(model_server: ModelServer) -> None:
    async with httpx.AsyncClient(base_url=model_server.url) as http:
        no_key = await http.post("/v1/messages", json=body(), headers={"anthropic-version": "2023-06-01"})
        no_version = await http.post("/v1/messages", json=body(), headers={"x-api-key": "k"})
    for response in (no_key, no_version):
        assert response.status_code == 401
        assert response.json()["type"] == "error"
        assert response.json()["error"]["type"] == "authentication_error"


BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("no model", {"model": None}, "model"),
    ("max_tokens zero", {"max_tokens": 0}, "max_tokens"),
    ("max_tokens string", {"max_tokens": "5"}, "max_tokens"),
    ("empty messages", {"messages": []}, "messages"),
    ("first is assistant", {"messages": [{"role": "assistant", "content": "hi"}]}, "messages.0"),
    ("roles repeat", {"messages": [USER, USER]}, "messages.1"),
    ("bad role", {"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ("content not str or list", {"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    (
        "unknown block",
        {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
        "messages.0.content.0.type",
    ),
    (
        "empty text block",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
        "messages.0.content.0.text",
    ),
    (
        "tool_use unanswered",
        {
            "messages": [
                USER,
                {"role": "assistant", "content": [TOOL_USE]},
                {"role": "user", "content": "next"},
            ]
        },
        "messages.2",
    ),
    (
        "tool_result not first",
        {
            "messages": [
                USER,
                {"role": "assistant", "content": [TOOL_USE]},
                {"role": "user", "content": [{"type": "text", "text": "note"}, TOOL_RESULT]},
            ]
        },
        "messages.2.content",
    ),
    (
        "tool_result without tool_use",
        {"messages": [{"role": "user", "content": [TOOL_RESULT]}]},
        "messages.0.content.0",
    ),
    (
        "tool_use in user message",
        {"messages": [{"role": "user", "content": [TOOL_USE]}]},
        "messages.0.content.0",
    ),
    ("unknown tool type", {"tools": [{"type": "computer_99", "name": "x"}]}, "tools.0.type"),
    ("bash tool misnamed", {"tools": [{"type": "bash_20250124", "name": "shell"}]}, "tools.0.name"),
    ("custom tool without schema", {"tools": [{"name": "lookup"}]}, "tools.0.input_schema"),
    ("duplicate tool names", {"tools": [{"type": "bash_20250124", "name": "bash"}] * 2}, "tools"),
    (
        "bad cache_control",
        {"system": [{"type": "text", "text": "s", "cache_control": {"type": "forever"}}]},
        "system.0.cache_control",
    ),
    ("extra top-level field", {"temperature_x": 1}, "temperature_x"),
    (
        "extra block field",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "a", "x": 1}]}]},
        "messages.0.content.0.x",
    ),
    ("streaming", {"stream": True}, "stream"),
]


@pytest.mark.parametrize(("case", "change", "path"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
async def test_invalid_requests_get_400_naming_the_path(
    model_server: ModelServer, case: str, change: dict[str, Any], path: str
) -> None:
    request = body(**change)
    if request.get("model") is None:
        del request["model"]
    async with httpx.AsyncClient(base_url=model_server.url) as http:
        response = await http.post("/v1/messages", json=request, headers=HEADERS)
    assert response.status_code == 400, case
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"].startswith(f"{path}:"), error["error"]["message"]


async def test_valid_tool_exchange_with_cache_control_is_accepted(model_server: ModelServer) -> None:
    request = body(
        messages=[
            USER,
            {"role": "assistant", "content": [{"type": "text", "text": "running"}, TOOL_USE]},
            {
                "role": "user",
                "content": [
                    {**TOOL_RESULT, "is_error": True, "cache_control": {"type": "ephemeral"}},
                    {"type": "text", "text": '<user_nudge nudge_id="n">hi</user_nudge>'},
                ],
            },
        ],
        tools=[
            {"type": "bash_20250124", "name": "bash", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
        ],
    )
    async with httpx.AsyncClient(base_url=model_server.url) as http:
        response = await http.post("/v1/messages", json=request, headers=HEADERS)
    assert response.status_code == 200, response.text


async def test_script_selection_turns_and_admin_endpoints(model_server: ModelServer) -> None:
    tag = f"admin-{ULID()}"
    async with httpx.AsyncClient(base_url=model_server.url) as http:
        registered = await http.post(
            "/_scripts", json=[{"match": tag, "turns": [{"text": "first"}, {"text": "second"}]}]
        )
        assert registered.status_code == 201

        def convo(n: int) -> list[dict[str, Any]]:
            messages: list[dict[str, Any]] = [{"role": "user", "content": f"do {tag}"}]
            for i in range(n):
                messages += [{"role": "assistant", "content": f"a{i}"}, {"role": "user", "content": f"u{i}"}]
            return messages

        texts = []
        for n in range(3):
            response = await http.post("/v1/messages", json=body(messages=convo(n)), headers=HEADERS)
            texts.append(response.json()["content"][0]["text"])
        assert texts == ["first", "second", "Done."]
        retry = await http.post("/v1/messages", json=body(messages=convo(1)), headers=HEADERS)
        assert retry.json()["content"][0]["text"] == "second"

        system_match = await http.post(
            "/v1/messages", json=body(system=f"context {tag}", messages=[USER]), headers=HEADERS
        )
        assert system_match.json()["content"][0]["text"] == "first"

        recorded = (await http.get("/_requests", params={"match": tag})).json()
        assert [r["turn"] for r in recorded] == [0, 1, 2, 1, 0]
        assert all(r["script"] == tag for r in recorded)
        assert recorded[0]["body"]["messages"][0]["content"] == f"do {tag}"
        assert (await http.delete("/_requests")).status_code == 204
        assert (await http.get("/_requests")).json() == []


def test_runs_as_a_process_with_a_script_file(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"match": "", "turns": [{"text": "from file"}]}]))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bgagent_testing.model_server", "--port", str(port), "--script", str(script)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port)
        response = httpx.post(f"http://127.0.0.1:{port}/v1/messages", json=body(), headers=HEADERS)
        assert response.status_code == 200
        assert response.json()["content"][0]["text"] == "from file"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_scripts_with_unknown_keys_are_refused(model_server: ModelServer) -> None:
    async with httpx.AsyncClient(base_url=model_server.url) as http:
        typo = await http.post("/_scripts", json={"match": "x", "turns": [{"tool_use": []}]})
    assert typo.status_code == 400
    assert "tool_use" in typo.json()["error"]
    with pytest.raises(ValueError, match="invalid script"):
        model_server.add_script("y", [{"tool_uses": [{"input": {}}]}])


async def test_delay_and_stop_reason_of_a_turn_are_honoured(model_server: ModelServer) -> None:
    tag = f"delay-{ULID()}"
    model_server.add_script(tag, [{"text": "slow", "delay_s": 0.3, "stop_reason": "max_tokens"}])
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=model_server.url) as http:
        response = await http.post(
            "/v1/messages", json=body(messages=[{"role": "user", "content": tag}]), headers=HEADERS
        )
    assert time.monotonic() - started >= 0.3
    assert response.json()["stop_reason"] == "max_tokens"
