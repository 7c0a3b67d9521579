"""The agent loop: Messages API turns, client tools, limits and nudges between turns."""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
from collections.abc import Mapping
from typing import Any, cast

import anthropic
from anthropic.types import (
    ContentBlockParam,
    Message,
    MessageParam,
    TextBlockParam,
    ToolResultBlockParam,
    ToolUnionParam,
)

from bgagent_contracts import (
    AgentFinished,
    AgentTurn,
    CostUpdated,
    NudgeAcknowledged,
    ToolCalled,
    ToolResult,
    between_turns,
)
from bgagent_contracts.preview import preview, preview_limit
from bgagent_contracts.pricing import cost_usd

from . import observe
from .errors import ModelError
from .gate import ALLOW, Gate, GateCancelled
from .prompts import nudge_block
from .session import TaskSession, new_id
from .settings import Settings
from .tools import BASH_TOOL, EDITOR_TOOL, BashTool, TextEditor, ToolOutput
from .trace import Trace

logger = logging.getLogger(__name__)

TOOL_NAME_CHARS = 64


class Outcome(enum.Enum):
    FINISHED = "finished"
    """AgentFinished appended: finalize next."""
    STOPPED = "stopped"
    """A limit ended the task (TaskFailed / TaskTimedOut appended)."""
    CANCELLED = "cancelled"
    """A cancel was requested: the caller appends TaskCancelled."""


class AgentResult:
    def __init__(self, outcome: Outcome, summary: str | None = None) -> None:
        self.outcome = outcome
        self.summary = summary


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n\n[... {len(text) - 2 * half} characters cut ...]\n\n{text[-half:]}"


def tool_params() -> list[ToolUnionParam]:
    """The client tools, with a cache breakpoint on the last one."""
    bash: Any = dict(BASH_TOOL)
    editor: Any = {**EDITOR_TOOL, "cache_control": {"type": "ephemeral"}}
    return [bash, editor]


def _assistant_blocks(message: Message) -> list[ContentBlockParam]:
    blocks: list[ContentBlockParam] = []
    for block in message.content:
        if block.type == "text" and block.text:
            blocks.append({"type": "text", "text": block.text})
        elif block.type == "tool_use":
            blocks.append({"type": "tool_use", "id": block.id, "name": block.name, "input": block.input})
        elif block.type == "thinking":
            blocks.append({"type": "thinking", "thinking": block.thinking, "signature": block.signature})
    if not blocks:
        blocks.append({"type": "text", "text": "(no content)"})
    return blocks


def _move_cache_breakpoint(messages: list[MessageParam]) -> None:
    """One rolling cache breakpoint on the newest user block, so each turn reads the last one's prefix.

    With the system block and the last tool that makes three breakpoints (the API allows four).
    """
    for message in messages:
        if message["role"] != "user" or isinstance(message["content"], str):
            continue
        for block in message["content"]:
            cast(dict[str, Any], block).pop("cache_control", None)
    last = messages[-1]["content"]
    if isinstance(last, list) and last:
        cast(dict[str, Any], last[-1])["cache_control"] = {"type": "ephemeral"}


