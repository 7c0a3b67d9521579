"""Hostile messages straight on the bus stop nothing: every reader records them and moves on."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ulid import ULID

from bgagent_cli.demo import DEMO_SCRIPT, make_demo_repo
from bgagent_contracts.subjects import task_subject
from bgagent_eventstore import PoisonRecord, connect, list_poison

from .conftest import E2E, wait_until

pytestmark = pytest.mark.e2e

FIX_TURNS: list[dict[str, Any]] = DEMO_SCRIPT[0]["turns"]


def _submitted_wire(task_id: str, user: str = "mallory", **fields: Any) -> dict[str, Any]:
    return {
        "type": "task_submitted",
        "task_id": task_id,
        "event_id": str(ULID()),
        "ts": datetime.now(UTC).isoformat(),
        "actor": "admission",
        "user_id": user,
        "repo": "acme/widgets",
        "description": "do something",
        **fields,
    }


def _deep_event(task_id: str, depth: int = 3000) -> bytes:
    wire = {
        "type": "milestone",
        "task_id": task_id,
        "event_id": str(ULID()),
        "ts": datetime.now(UTC).isoformat(),
        "actor": "runner",
        "attempt": 1,
        "name": "deep",
    }
    head = json.dumps(wire).encode()[:-1]
    return head + b', "x": ' + b"[" * depth + b"]" * depth + b"}"


def _bad_utf8_event(task_id: str) -> bytes:
    wire = {
        "type": "milestone",
        "task_id": task_id,
        "event_id": str(ULID()),
        "ts": datetime.now(UTC).isoformat(),
        "actor": "runner",
        "attempt": 1,
        "name": "PLACEHOLDER",
    }
    return json.dumps(wire).encode().replace(b"PLACEHOLDER", b"bad \xff\xfe bytes")


async def _publish(e2e: E2E, messages: list[tuple[str, bytes]]) -> list[int]:
    # raw bytes on task subjects: only the admin NATS user may (no service writes what it does not own)
    nc = await connect(e2e.client["nats_url"], name="e2e-poison", auth=e2e.nats_auth("admin"))
    try:
        js = nc.jetstream()
        return [(await js.publish(subject, data)).seq for subject, data in messages]
    finally:
        await nc.close()


async def _poison_kv(e2e: E2E) -> list[PoisonRecord]:
    nc = await connect(e2e.client["nats_url"], name="e2e-poison", auth=e2e.nats_auth("admin"))
    try:
        return await list_poison(nc.jetstream(), e2e.client["prefix"])
    finally:
        await nc.close()


async def _poison_rows(e2e: E2E) -> dict[int, str]:
    conn = await asyncpg.connect(e2e.stack.spec.database_url)
    try:
        return {r["seq"]: r["error"] for r in await conn.fetch("SELECT seq, error FROM poison_messages")}
    finally:
        await conn.close()


async def _task_rows(e2e: E2E, task_ids: list[str]) -> list[str]:
    conn = await asyncpg.connect(e2e.stack.spec.database_url)
    try:
        rows = await conn.fetch("SELECT task_id FROM tasks WHERE task_id = ANY($1::text[])", task_ids)
        return [r["task_id"] for r in rows]
    finally:
        await conn.close()


def _dead(e2e: E2E) -> list[str]:
    """The stack's processes that are gone, each with the end of its log."""
    state = e2e.stack.state
    assert state is not None
    gone: list[str] = []
    for proc in state.procs:
        try:
            os.kill(proc.pid, 0)
        except ProcessLookupError:
            gone.append(f"{proc.name} died; its log ends:\n{Path(proc.log).read_text()[-2000:]}")
    return gone


def _normal_github_task_completes_with_its_comment(e2e: E2E, name: str) -> str:
    e2e.github.create_repo("acme", name, {"calc.py": "def add(a, b):\n    return a - b\n"})
    issue = e2e.github.create_issue("acme", name, "add() subtracts")
    token = e2e.script(FIX_TURNS[2:])
    lines = e2e.cli_json("submit", "--repo", f"acme/{name}", "--issue", str(issue), "--task", f"fix {token}")
    task_id: str = lines[0]["task_id"]
    e2e.wait_status(task_id, "COMPLETED", timeout=60)

    def comment() -> bool:
        return any(
            task_id in (c["body"] or "") and "COMPLETED" in (c["body"] or "")
            for c in e2e.github.state()["comments"]
            if not c["deleted"]
        )

    wait_until(comment, 30, f"the GitHub comment of {task_id} to show COMPLETED")
    return task_id


