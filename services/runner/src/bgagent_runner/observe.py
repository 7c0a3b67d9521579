"""The runner's spans and metrics (``bgagent_eventstore.telemetry`` installs the providers).

One trace per task: the task span ``task <id>`` is a child of the context the ``task_submitted``
message carries (admission's request span), and holds one span per agent turn, and within a
turn one per model call and one per tool call. Every event the runner appends meanwhile carries
the current span in its headers, so the projector's and fanout's spans link into the same trace.
Metrics: model tokens and cost, finished attempts by status, and the work queue's depth.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, ParamSpec, TypeVar

import nats.errors
import nats.js.errors
from anthropic.types import Message
from nats.js import JetStreamContext
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from bgagent_contracts.pricing import cost_usd
from bgagent_eventstore.telemetry import (
    bind_task_id,
    context_from_headers,
    meter,
    record_attempt_outcome,
    record_model_usage,
    tracer,
)

from .tools import ToolOutput

logger = logging.getLogger(__name__)

P = ParamSpec("P")
A = TypeVar("A")

KNOWN_TOOLS = frozenset({"bash", "str_replace_based_edit_tool"})


@contextlib.contextmanager
def task_span(headers: Mapping[str, str] | None) -> Iterator[Span]:
    """The span of one delivery of ``task_submitted``; ``task_started`` names it ``task <id>``."""
    with tracer().start_as_current_span(
        "task",
        context=context_from_headers(headers),
        kind=SpanKind.CONSUMER,
        attributes={"messaging.system": "nats", "messaging.operation.type": "process"},
    ) as span:
        yield span


def name_task(span: Span, task_id: str) -> None:
    span.update_name(f"task {task_id}")
    span.set_attribute("bgagent.task_id", task_id)
    bind_task_id(task_id)


def claimed(span: Span, attempt: int, runner_id: str) -> None:
    span.set_attributes({"bgagent.attempt": attempt, "bgagent.runner_id": runner_id})


def finished(span: Span, status: str) -> None:
    """The attempt ended with the task in ``status``."""
    span.set_attribute("bgagent.status", status)
    if status not in ("COMPLETED", "CANCELLED"):
        span.set_status(Status(StatusCode.ERROR, status))
    record_attempt_outcome(status)


@contextlib.contextmanager
def approval_wait_span(request_id: str, tool: str, rule_ids: Iterable[str]) -> Iterator[Span]:
    """``hitl.approval_wait``: a gated tool call waiting for a human (its decision's append links in)."""
    attributes = {"bgagent.request_id": request_id, "bgagent.tool": tool, "bgagent.rule_ids": list(rule_ids)}
    with tracer().start_as_current_span("hitl.approval_wait", attributes=attributes) as span:
        yield span


@contextlib.contextmanager
def turn_span(turn: int) -> Iterator[Span]:
    with tracer().start_as_current_span(f"turn {turn}", attributes={"bgagent.turn": turn}) as span:
        yield span


def model_call_span(fn: Callable[P, Awaitable[Message]]) -> Callable[P, Awaitable[Message]]:
    """Wrap ``Agent._call_model``: a ``model call`` span (covering retries) with the usage and cost,
    and the token and cost counters.

    The anthropic SDK adds its own ``anthropic.messages.create`` CLIENT span per HTTP request
    (GenAI conventions, usage included) as a child; ours keeps its figures under ``bgagent.model.*``
    so that GenAI-aware backends do not count the tokens twice."""

    @functools.wraps(fn)
    async def traced(*args: P.args, **kwargs: P.kwargs) -> Message:
        settings = getattr(args[0], "settings", None) if args else None
        model = str(getattr(settings, "model", "") or "")
        with tracer().start_as_current_span("model call", attributes={"bgagent.model": model}) as span:
            response = await fn(*args, **kwargs)
            _record_usage(span, model, response)
            return response

    return traced


def _record_usage(span: Span, model: str, response: Message) -> None:
    usage = response.usage
    cache_write = usage.cache_creation_input_tokens or 0
    cache_read = usage.cache_read_input_tokens or 0
    cost = cost_usd(
        model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_write_tokens=cache_write,
        cache_read_tokens=cache_read,
    )
    span.set_attributes(
        {
            "bgagent.model.stop_reason": response.stop_reason or "",
            "bgagent.model.input_tokens": usage.input_tokens,
            "bgagent.model.output_tokens": usage.output_tokens,
            "bgagent.model.cache_read_tokens": cache_read,
            "bgagent.model.cache_write_tokens": cache_write,
            "bgagent.model.cost_usd": cost,
        }
    )
    record_model_usage(
        model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cost_usd=cost,
    )


def tool_span(
    fn: Callable[[A, str, Any], Awaitable[ToolOutput]],
) -> Callable[[A, str, Any], Awaitable[ToolOutput]]:
    """Wrap ``Agent._execute(name, input)``: one span per tool call (the name only when it is one of
    ours: the model chose it; inputs and outputs stay in the events' previews and the trace)."""

    @functools.wraps(fn)
    async def traced(self: A, name: str, tool_input: Any) -> ToolOutput:
        tool = name if name in KNOWN_TOOLS else "unknown"
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool}
        with tracer().start_as_current_span(f"tool {tool}", attributes=attributes) as span:
            output = await fn(self, name, tool_input)
            span.set_attributes(
                {"bgagent.tool.is_error": output.is_error, "bgagent.tool.output_chars": len(output.text)}
            )
            if output.is_error:
                span.set_status(Status(StatusCode.ERROR, "tool reported an error"))
            return output

    return traced


def phase_span(name: str) -> Callable[[Callable[P, Awaitable[A]]], Callable[P, Awaitable[A]]]:
    """Wrap a coroutine method in a span named ``name`` (finalize, review…)."""

    def wrap(fn: Callable[P, Awaitable[A]]) -> Callable[P, Awaitable[A]]:
        @functools.wraps(fn)
        async def traced(*args: P.args, **kwargs: P.kwargs) -> A:
            with tracer().start_as_current_span(name):
                return await fn(*args, **kwargs)

        return traced

    return wrap


# --- queue depth ----------------------------------------------------------------------------------

_depth: dict[str, int] = {}


def _observe_depth(_options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(value, {"consumer": consumer}) for consumer, value in list(_depth.items())]


meter().create_observable_gauge(
    "bgagent.runner.queue_depth",
    callbacks=[_observe_depth],
    unit="{task}",
    description="Submitted tasks waiting for a runner (the work consumer's num_pending)",
)


async def poll_queue_depth(js: JetStreamContext, stream: str, durable: str, interval_s: float = 5.0) -> None:
    """Keep the queue depth gauge current (its callback runs on the exporter's thread: it reads
    the last value polled here)."""
    try:
        while True:
            try:
                info = await js.consumer_info(stream, durable)
                _depth[durable] = int(info.num_pending or 0)
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                logger.debug("queue depth poll failed: %s", exc)
            await asyncio.sleep(interval_s)
    finally:
        _depth.pop(durable, None)