class Agent:
    """Drives one attempt's conversation until the model finishes, a limit stops it, or cancel."""

    def __init__(
        self,
        session: TaskSession,
        settings: Settings,
        client: anthropic.AsyncAnthropic | None,
        *,
        system: str,
        first_message: str,
        bash: BashTool,
        editor: TextEditor,
        trace: Trace | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.session = session
        self.settings = settings
        self.client = client
        self.system = system
        self.first_message = first_message
        self.bash = bash
        self.editor = editor
        self.trace = trace or Trace(False, ())
        self.limit = preview_limit(session.state.trace)
        self.gate = gate
        """The policy check before every tool call (None: every call runs, as in unit tests)."""
        self._denials: list[str] = []
        """``<user_denial>`` blocks for the next user message (refused or expired approvals)."""

    def _preview(self, text: str) -> str:
        return preview(text, self.limit, self.settings.secrets)

    def _tool_name(self, name: str) -> str:
        """The model chose the name: redacted and short like any other text it wrote."""
        return preview(name, TOOL_NAME_CHARS, self.settings.secrets)

    async def run(self) -> AgentResult:
        messages: list[MessageParam] = []
        next_user: list[ContentBlockParam] = [{"type": "text", "text": self.first_message}]
        ended = False
        summary: str | None = None
        stop_reason = "end_turn"
        self.trace.record("start", model=self.settings.model, system=self.system, message=self.first_message)
        while True:
            state = await self.session.refresh()
            decision = between_turns(
                state,
                now=self.session.clock(),
                event_id=new_id(),
                wall_clock_limit_s=self.settings.task_timeout_s,
            )
            if decision.cancel:
                return AgentResult(Outcome.CANCELLED)
            if ended and not decision.nudge_ids:
                if self.gate is not None:
                    await self.gate.close_leftovers()
                await self.session.emit(
                    AgentFinished(
                        **self.session.common(),
                        turns=state.turn,
                        stop_reason=stop_reason,
                        summary=self._preview(summary) if summary else None,
                    )
                )
                return AgentResult(Outcome.FINISHED, summary)
            if decision.stop is not None:
                await self.session.emit(decision.stop)
                return AgentResult(Outcome.STOPPED)
            if decision.nudge_ids:
                await self.session.emit(
                    NudgeAcknowledged(
                        **self.session.common(), nudge_ids=decision.nudge_ids, turn=state.turn + 1
                    )
                )
                self.trace.record(
                    "nudges", nudge_ids=list(decision.nudge_ids), messages=list(decision.nudges)
                )
                for nudge_id, text in zip(decision.nudge_ids, decision.nudges, strict=True):
                    block: TextBlockParam = {"type": "text", "text": nudge_block(nudge_id, text)}
                    next_user.append(block)
            messages.append({"role": "user", "content": next_user})
            _move_cache_breakpoint(messages)
            turn = state.turn + 1
            with observe.turn_span(turn):
                response = await self._call_model(messages)
                messages.append({"role": "assistant", "content": _assistant_blocks(response)})
                summary = "\n".join(b.text for b in response.content if b.type == "text").strip() or summary
                stop_reason = response.stop_reason or "end_turn"
                await self._record_turn(turn, response)
                uses = [b for b in response.content if b.type == "tool_use"]
                try:
                    next_user = [await self._use_tool(turn, u.id, u.name, u.input) for u in uses]
                except GateCancelled:
                    return AgentResult(Outcome.CANCELLED)
                next_user.extend(self._take_denials())
                ended = not uses

    @observe.model_call_span
    async def _call_model(self, messages: list[MessageParam]) -> Message:
        if self.client is None:
            raise ModelError(
                "no model credentials: set ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL for a local server)"
            )
        system: list[TextBlockParam] = [
            {"type": "text", "text": self.system, "cache_control": {"type": "ephemeral"}}
        ]
        try:
            return await self.client.messages.create(
                model=self.settings.model,
                max_tokens=self.settings.max_tokens,
                system=system,
                tools=tool_params(),
                messages=messages,
            )
        except anthropic.APIStatusError as exc:
            detail = preview(str(exc.message), 500, self.settings.secrets)
            raise ModelError(f"model API answered {exc.status_code}: {detail}") from exc
        except anthropic.APIError as exc:
            raise ModelError(
                f"model API call failed: {preview(str(exc), 500, self.settings.secrets)}"
            ) from exc

    async def _record_turn(self, turn: int, response: Message) -> None:
        usage = response.usage
        cache_write = usage.cache_creation_input_tokens or 0
        cache_read = usage.cache_read_input_tokens or 0
        cost = cost_usd(
            self.settings.model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_write_tokens=cache_write,
            cache_read_tokens=cache_read,
        )
        text = "\n".join(b.text for b in response.content if b.type == "text")
        tool_calls = sum(1 for b in response.content if b.type == "tool_use")
        self.trace.record(
            "model_turn",
            turn=turn,
            text=text,
            tool_uses=[
                {"id": b.id, "name": b.name, "input": b.input}
                for b in response.content
                if b.type == "tool_use"
            ],
            stop_reason=response.stop_reason,
            usage=usage.model_dump(exclude_none=True),
        )
        await self.session.emit(
            AgentTurn(
                **self.session.common(),
                turn=turn,
                model=response.model or self.settings.model,
                text_preview=self._preview(text) if text else None,
                tool_calls=tool_calls,
                stop_reason=response.stop_reason,
            ),
            CostUpdated(
                **self.session.common(),
                turn=turn,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=cache_read,
                cache_write_tokens=cache_write,
                cost_usd=cost,
                total_cost_usd=self.session.state.cost_usd + cost,
            ),
        )

    async def _use_tool(self, turn: int, tool_use_id: str, name: str, tool_input: Any) -> ContentBlockParam:
        if name == "bash" and isinstance(tool_input, Mapping) and "command" in tool_input:
            input_text = str(tool_input["command"])
        else:
            input_text = json.dumps(tool_input, ensure_ascii=False, default=str)
        await self.session.emit(
            ToolCalled(
                **self.session.common(),
                turn=turn,
                tool_use_id=tool_use_id,
                tool_name=self._tool_name(name),
                input_preview=self._preview(input_text),
            )
        )
        verdict = ALLOW if self.gate is None else await self.gate.check(tool_use_id, name, tool_input)
        started = time.monotonic()
        if verdict.run:
            output = await self._execute(name, tool_input)
        else:
            output = ToolOutput(text=verdict.message, is_error=True)
            if verdict.steering is not None:
                self._denials.append(verdict.steering)
        text = _cap(output.text, self.settings.tool_output_cap)
        self.trace.record(
            "tool_result",
            turn=turn,
            tool_use_id=tool_use_id,
            tool_name=name,
            output=text,
            is_error=output.is_error,
        )
        await self.session.emit(
            ToolResult(
                **self.session.common(),
                turn=turn,
                tool_use_id=tool_use_id,
                tool_name=self._tool_name(name),
                is_error=output.is_error,
                output_preview=self._preview(text),
                duration_ms=int((time.monotonic() - started) * 1000),
            )
        )
        result: ToolResultBlockParam = {
            "type": "tool_result",
            "tool_use_id": tool_use_id,
            "content": text or "(no output)",
            "is_error": output.is_error,
        }
        return result

    def _take_denials(self) -> list[ContentBlockParam]:
        """The steering of refused approvals, after the turn's tool results (like nudges)."""
        denials, self._denials = self._denials, []
        if denials:
            self.trace.record("user_denials", messages=denials)
        blocks: list[ContentBlockParam] = []
        for text in denials:
            block: TextBlockParam = {"type": "text", "text": text}
            blocks.append(block)
        return blocks

    @observe.tool_span
    async def _execute(self, name: str, tool_input: Any) -> ToolOutput:
        if not isinstance(tool_input, Mapping):
            return ToolOutput(text="Error: tool input must be an object", is_error=True)
        if name == "bash":
            return await self.bash.run(tool_input)
        if name == "str_replace_based_edit_tool":
            return await asyncio.to_thread(self.editor.run, tool_input)
        return ToolOutput(
            text=f"Error: unknown tool {name!r}; available: bash, str_replace_based_edit_tool", is_error=True
        )
