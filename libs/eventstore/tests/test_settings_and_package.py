"""NatsSettings from the environment, the memory store's extras, and the package's exports."""

from __future__ import annotations

from typing import Any

import pytest

import bgagent_eventstore
from bgagent_contracts.subjects import DEFAULT_PREFIX, DEFAULT_STREAM
from bgagent_eventstore import MemoryEventStore, NatsSettings


def test_settings_defaults_when_nothing_is_set() -> None:
    s = NatsSettings.from_env({})
    assert (s.url, s.stream, s.prefix, s.replicas, s.max_age_days) == (
        "nats://127.0.0.1:4222",
        DEFAULT_STREAM,
        DEFAULT_PREFIX,
        1,
        90.0,
    )


def test_settings_read_the_standard_names() -> None:
    s = NatsSettings.from_env(
        {
            "NATS_URL": "nats://nats:4222",
            "BGAGENT_STREAM": "TASKS_X",
            "BGAGENT_PREFIX": "acme.prod",
            "BGAGENT_STREAM_REPLICAS": "3",
            "BGAGENT_STREAM_MAX_AGE_DAYS": "30",
        }
    )
    assert (s.url, s.stream, s.prefix, s.replicas, s.max_age_days) == (
        "nats://nats:4222",
        "TASKS_X",
        "acme.prod",
        3,
        30.0,
    )


def test_the_nats_outage_budget_defaults_to_a_minute_and_stays_inside_the_duplicate_window() -> None:
    assert NatsSettings.from_env({}).outage_s == 60.0
    assert NatsSettings.from_env({"BGAGENT_NATS_OUTAGE_S": "5"}).outage_s == 5.0
    assert NatsSettings.from_env({"BGAGENT_NATS_OUTAGE_S": "0"}).outage_s == 0.0
    for bad in ("-1", "121"):
        with pytest.raises(ValueError, match="BGAGENT_NATS_OUTAGE_S"):
            NatsSettings.from_env({"BGAGENT_NATS_OUTAGE_S": bad})


@pytest.mark.parametrize("prefix", ["a.*", "", "a b"])
def test_settings_reject_a_bad_prefix(prefix: str) -> None:
    with pytest.raises(ValueError, match="invalid subject prefix"):
        NatsSettings.from_env({"BGAGENT_PREFIX": prefix})


def test_settings_are_frozen() -> None:
    s = NatsSettings.from_env({})
    with pytest.raises(AttributeError):
        s.url = "x"  # type: ignore[misc]


async def test_memory_store_lists_everything_in_stream_order(ev: Any) -> None:
    store = MemoryEventStore(prefix="acme")
    one, two = ev.new_id(), ev.new_id()
    await store.append(one, [ev.submitted(one)], expected_seq=0)
    await store.append(two, [ev.submitted(two)], expected_seq=0)
    records = store.all()
    assert [r.seq for r in records] == [1, 2]
    assert [r.event.task_id for r in records] == [one, two]
    assert records[0].subject == f"acme.task.{one}.task_submitted"


def test_all_is_sorted_and_every_name_resolves() -> None:
    names = list(bgagent_eventstore.__all__)
    assert names == sorted(names, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n))
    assert [n for n in names if not hasattr(bgagent_eventstore, n)] == []
