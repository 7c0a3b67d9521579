"""The writer table (``bgagent_contracts.writers``) says what DESIGN §3 says, and docs/architecture.md too.

The NATS permissions are generated from this table, so a drift here would be a drift in what the
server lets each service publish.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bgagent_contracts import EVENT_TYPE_NAMES
from bgagent_contracts.writers import ACCESS, WRITERS, Bucket, Durable, Role, writers_of

ROOT = Path(__file__).resolve().parents[3]

# DESIGN §3 "Who writes what", transcribed. The reconciler row says ``task_failed`` (RUNNER_LOST /
# STRANDED) and "re-enqueue of a lost task": bgagent records the re-enqueue as ``task_requeued`` and
# the loss as ``runner_lost`` (ADR 0006). The "admission (later)" row names events that do not exist yet.
DESIGN_WRITERS = {
    "admission": {
        "task_submitted",
        "cancel_requested",
        "task_cancelled",
        "nudge_requested",
        "approval_decided",
    },
    "runner": {
        "task_started",
        "workspace_ready",
        "milestone",
        "agent_turn",
        "tool_called",
        "tool_result",
        "cost_updated",
        "nudge_acknowledged",
        "policy_denied",
        "approval_requested",
        "approval_expired",
        "agent_finished",
        "pr_opened",
        "pr_updated",
        "review_posted",
        "trace_stored",
        "task_completed",
        "task_failed",
        "task_cancelled",
        "task_timed_out",
    },
    "query": set(),
    "fanout": set(),
    "reconciler": {"runner_lost", "task_requeued", "task_failed"},
}


def test_the_table_is_design_section_3() -> None:
    assert {role.value: set(types) for role, types in WRITERS.items()} == DESIGN_WRITERS


def test_every_event_type_has_a_writer_and_the_table_names_only_event_types() -> None:
    written = set().union(*WRITERS.values())
    assert written == EVENT_TYPE_NAMES
    assert {t for t in EVENT_TYPE_NAMES if not writers_of(t)} == set()


def test_only_cancellation_and_failure_are_written_by_two_services() -> None:
    shared = {t for t in EVENT_TYPE_NAMES if len(writers_of(t)) > 1}
    assert shared == {"task_cancelled", "task_failed"}
    assert writers_of("task_failed") == {Role.RUNNER, Role.RECONCILER}
    assert writers_of("task_submitted") == {Role.ADMISSION}
    assert writers_of("task_completed") == {Role.RUNNER}
    assert writers_of("no_such_event") == frozenset()


def test_readers_write_no_event_and_each_service_keeps_to_its_own_state() -> None:
    assert ACCESS[Role.QUERY].appends == frozenset()
    assert ACCESS[Role.FANOUT].appends == frozenset()
    assert ACCESS[Role.QUERY].follows
    assert (ACCESS[Role.RUNNER].durable, ACCESS[Role.FANOUT].durable) == (Durable.RUNNER, Durable.FANOUT)
    assert ACCESS[Role.ADMISSION].kv == {Bucket.IDEMPOTENCY}
    assert ACCESS[Role.FANOUT].kv == {Bucket.COMMENTS}
    assert ACCESS[Role.RUNNER].object_stores == {Bucket.TRACES}
    # heartbeats: runners write them, the reconciler only reads them
    assert {r for r, a in ACCESS.items() if Bucket.HEARTBEATS in a.kv} == {Role.RUNNER}
    assert {r for r, a in ACCESS.items() if Bucket.HEARTBEATS in a.kv_reads} == {Role.RECONCILER}
    assert ACCESS[Role.RECONCILER].durable is None
    assert ACCESS[Role.RECONCILER].inspects == {Durable.RUNNER}
    # the poison bucket is shared, but each reader writes only its own keys
    assert {r for r, a in ACCESS.items() if Bucket.POISON in a.kv_own_keys} == {Role.RUNNER, Role.FANOUT}
    assert all(Bucket.POISON not in a.kv for a in ACCESS.values())
    # the only live (core NATS) subscriptions: the runner's cancel watch and its approval wait
    assert {r: set(a.listens) for r, a in ACCESS.items() if a.listens} == {
        Role.RUNNER: {"cancel_requested", "approval_decided"}
    }
    # the managed API tokens: the HTTP services read and watch them; no service writes them (admin does)
    assert {r for r, a in ACCESS.items() if Bucket.TOKENS in a.kv_reads} == {Role.ADMISSION, Role.QUERY}
    assert all(Bucket.TOKENS not in a.kv | a.kv_own_keys for a in ACCESS.values())


def test_names_follow_the_prefix() -> None:
    assert Bucket.POISON.bucket_name("acme.prod") == "acme_prod_poison"
    assert Bucket.TRACES.bucket_name("bgagent") == "bgagent_traces"
    assert Bucket.TOKENS.bucket_name("acme.prod") == "acme_prod_tokens"
    assert Durable.RUNNER.consumer_name("acme.prod") == "acme_prod_runner"
    assert Durable.FANOUT.consumer_name("bgagent") == "bgagent_fanout"


def _table_rows(text: str, heading: str) -> dict[str, set[str]]:
    """``| writer | events |`` rows after ``heading``: first cell → backticked names in the second."""
    section = text[text.index(heading) :]
    rows: dict[str, set[str]] = {}
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and line.startswith("|") and not set(cells[0]) <= {"-", " "}:
            rows[cells[0]] = set(re.findall(r"`([a-z_]+)`", cells[1]))
    return rows


def test_design_md_says_the_same_when_it_is_beside_the_repository() -> None:
    design = ROOT.parent / "shared" / "DESIGN.md"
    if not design.exists():
        pytest.skip(f"{design} is not here (it lives beside the repository, not in it)")
    rows = _table_rows(design.read_text(), "**Who writes what**")
    assert rows["admission"] == DESIGN_WRITERS["admission"]
    assert rows["runner"] == DESIGN_WRITERS["runner"]


def test_the_writer_table_in_docs_architecture_is_this_table() -> None:
    rows = _table_rows((ROOT / "docs" / "architecture.md").read_text(), "## Who writes what")
    assert {role: rows.get(role) for role in DESIGN_WRITERS} == {
        role.value: set(types) for role, types in WRITERS.items()
    }
