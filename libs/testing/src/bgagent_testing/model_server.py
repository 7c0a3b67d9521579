"""A scripted model server that speaks the Anthropic Messages API (non-streaming).

It validates every ``POST /v1/messages`` about as strictly as the real API
(401 without credentials, 400 ``invalid_request_error`` naming the path of
what is wrong) and answers with scripted assistant turns:

- a script is ``{"match": "<substring>", "turns": [turn, ...]}``; a turn is
  ``{"text": "...", "tool_uses": [{"name": "bash", "input": {...}}], "delay_s": 0,
  "usage": {"input_tokens": n, "output_tokens": n}}`` (every key optional);
- the first script whose non-empty ``match`` occurs in the text of the first
  user message or the system prompt is played; a script with ``match: ""`` is
  the default; the turn played is the number of assistant messages in the
  request (stateless: a retried request gets the same turn), and past the end
  of a script the answer is a plain "Done." with ``stop_reason: end_turn``.

Admin endpoints: ``POST /_scripts`` (one script or a list), ``DELETE /_scripts``,
``GET /_requests[?match=…]`` (every recorded request with the script it matched),
``DELETE /_requests``.

In process: ``with ModelServer() as server: server.url``; as a process:
``python -m bgagent_testing.model_server --port P [--script FILE.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import secrets
import string
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import uvicorn
from litestar import Litestar, Request, Response, delete, get, post

from .servers import free_port, wait_for_port

JSON = dict[str, Any]


class ToolUse(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    input: dict[str, Any] = msgspec.field(default_factory=dict)


class Turn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One scripted assistant message (unknown keys are refused, so typos do not pass silently)."""

    text: str | None = None
    tool_uses: list[ToolUse] = msgspec.field(default_factory=list)
    delay_s: float = 0.0
    usage: dict[str, int] | None = None
    """Overrides the derived token counts (keys of the API's ``usage`` object)."""
    stop_reason: str = "end_turn"
    """Used when the turn has no tool use (``end_turn``, ``max_tokens``, …)."""


class Script(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    match: str = ""
    turns: list[Turn] = msgspec.field(default_factory=list)


DONE = Turn(text="Done.")


def parse_script(data: Any) -> Script:
    """A Script from JSON-like data; ValueError naming the bad field."""
    try:
        return msgspec.convert(data, Script)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid script: {exc}") from exc


class InvalidRequest(Exception):
    """A request the real API would refuse with 400 invalid_request_error."""


# --- validation ----------------------------------------------------------------------------------------

_TOP_LEVEL = {
    "model",
    "max_tokens",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "metadata",
    "stream",
    "thinking",
    "service_tier",
    "cache_control",
    "container",
    "output_config",
}
_CLIENT_TOOLS = {"bash_20250124": "bash", "text_editor_20250728": "str_replace_based_edit_tool"}
_CLIENT_TOOL_KEYS = {"type", "name", "cache_control", "max_characters"}
_CUSTOM_TOOL_KEYS = {"type", "name", "description", "input_schema", "cache_control", "strict"}
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_BLOCK_KEYS: dict[str, set[str]] = {
    "text": {"type", "text", "cache_control", "citations"},
    "image": {"type", "source", "cache_control"},
    "document": {"type", "source", "cache_control", "title", "context", "citations"},
    "tool_use": {"type", "id", "name", "input", "cache_control"},
    "tool_result": {"type", "tool_use_id", "content", "is_error", "cache_control"},
    "thinking": {"type", "thinking", "signature"},
    "redacted_thinking": {"type", "data"},
}
_IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}