def test_deep_bad_utf8_and_direct_submissions_are_recorded_and_a_normal_task_completes(
    e2e: E2E, tmp_path: Path
) -> None:
    repo = make_demo_repo(tmp_path)
    turns = [
        {"text": "Thinking.", "tool_uses": [{"name": "bash", "input": {"command": "sleep 2"}}]},
        *FIX_TURNS,
    ]
    token = e2e.script(turns)
    running = e2e.cli_json("submit", "--repo", str(repo), "--task", f"fix it {token}")[0]["task_id"]
    e2e.wait_event(running, "tool_called")
    prefix = e2e.client["prefix"]

    invalid_id, poison_submit_id = str(ULID()), str(ULID())
    seqs = asyncio.run(
        _publish(
            e2e,
            [
                (task_subject(running, "milestone", prefix), _deep_event(running)),
                (task_subject(running, "milestone", prefix), _bad_utf8_event(running)),
                # Decodes, but breaks a submission rule: the runner fails it.
                (
                    task_subject(invalid_id, "task_submitted", prefix),
                    json.dumps(
                        _submitted_wire(invalid_id, e2e.stack.spec.user, description="nul \u0000 inside")
                    ).encode(),
                ),
                # Does not decode (max_turns below zero): poison for every reader.
                (
                    task_subject(poison_submit_id, "task_submitted", prefix),
                    json.dumps(_submitted_wire(poison_submit_id, max_turns=-5)).encode(),
                ),
                # A subject whose task id is not a ULID.
                (
                    task_subject("not-a-ulid", "task_submitted", prefix),
                    json.dumps(_submitted_wire("not-a-ulid")).encode(),
                ),
            ],
        )
    )
    deep_seq, utf8_seq, _, poison_submit_seq, loose_seq = seqs

    # The running task never trips on the two bad events in its log.
    assert e2e.cli("watch", running).returncode == 0
    e2e.wait_status(running, "COMPLETED", timeout=60)

    failed = e2e.wait_status(invalid_id, "FAILED", timeout=30)
    assert failed["error_code"] == "INVALID_SUBMISSION", failed
    assert "description" in failed["error_message"]

    _normal_github_task_completes_with_its_comment(e2e, "poisoned")

    rows = wait_until(
        lambda: (
            (r := asyncio.run(_poison_rows(e2e)))
            and {deep_seq, utf8_seq, poison_submit_seq, loose_seq} <= set(r)
            and r
        ),
        30,
        "query to record the four poison messages",
    )
    assert "nested too deeply" in rows[deep_seq]
    assert "invalid UTF-8" in rows[utf8_seq]
    assert "$.max_turns" in rows[poison_submit_seq]
    assert "not a ULID" in rows[loose_seq]

    def kv_has_them() -> list[PoisonRecord] | None:
        found = asyncio.run(_poison_kv(e2e))
        fanout = {r.seq for r in found if r.reader == "fanout"}
        runner = {r.seq for r in found if r.reader == "runner"}
        wanted = {deep_seq, utf8_seq, poison_submit_seq, loose_seq}
        return found if wanted <= fanout and {poison_submit_seq, loose_seq} <= runner else None

    wait_until(kv_has_them, 30, "fanout and runner to record the poison messages")
    listed = e2e.cli_json("admin", "poison")
    by_reader: dict[str, set[int]] = {}
    for row in listed:
        by_reader.setdefault(row["reader"], set()).add(row["seq"])
    assert {deep_seq, utf8_seq, poison_submit_seq, loose_seq} <= by_reader["query"]
    assert {deep_seq, utf8_seq, poison_submit_seq, loose_seq} <= by_reader["fanout"]
    assert {poison_submit_seq, loose_seq} <= by_reader["runner"]
    assert asyncio.run(_task_rows(e2e, [poison_submit_id, "not-a-ulid"])) == []
    assert _dead(e2e) == []


_hostile_bytes = st.one_of(
    st.binary(max_size=300),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=15,
    ).map(lambda v: json.dumps(v).encode()),
)
_event_types = st.sampled_from(
    ["task_submitted", "milestone", "cancel_requested", "task_completed", "agent_turn", "nudge_requested"]
)


@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(messages=st.lists(st.tuples(_event_types, _hostile_bytes, st.booleans()), min_size=5, max_size=15))
def test_arbitrary_bytes_on_task_subjects_stop_no_service(
    e2e: E2E, messages: list[tuple[str, bytes, bool]]
) -> None:
    prefix = e2e.client["prefix"]
    victim = str(ULID())
    published = [
        (task_subject(victim if same_task else str(ULID()), kind, prefix), data)
        for kind, data, same_task in messages
    ]
    seqs = asyncio.run(_publish(e2e, published))
    assert len(seqs) == len(published)
    task_id = _normal_github_task_completes_with_its_comment(e2e, f"fuzz{ULID()!s}".lower()[:20])
    assert e2e.task(task_id)["status"] == "COMPLETED"
    assert _dead(e2e) == []
