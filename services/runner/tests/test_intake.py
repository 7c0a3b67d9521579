"""Hostile submissions and poison on a running task's log: the runner records, fails or skips them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client
from ulid import ULID

from bgagent_contracts import Status, TaskFailed, ToolCalled
from bgagent_contracts.subjects import task_subject
from bgagent_eventstore import list_poison
from bgagent_runner.sandbox import SandboxSettings
from bgagent_testing.model_server import ModelServer

pytestmark = pytest.mark.integration


def _submitted(task_id: str, **fields: Any) -> bytes:
    wire = {
        "type": "task_submitted",
        "task_id": task_id,
        "event_id": str(ULID()),
        "ts": datetime.now(UTC).isoformat(),
        "actor": "admission",
        "user_id": "mallory",
        "repo": "acme/widgets",
        "description": "do it",
        **fields,
    }
    return json.dumps(wire).encode()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"description": "nul \u0000 inside"}, "description"),
        ({"max_turns": 100_000}, "max_turns"),
        ({"user_id": "not a user"}, "user_id"),
        ({"repo": "/etc"}, "repo"),
        ({"task_type": "pr_review"}, "pr_number"),
    ],
)
async def test_a_direct_submission_that_breaks_a_rule_fails_with_invalid_submission(
    kit: Any, nc: Client, fields: dict[str, Any], field: str
) -> None:
    await kit.start_runner(kit.settings)
    task_id = str(ULID())
    prefix = kit.settings.nats.prefix
    await nc.jetstream().publish(
        task_subject(task_id, "task_submitted", prefix), _submitted(task_id, **fields)
    )

    state = await kit.wait_terminal(task_id)

    assert state.status is Status.FAILED
    assert state.attempt == 0, "an invalid submission is never claimed"
    last = (await kit.events(task_id))[-1]
    assert isinstance(last, TaskFailed)
    assert last.code == "INVALID_SUBMISSION"
    assert last.message.startswith(f"the submission breaks a rule: {field}:")


@pytest.mark.parametrize(
    ("subject_task", "data", "why"),
    [
        ("not-a-ulid", None, "not a ULID"),
        (None, b"\xff\xfe{", "invalid UTF-8"),
        (None, b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b', "type": "task_submitted"}', "nested too deeply"),
        (None, "max_turns", "$.max_turns"),
    ],
)
async def test_a_poison_submission_is_recorded_and_never_redelivered(
    kit: Any, nc: Client, subject_task: str | None, data: bytes | str | None, why: str
) -> None:
    handle = await kit.start_runner(kit.settings)
    task_id = subject_task or str(ULID())
    prefix = kit.settings.nats.prefix
    if data is None:
        payload = _submitted(task_id)
    elif isinstance(data, str):
        payload = _submitted(task_id, **{data: -5})
    else:
        payload = data
    js = nc.jetstream()
    ack = await js.publish(task_subject(task_id, "task_submitted", prefix), payload)

    async def recorded() -> bool:
        return any(r.seq == ack.seq and r.reader == "runner" for r in await list_poison(js, prefix))

    await kit.wait_until(recorded)
    found = next(r for r in await list_poison(js, prefix) if r.seq == ack.seq)
    assert why in found.reason

    async def terminated() -> bool:
        info = await js.consumer_info(kit.settings.nats.stream, f"{prefix.replace('.', '_')}_runner")
        return info.num_ack_pending == 0 and info.num_redelivered == 0 and info.num_pending == 0

    await kit.wait_until(terminated)
    assert not handle.task.done(), "the runner stopped"


async def test_poison_in_a_running_tasks_log_is_skipped_and_the_task_completes(
    kit: Any, nc: Client, model_server: ModelServer, origin: Path, tmp_path: Path
) -> None:
    tag = f"poisoned-{ULID()}"
    gate = tmp_path / "gate"
    model_server.add_script(
        tag,
        [
            {
                "tool_uses": [
                    {"name": "bash", "input": {"command": f"while [ ! -e {gate} ]; do sleep 0.05; done"}}
                ]
            },
            {"text": "Done."},
        ],
    )
    # the gate is a host file, which the sandbox would hide
    await kit.start_runner(msgspec.structs.replace(kit.settings, sandbox=SandboxSettings(mode="off")))
    task_id = await kit.submit(str(origin), f"{tag} go")

    async def called() -> bool:
        return any(isinstance(e, ToolCalled) for e in await kit.events(task_id))

    await kit.wait_until(called)
    prefix = kit.settings.nats.prefix
    js = nc.jetstream()
    bad_utf8 = (
        json.dumps(
            {
                "type": "milestone",
                "task_id": task_id,
                "event_id": str(ULID()),
                "ts": datetime.now(UTC).isoformat(),
                "actor": "runner",
                "attempt": 1,
                "name": "PLACEHOLDER",
            }
        )
        .encode()
        .replace(b"PLACEHOLDER", b"\xff")
    )
    await js.publish(task_subject(task_id, "milestone", prefix), bad_utf8)
    await js.publish(task_subject(task_id, "cancel_requested", prefix), b"[" * 3000 + b"]" * 3000)
    gate.touch()

    state = await kit.wait_terminal(task_id, timeout=15)

    assert state.status is Status.COMPLETED, state