def _fail(path: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{path}: {message}")


def _require(obj: Mapping[str, Any], key: str, path: str, kind: type | tuple[type, ...]) -> Any:
    if key not in obj:
        raise _fail(f"{path}.{key}" if path else key, "Field required")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _fail(f"{path}.{key}" if path else key, f"Input should be a valid {names}")
    return value


def _check_keys(obj: Mapping[str, Any], allowed: set[str], path: str) -> None:
    for key in obj:
        if key not in allowed:
            raise _fail(f"{path}.{key}", "Extra inputs are not permitted")


def _check_cache_control(obj: Mapping[str, Any], path: str) -> None:
    cc = obj.get("cache_control")
    if cc is None:
        return
    if not isinstance(cc, dict) or cc.get("type") != "ephemeral":
        raise _fail(f"{path}.cache_control", "Input tag should be 'ephemeral'")
    if "ttl" in cc and cc["ttl"] not in ("5m", "1h"):
        raise _fail(f"{path}.cache_control.ttl", "Input should be '5m' or '1h'")


def _check_image(block: Mapping[str, Any], path: str) -> None:
    source = _require(block, "source", path, dict)
    kind = source.get("type")
    if kind == "base64":
        if source.get("media_type") not in _IMAGE_TYPES:
            raise _fail(f"{path}.source.media_type", f"Input should be one of {sorted(_IMAGE_TYPES)}")
        _require(source, "data", f"{path}.source", str)
    elif kind == "url":
        _require(source, "url", f"{path}.source", str)
    else:
        raise _fail(f"{path}.source.type", "Input tag should be 'base64' or 'url'")


def _check_block(block: Any, path: str, role: str) -> str:
    if not isinstance(block, dict):
        raise _fail(path, "Input should be a valid dictionary")
    kind = _require(block, "type", path, str)
    if kind not in _BLOCK_KEYS:
        raise _fail(f"{path}.type", f"Input tag '{kind}' does not match any of the expected tags")
    _check_keys(block, _BLOCK_KEYS[kind], path)
    _check_cache_control(block, path)
    if kind == "text":
        if not _require(block, "text", path, str):
            raise _fail(f"{path}.text", "text content blocks must be non-empty")
    elif kind == "image":
        _check_image(block, path)
    elif kind == "document":
        _require(block, "source", path, dict)
    elif kind == "tool_use":
        _check_tool_use(block, path, role)
    elif kind == "tool_result":
        _check_tool_result(block, path, role)
    elif kind == "thinking":
        _require(block, "thinking", path, str)
        _require(block, "signature", path, str)
    return str(kind)


def _check_tool_use(block: Mapping[str, Any], path: str, role: str) -> None:
    if role != "assistant":
        raise _fail(path, "tool_use blocks may only appear in assistant messages")
    _require(block, "id", path, str)
    if not _TOOL_NAME.match(_require(block, "name", path, str)):
        raise _fail(f"{path}.name", "String should match pattern '^[a-zA-Z0-9_-]{1,128}$'")
    _require(block, "input", path, dict)


def _check_tool_result(block: Mapping[str, Any], path: str, role: str) -> None:
    if role != "user":
        raise _fail(path, "tool_result blocks may only appear in user messages")
    _require(block, "tool_use_id", path, str)
    if "is_error" in block and not isinstance(block["is_error"], bool):
        raise _fail(f"{path}.is_error", "Input should be a valid boolean")
    content = block.get("content", "")
    if isinstance(content, list):
        for j, inner in enumerate(content):
            if not isinstance(inner, dict) or inner.get("type") not in ("text", "image", "document"):
                raise _fail(f"{path}.content.{j}", "tool_result content must be text, image or document")
            _check_block(inner, f"{path}.content.{j}", role)
    elif not isinstance(content, str):
        raise _fail(f"{path}.content", "Input should be a valid string or list")


def _blocks(message: Mapping[str, Any]) -> list[JSON]:
    content = message["content"]
    return [] if isinstance(content, str) else list(content)


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list):
        raise _fail("messages", "Input should be a valid list")
    if not messages:
        raise _fail("messages", "at least one message is required")
    previous_role: str | None = None
    for i, message in enumerate(messages):
        path = f"messages.{i}"
        if not isinstance(message, dict):
            raise _fail(path, "Input should be a valid dictionary")
        _check_keys(message, {"role", "content"}, path)
        role = _require(message, "role", path, str)
        if role not in ("user", "assistant"):
            raise _fail(f"{path}.role", "Input should be 'user' or 'assistant'")
        if i == 0 and role != "user":
            raise _fail(path, "first message must use the 'user' role")
        if role == previous_role:
            raise _fail(
                path, f'roles must alternate between "user" and "assistant", found two "{role}" in a row'
            )
        previous_role = role
        content = _require(message, "content", path, (str, list))
        if isinstance(content, str):
            if not content and not (role == "assistant" and i == len(messages) - 1):
                raise _fail(f"{path}.content", "content must be non-empty")
            continue
        if not content and role == "user":
            raise _fail(f"{path}.content", "content must be non-empty")
        for j, block in enumerate(content):
            _check_block(block, f"{path}.content.{j}", role)
    _check_tool_pairing(messages)


