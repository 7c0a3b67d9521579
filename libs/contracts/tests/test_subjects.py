"""Subject and name helpers."""

from __future__ import annotations

import pytest

from bgagent_contracts import subjects

TASK = "01JABCDEFGHJKMNPQRSTVWXYZ0"


def test_names_are_built_from_the_prefix() -> None:
    assert subjects.task_subject(TASK, "milestone") == f"bgagent.task.{TASK}.milestone"
    assert subjects.task_filter(TASK, "t1") == f"t1.task.{TASK}.*"
    assert subjects.all_tasks_filter("t1") == "t1.task.*.*"
    assert subjects.event_type_filter("task_submitted", "t1") == "t1.task.*.task_submitted"
    assert subjects.runner_consumer("acme.prod") == "acme_prod_runner"
    assert subjects.fanout_consumer("acme.prod") == "acme_prod_fanout"
    assert subjects.comments_bucket("acme.prod") == "acme_prod_comments"
    assert subjects.idempotency_bucket("acme.prod") == "acme_prod_idempotency"
    assert subjects.traces_bucket("acme.prod") == "acme_prod_traces"
    assert subjects.tokens_bucket("acme.prod") == "acme_prod_tokens"


def test_parse_subject_splits_a_task_subject() -> None:
    assert subjects.parse_subject(f"bgagent.task.{TASK}.task_failed") == (TASK, "task_failed")
    assert subjects.parse_subject(f"a.b.task.{TASK}.milestone", prefix="a.b") == (TASK, "milestone")


@pytest.mark.parametrize(
    "subject",
    [
        f"other.task.{TASK}.milestone",  # another prefix
        f"bgagent.tasks.{TASK}.milestone",  # not the task space
        f"bgagent.task.{TASK}",  # no event type
        f"bgagent.task.{TASK}.milestone.extra",  # too many tokens
        "bgagent.task..milestone",  # empty id
        f"bgagent.task.{TASK}.",  # empty type
        "bgagent.task",
        "",
    ],
)
def test_parse_subject_rejects_what_is_not_a_task_subject(subject: str) -> None:
    with pytest.raises(ValueError, match="not a task subject"):
        subjects.parse_subject(subject)


def test_parse_subject_is_bound_to_its_prefix() -> None:
    with pytest.raises(ValueError, match="not a task subject"):
        subjects.parse_subject(f"bgagent.task.{TASK}.milestone", prefix="t1")


@pytest.mark.parametrize("value", [TASK, "00000000000000000000000000", "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"])
def test_is_task_id_accepts_canonical_ulids(value: str) -> None:
    assert subjects.is_task_id(value)


@pytest.mark.parametrize(
    "value",
    [
        TASK.lower(),  # not canonical upper case
        TASK[:-1],  # 25 characters
        TASK + "0",  # 27 characters
        "01JABCDEFGHJKMNPQRSTVWXYZI",  # I is not Crockford
        "01JABCDEFGHJKMNPQRSTVWXYZL",  # L neither
        "01JABCDEFGHJKMNPQRSTVWXYZO",  # O neither
        "01JABCDEFGHJKMNPQRSTVWXYZU",  # U neither
        "01JABCDEFGHJKMNPQRSTVWXY.*",  # wildcard tokens
        "",
    ],
)
def test_is_task_id_rejects_anything_else(value: str) -> None:
    assert not subjects.is_task_id(value)


@pytest.mark.parametrize("prefix", ["bgagent", "t1a2b3c4", "acme.prod", "a-b_c.d"])
def test_check_prefix_accepts_plain_tokens(prefix: str) -> None:
    assert subjects.check_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["", "a..b", ".a", "a.", "a.*", "a.>", "a b", "ä"])
def test_check_prefix_rejects_wildcards_and_empty_tokens(prefix: str) -> None:
    with pytest.raises(ValueError, match="invalid subject prefix"):
        subjects.check_prefix(prefix)
