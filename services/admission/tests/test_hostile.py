"""What an attacker or a broken client sends to admission: a 4xx naming the problem, nothing appended."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import httpx
import pytest
from nats.aio.client import Client
from ulid import ULID

from bgagent_contracts.subjects import task_subject
from bgagent_eventstore import NatsSettings

pytestmark = pytest.mark.integration

ALICE = {"Authorization": "Bearer alice-token"}
JSON = {**ALICE, "Content-Type": "application/json"}


def _deep(depth: int) -> bytes:
    return b'{"repo": "acme/widgets", "x": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (_deep(3000), "body: JSON nested too deeply"),
        (_deep(30_000), "body: JSON nested too deeply"),
        (b'{"repo": "acme/widgets", "description": "bad \xff bytes"}', "body: invalid UTF-8"),
        (b'{"repo": "acme/widgets", "description": "lone \\ud800"}', "body: malformed JSON"),
        (
            b'{"repo": "acme/widgets", "description": "nul \\u0000 inside"}',
            "description: contains the control",
        ),
        (b'{"repo": "acme/widgets", "description": "esc \\u001b[2J"}', "description: contains the control"),
        (b'{"repo": "acme/wid\\u0000gets", "description": "x"}', "repo: is not a repository name"),
        (b'{"repo": "acme/widgets", "description": "x", "max_turns": 1e400}', "max_turns"),
        (b'{"repo": "acme/widgets", "description": "x", "max_turns": 99999999999999999999999}', "max_turns"),
        (b'{"repo": "acme/widgets", "description": "x", "max_budget_usd": 1e400}', "max_budget_usd"),
        (b'{"repo": "acme/widgets", "issue_number": 9223372036854775808}', "issue_number"),
        (b'{"repo": "acme/widgets", "description": "x", "max_turns": -5}', "max_turns"),
    ],
)
async def test_hostile_create_bodies_are_400_naming_the_problem(
    client: httpx.AsyncClient, stream_count: Callable[[], Awaitable[int]], body: bytes, names: str
) -> None:
    before = await stream_count()
    resp = await client.post("/v1/tasks", content=body, headers=JSON)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert names in error["message"]
    assert await stream_count() == before


@pytest.mark.parametrize(
    ("path", "body", "names"),
    [
        ("nudges", _deep(3000), "body: JSON nested too deeply"),
        ("nudges", b'{"message": "a \\u0000 b"}', "message: contains the control"),
        ("nudges", b'{"message": "bad \xff"}', "body: invalid UTF-8"),
        ("cancel", b'{"reason": "a \\u0007 b"}', "reason: contains the control"),
    ],
)
async def test_hostile_nudge_and_cancel_bodies_are_400(
    client: httpx.AsyncClient, path: str, body: bytes, names: str
) -> None:
    created = await client.post("/v1/tasks", json={"repo": "acme/widgets", "description": "x"}, headers=ALICE)
    task_id = created.json()["data"]["task_id"]
    resp = await client.post(f"/v1/tasks/{task_id}/{path}", content=body, headers=JSON)
    assert resp.status_code == 400, resp.text
    assert names in resp.json()["error"]["message"]


async def test_a_task_with_poison_in_its_log_still_folds_for_cancel_and_nudge(
    client: httpx.AsyncClient, nc: Client, provisioned: NatsSettings
) -> None:
    created = await client.post("/v1/tasks", json={"repo": "acme/widgets", "description": "x"}, headers=ALICE)
    task_id = created.json()["data"]["task_id"]
    js = nc.jetstream()
    deep = (
        b'{"type": "milestone", "task_id": "'
        + task_id.encode()
        + b'", "event_id": "'
        + str(ULID()).encode()
        + b'", "ts": "'
        + datetime.now(UTC).isoformat().encode()
        + b'", "actor": "runner", "attempt": 1,'
        + b' "name": "x", "deep": '
        + b"[" * 3000
        + b"]" * 3000
        + b"}"
    )
    await js.publish(task_subject(task_id, "milestone", provisioned.prefix), deep)
    await js.publish(
        task_subject(task_id, "milestone", provisioned.prefix), b'{"type": "milestone", "x": "\xff"}'
    )

    nudged = await client.post(f"/v1/tasks/{task_id}/nudges", json={"message": "hi"}, headers=ALICE)
    assert nudged.status_code == 202, nudged.text
    cancelled = await client.post(f"/v1/tasks/{task_id}/cancel", headers=ALICE)
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["data"]["status"] == "CANCELLED"