def _check_tool_pairing(messages: list[JSON]) -> None:
    seen: set[str] = set()
    for i, message in enumerate(messages):
        blocks = _blocks(message)
        if message["role"] == "assistant":
            ids = [b["id"] for b in blocks if b.get("type") == "tool_use"]
            for tool_id in ids:
                if tool_id in seen:
                    raise _fail(f"messages.{i}", f"`tool_use` ids must be unique: {tool_id}")
                seen.add(tool_id)
            if not ids:
                continue
            if i + 1 >= len(messages):
                continue  # a trailing assistant message with tool_use is the caller's prefill problem
            following = _blocks(messages[i + 1])
            answered = [b.get("tool_use_id") for b in following if b.get("type") == "tool_result"]
            missing = [t for t in ids if t not in answered]
            if missing:
                raise _fail(
                    f"messages.{i + 1}",
                    "`tool_use` ids were found without `tool_result` blocks immediately after: "
                    + ", ".join(missing)
                    + ". Each `tool_use` block must have a corresponding `tool_result` block"
                    " in the next message.",
                )
            kinds = [b.get("type") for b in following]
            first_other = next((k for k, t in enumerate(kinds) if t != "tool_result"), len(kinds))
            if any(t == "tool_result" for t in kinds[first_other:]):
                raise _fail(
                    f"messages.{i + 1}.content", "`tool_result` blocks must come first in the message"
                )
        else:
            previous = _blocks(messages[i - 1]) if i > 0 else []
            offered = {b["id"] for b in previous if b.get("type") == "tool_use"}
            for j, block in enumerate(blocks):
                if block.get("type") == "tool_result" and block.get("tool_use_id") not in offered:
                    raise _fail(
                        f"messages.{i}.content.{j}",
                        f"unexpected `tool_use_id` in `tool_result` blocks: {block.get('tool_use_id')}. "
                        "Each `tool_result` block must have a corresponding `tool_use` block in the previous "
                        "message.",
                    )


def _check_tools(tools: Any) -> None:
    if not isinstance(tools, list):
        raise _fail("tools", "Input should be a valid list")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        path = f"tools.{i}"
        if not isinstance(tool, dict):
            raise _fail(path, "Input should be a valid dictionary")
        kind = tool.get("type", "custom")
        name = _require(tool, "name", path, str)
        if kind in _CLIENT_TOOLS:
            _check_keys(tool, _CLIENT_TOOL_KEYS, path)
            if name != _CLIENT_TOOLS[kind]:
                raise _fail(f"{path}.name", f"Input should be '{_CLIENT_TOOLS[kind]}' for tool type {kind}")
        elif kind == "custom":
            _check_keys(tool, _CUSTOM_TOOL_KEYS, path)
            if not _TOOL_NAME.match(name):
                raise _fail(f"{path}.name", "String should match pattern '^[a-zA-Z0-9_-]{1,128}$'")
            schema = _require(tool, "input_schema", path, dict)
            if schema.get("type") != "object":
                raise _fail(f"{path}.input_schema.type", "Input should be 'object'")
        else:
            raise _fail(f"{path}.type", f"Input tag '{kind}' does not match any of the expected tags")
        _check_cache_control(tool, path)
        if name in names:
            raise _fail("tools", f"Tool names must be unique: {name}")
        names.add(name)


