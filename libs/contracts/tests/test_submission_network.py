"""The network rule of a submission: ``network: true`` only where the caller allows it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from bgagent_contracts import InvalidSubmissionError, TaskStarted, TaskSubmitted
from bgagent_contracts.codec import decode_event, encode_event
from bgagent_contracts.submission import NETWORK_REFUSED, check_submission, check_submitted


def _submitted(**fields: Any) -> TaskSubmitted:
    return TaskSubmitted(
        task_id="01J00000000000000000000000",
        event_id="01J00000000000000000000001",
        ts=datetime(2025, 1, 1, tzinfo=UTC),
        actor="admission",
        user_id="alice",
        repo="acme/widgets",
        description="fix it",
        **fields,
    )


@pytest.mark.parametrize("network", [None, False])
def test_no_network_is_the_default_and_always_allowed(network: bool | None) -> None:
    checked = check_submission(repo="acme/widgets", description="fix it", network=network)
    assert checked.network is False


def test_network_is_refused_unless_the_caller_allows_it() -> None:
    with pytest.raises(InvalidSubmissionError) as info:
        check_submission(repo="acme/widgets", description="fix it", network=True)
    assert info.value.field == "network"
    assert info.value.problem == NETWORK_REFUSED


def test_network_is_granted_where_the_caller_allows_it() -> None:
    checked = check_submission(repo="acme/widgets", description="fix it", network=True, allow_network=True)
    assert checked.network is True


def test_a_recorded_submission_is_rechecked_against_the_readers_own_setting() -> None:
    asked = _submitted(network=True)
    with pytest.raises(InvalidSubmissionError) as info:
        check_submitted(asked)
    assert info.value.field == "network"
    assert check_submitted(asked, allow_network=True).network is True
    assert check_submitted(_submitted()).network is False


def test_an_older_task_submitted_without_the_field_decodes_with_network_off() -> None:
    event = _submitted()
    raw = msgspec.json.decode(encode_event(event))
    raw.pop("network", None)
    decoded = decode_event(msgspec.json.encode(raw))
    assert isinstance(decoded, TaskSubmitted)
    assert decoded.network is False


def test_task_started_records_the_sandbox_and_network_and_older_ones_decode_without() -> None:
    started = TaskStarted(
        task_id="01J00000000000000000000000",
        event_id="01J00000000000000000000002",
        ts=datetime(2025, 1, 1, tzinfo=UTC),
        actor="runner",
        attempt=1,
        runner_id="r1",
        sandbox="bwrap",
        network=False,
    )
    again = decode_event(encode_event(started))
    assert isinstance(again, TaskStarted)
    assert (again.sandbox, again.network) == ("bwrap", False)
    raw = msgspec.json.decode(encode_event(started))
    del raw["sandbox"], raw["network"]
    older = decode_event(msgspec.json.encode(raw))
    assert isinstance(older, TaskStarted)
    assert (older.sandbox, older.network) == (None, None)
