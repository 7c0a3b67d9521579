"""Realistic event sequences for tests and benchmarks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TypedDict

from ulid import ULID

from bgagent_contracts import (
    AgentFinished,
    AgentTurn,
    CostUpdated,
    Event,
    Milestone,
    PrOpened,
    TaskCompleted,
    TaskStarted,
    TaskSubmitted,
    ToolCalled,
    ToolResult,
    WorkspaceReady,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class _Head(TypedDict):
    task_id: str
    event_id: str
    ts: datetime


class _RunnerHead(_Head):
    actor: str
    attempt: int


def lifecycle(
    *,
    user: str = "alice",
    repo: str = "acme/app",
    turns: int = 2,
    start: datetime = T0,
    description: str = "fix the bug",
    pr_number: int = 7,
    model: str = "m",
    text_preview: str = "thinking \u0000 about it",
    command: str = "pytest -q",
    output_preview: str = "3 passed",
    cost_per_turn: float = 0.01,
) -> list[Event]:
    """A completed task: submit, start, workspace, ``turns`` × (turn, tool call, result, cost), PR, done."""
    tid = str(ULID())
    clock = iter(range(1, 1_000_000))

    def head() -> _Head:
        return {"task_id": tid, "event_id": str(ULID()), "ts": start + timedelta(seconds=next(clock))}

    def run() -> _RunnerHead:
        return {**head(), "actor": "runner", "attempt": 1}

    pr_url = f"https://github.com/{repo}/pull/{pr_number}"
    out: list[Event] = [
        TaskSubmitted(**head(), actor="admission", user_id=user, repo=repo, description=description),
        TaskStarted(**run(), runner_id="r1"),
        WorkspaceReady(**run(), branch=f"bgagent/{tid}"),
        Milestone(**run(), name="cloned"),
    ]
    total = 0.0
    for turn in range(1, turns + 1):
        tool = f"tu_{turn}"
        total += cost_per_turn
        out += [
            AgentTurn(**run(), turn=turn, model=model, text_preview=text_preview, tool_calls=1),
            ToolCalled(**run(), turn=turn, tool_use_id=tool, tool_name="bash", input_preview=command),
            ToolResult(
                **run(),
                turn=turn,
                tool_use_id=tool,
                tool_name="bash",
                is_error=False,
                output_preview=output_preview,
            ),
            CostUpdated(
                **run(),
                turn=turn,
                input_tokens=1000,
                output_tokens=200,
                cost_usd=cost_per_turn,
                total_cost_usd=total,
            ),
        ]
    out += [
        AgentFinished(**run(), turns=turns, stop_reason="end_turn"),
        PrOpened(**run(), pr_number=pr_number, pr_url=pr_url, branch=f"bgagent/{tid}"),
        TaskCompleted(**run(), result="pr_opened"),
    ]
    return out