def _check_system(system: Any) -> None:
    if isinstance(system, str):
        return
    if not isinstance(system, list):
        raise _fail("system", "Input should be a valid string or list")
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _fail(f"system.{i}.type", "Input tag should be 'text'")
        _check_block(block, f"system.{i}", "system")


def validate_request(body: Any) -> None:
    """Raise InvalidRequest naming the path of the first thing the real API would refuse."""
    if not isinstance(body, dict):
        raise InvalidRequest("body: Input should be a valid dictionary")
    for key in body:
        if key not in _TOP_LEVEL:
            raise _fail(key, "Extra inputs are not permitted")
    if not _require(body, "model", "", str):
        raise _fail("model", "String should have at least 1 character")
    if _require(body, "max_tokens", "", int) < 1:
        raise _fail("max_tokens", "Input should be greater than or equal to 1")
    if body.get("stream"):
        raise _fail("stream", "this scripted server only answers non-streaming requests")
    _check_messages(body.get("messages"))
    if "system" in body:
        _check_system(body["system"])
    if "tools" in body:
        _check_tools(body["tools"])
    _check_cache_control(body, "")


# --- scripts and responses ------------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict))


def _tokens(value: Any) -> int:
    return max(1, math.ceil(len(json.dumps(value, separators=(",", ":"))) / 4))


def _tool_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "toolu_01" + "".join(secrets.choice(alphabet) for _ in range(22))


def _has_cache_control(body: JSON) -> bool:
    return '"cache_control"' in json.dumps(body.get("system", "")) + json.dumps(body.get("tools", []))


def build_message(body: JSON, turn: Turn | None) -> JSON:
    """The Message object for one scripted turn (``None`` → the closing "Done.")."""
    spec = turn if turn is not None else DONE
    content: list[JSON] = []
    if spec.text:
        content.append({"type": "text", "text": spec.text})
    for use in spec.tool_uses:
        content.append({"type": "tool_use", "id": _tool_id(), "name": use.name, "input": use.input})
    if not content:
        content.append({"type": "text", "text": "Done."})
    prefix = _tokens([body.get("system", ""), body.get("tools", [])])
    total = _tokens(body)
    turn_index = sum(1 for m in body["messages"] if m["role"] == "assistant")
    cache_write = prefix if _has_cache_control(body) and turn_index == 0 else 0
    cache_read = prefix if _has_cache_control(body) and turn_index > 0 else 0
    usage = {
        "input_tokens": max(1, total - cache_write - cache_read),
        "output_tokens": _tokens(content),
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
    }
    usage.update(spec.usage or {})
    has_tools = any(b["type"] == "tool_use" for b in content)
    return {
        "id": "msg_01" + secrets.token_hex(11),
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": "tool_use" if has_tools else spec.stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


class ScriptBook:
    """Registered scripts and recorded requests; safe to use from the test thread and the server."""

    def __init__(self, scripts: Sequence[Script] = ()) -> None:
        self._lock = threading.Lock()
        self._scripts: list[Script] = []
        self._requests: list[JSON] = []
        for script in scripts:
            self.add(script)

    def add(self, script: Script | Mapping[str, Any]) -> Script:
        s = script if isinstance(script, Script) else parse_script(dict(script))
        with self._lock:
            self._scripts = [x for x in self._scripts if x.match != s.match] + [s]
        return s

    def clear_scripts(self) -> None:
        with self._lock:
            self._scripts.clear()

    def pick(self, body: JSON) -> Script | None:
        first_user = next((m for m in body["messages"] if m["role"] == "user"), None)
        haystack = (
            _text_of(first_user["content"] if first_user else "") + "\n" + _text_of(body.get("system", ""))
        )
        with self._lock:
            for script in self._scripts:
                if script.match and script.match in haystack:
                    return script
            return next((s for s in self._scripts if not s.match), None)

    def record(self, entry: JSON) -> None:
        with self._lock:
            self._requests.append(entry)

    def requests(self, match: str | None = None) -> list[JSON]:
        with self._lock:
            return [r for r in self._requests if match is None or r["script"] == match]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()


def _error(status: int, kind: str, message: str) -> Response[JSON]:
    return Response({"type": "error", "error": {"type": kind, "message": message}}, status_code=status)


def create_app(book: ScriptBook) -> Litestar:
    """The Litestar app serving the Messages API and the admin endpoints over ``book``."""

    @post("/v1/messages", status_code=200)
    async def messages(request: Request[Any, Any, Any]) -> Response[JSON]:
        if not request.headers.get("x-api-key") and not request.headers.get("authorization"):
            return _error(401, "authentication_error", "x-api-key header is required")
        if not request.headers.get("anthropic-version"):
            return _error(401, "authentication_error", "anthropic-version: header is required")
        raw = await request.body()
        try:
            body = json.loads(raw)
            validate_request(body)
        except json.JSONDecodeError as exc:
            return _error(400, "invalid_request_error", f"body: invalid JSON ({exc})")
        except InvalidRequest as exc:
            book.record({"body": body, "script": None, "turn": None, "status": 400, "error": str(exc)})
            return _error(400, "invalid_request_error", str(exc))
        script = book.pick(body)
        turn_index = sum(1 for m in body["messages"] if m["role"] == "assistant")
        turns = script.turns if script else []
        turn = turns[turn_index] if turn_index < len(turns) else None
        book.record(
            {"body": body, "script": script.match if script else None, "turn": turn_index, "status": 200}
        )
        if turn is not None and turn.delay_s > 0:
            await asyncio.sleep(turn.delay_s)
        return Response(build_message(body, turn), status_code=200)

    @post("/_scripts", status_code=201)
    async def add_scripts(request: Request[Any, Any, Any]) -> Response[JSON]:
        data = await request.json()
        items = data if isinstance(data, list) else [data]
        try:
            scripts = [parse_script(item) for item in items]
        except ValueError as exc:
            return Response({"error": str(exc)}, status_code=400)
        return Response({"registered": [book.add(s).match for s in scripts]}, status_code=201)

    @delete("/_scripts", status_code=204)
    async def clear_scripts() -> None:
        book.clear_scripts()

    @get("/_requests")
    async def list_requests(request: Request[Any, Any, Any]) -> list[JSON]:
        return book.requests(request.query_params.get("match"))

    @delete("/_requests", status_code=204)
    async def clear_requests() -> None:
        book.clear_requests()

    return Litestar([messages, add_scripts, clear_scripts, list_requests, clear_requests], debug=False)


def load_scripts(path: str | Path) -> list[Script]:
    """Scripts from a JSON file holding one script or a list of them."""
    data = json.loads(Path(path).read_text())
    items = data if isinstance(data, list) else [data]
    return [parse_script(item) for item in items]


class ModelServer:
    """The scripted model server on a free port, served by uvicorn in a background thread."""

    def __init__(
        self, scripts: Sequence[Script] = (), host: str = "127.0.0.1", port: int | None = None
    ) -> None:
        self.book = ScriptBook(scripts)
        self.host = host
        self.port = port or free_port()
        config = uvicorn.Config(
            create_app(self.book), host=host, port=self.port, log_level="warning", ws="none", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add_script(self, match: str, turns: Sequence[Mapping[str, Any]]) -> Script:
        return self.book.add(parse_script({"match": match, "turns": [dict(t) for t in turns]}))

    def requests(self, match: str | None = None) -> list[JSON]:
        return self.book.requests(match)

    def start(self) -> ModelServer:
        self._thread = threading.Thread(target=self._server.run, name="model-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"model server did not start on port {self.port}")
            time.sleep(0.01)
        wait_for_port(self.host, self.port)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bgagent_testing.model_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--script", action="append", default=[], help="JSON file with a script or a list")
    args = parser.parse_args(argv)
    scripts = [s for path in args.script for s in load_scripts(path)]
    uvicorn.run(create_app(ScriptBook(scripts)), host=args.host, port=args.port, log_level="info", ws="none")


if __name__ == "__main__":
    main()
