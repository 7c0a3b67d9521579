"""Schemathesis against admission and query running as real processes (real NATS and PostgreSQL).

Each service is tested from the OpenAPI document it serves, with schemathesis' engine (what its
CLI runs, used here as a library): the examples of the document, the coverage phase (boundary
values and every kind of invalid value for each parameter and body field), random positive and
negative data, and the stateful phase along the documented links (a created task → cancel /
nudge it; a listed task → get it, list its events). Once with a valid bearer token, once with an
unknown one. What must hold, for every request: no 5xx, every status documented for the route,
every response (body, content type, headers) as the document describes it, and no route that
answers without the token.

Bounded and reproducible: a fixed seed, a fixed number of examples per operation, no example
database, one worker. A valid ``min_seq`` larger than 1 is sent as 1 (see ``_bounded_min_seq``).

(Schemathesis' pytest integration, ``schemathesis.pytest.from_fixture``, does not run on pytest 9
with schemathesis 4.32: it sets ``node._nodeid``, which pytest 9 no longer has.)
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
import schemathesis.hooks
from schemathesis import Case
from schemathesis.engine import Status, events, from_schema

from .conftest import E2E

pytestmark = pytest.mark.e2e

SEED = 20260611
EXAMPLES = 60
"""Random examples per operation in the fuzzing phase (examples and coverage come on top)."""
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "ignored_auth",
    "missing_required_header",
    "use_after_free",
    "ensure_resource_availability",
]
"""Not checked: positive_data_acceptance (cross-field rules, e.g. "a new_task needs an issue or a
description", and whether a local path exists are in the descriptions, not the schemas) and
negative_data_rejection (query treats an empty parameter as absent and ignores unknown ones)."""
BAD_TOKEN = "not-a-known-token"
MAX_SEQ = 2**63 - 1


@dataclass
class Report:
    """What one engine run saw: statuses per (operation, method sent), problems, phases run."""

    statuses: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    phases: Counter[str] = field(default_factory=Counter)

    def add_problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)


def _config(base_url: str, token: str) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": base_url,
            "headers": {"Authorization": f"Bearer {token}"},
            "workers": 1,
            "request-timeout": 15,
            "generation": {"max-examples": EXAMPLES, "database": "none", "mode": "all"},
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        }
    )


def _record(report: Report, event: events.ScenarioFinished) -> None:
    report.phases[str(event.phase)] += 1
    recorder = event.recorder
    for case_id, interaction in recorder.interactions.items():
        if interaction.response is not None:
            label = recorder.cases[case_id].value.operation.label
            report.statuses[(label, interaction.request.method, interaction.response.status_code)] += 1
    for checks in recorder.checks.values():
        for check in checks:
            if check.status == Status.FAILURE and check.failure_info is not None:
                info = check.failure_info
                report.add_problem(f"{check.name}: {info.failure.title}\n{info.failure}\n{info.code_sample}")


def _bounded_min_seq(ctx: Any, case: Case, kwargs: dict[str, Any]) -> None:
    """A valid ``min_seq`` beyond the projection makes query wait up to its bound (5 s here) by
    design, then answer 503 PROJECTION_LAG (services/query/tests/test_api.py covers both). Such a
    value is sent as 1 (projected: see ``projected``); every other value goes out unchanged."""
    value = case.query.get("min_seq") if case.query else None
    if isinstance(value, int | str) and str(value).isdigit() and 1 < int(value) <= MAX_SEQ:
        case.query["min_seq"] = 1


STREAM_PATH = "/v1/tasks/{task_id}/events/stream"
"""Not fuzzed: a valid request opens a live SSE stream that lasts until the task ends, which would
hold the engine. Its parameters, 400/401/404/503 and the stream itself are tested over a real
socket in services/query/tests/test_sse.py."""


def _fuzz(base_url: str, token: str) -> Report:
    schema = schemathesis.openapi.from_url(f"{base_url}/schema/openapi.json", config=_config(base_url, token))
    schema = schema.exclude(path=STREAM_PATH)
    report = Report()
    schemathesis.hook("before_call")(_bounded_min_seq)  # every phase's requests pass through case.call
    try:
        _execute(schema, report)
    finally:
        schemathesis.hooks.unregister(_bounded_min_seq)
    return report


def _execute(schema: Any, report: Report) -> None:
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            _record(report, event)
        elif isinstance(event, events.NonFatalError | events.FatalError):
            report.add_problem(f"engine error: {event!r}")
        elif isinstance(event, events.EngineFinished):
            for failure in event.failures:
                report.add_problem(f"after the run: {failure.title}\n{failure}")


@pytest.fixture(scope="module")
def projected(e2e: E2E) -> None:
    """At least one task submitted and projected, so ``min_seq`` 1 never waits."""
    auth = {"Authorization": f"Bearer {e2e.client['token']}"}
    created = httpx.post(
        e2e.client["api_url"] + "/v1/tasks",
        json={"repo": "acme/fuzz", "description": "fuzz seed"},
        headers=auth,
        timeout=10,
    )
    assert created.status_code == 201, created.text
    task_id, seq = created.json()["data"]["task_id"], created.json()["meta"]["seq"]
    read = httpx.get(
        f"{e2e.client['query_url']}/v1/tasks/{task_id}", params={"min_seq": seq}, headers=auth, timeout=15
    )
    assert read.status_code == 200, read.text


def _run(e2e: E2E, service: str, token: str) -> Report:
    base_url = e2e.client["api_url" if service == "admission" else "query_url"]
    start = time.monotonic()
    report = _fuzz(base_url, e2e.client["token"] if token == "valid" else BAD_TOKEN)
    print(f"\n{service}, {token} token: {time.monotonic() - start:.1f}s, scenarios {dict(report.phases)}")
    for (label, method, status), n in sorted(report.statuses.items()):
        print(f"  {label:36} sent as {method:7} {status}: {n}")
    assert report.problems == [], "\n\n".join(report.problems)
    assert {"examples", "coverage", "fuzzing", "stateful"} <= set(report.phases), report.phases
    return report


def _answers(report: Report) -> Counter[tuple[str, int]]:
    """(operation, status) for requests sent with the operation's own method."""
    out: Counter[tuple[str, int]] = Counter()
    for (label, method, status), n in report.statuses.items():
        if label.split(" ", 1)[0] == method:
            out[(label, status)] += n
    return out


@pytest.mark.parametrize("service", ["admission", "query"])
@pytest.mark.usefixtures("projected")
def test_a_known_token_gets_documented_answers_and_no_5xx(e2e: E2E, service: str) -> None:
    answers = _answers(_run(e2e, service, "valid"))
    # The fuzz got past validation and followed links to tasks that exist.
    if service == "admission":
        assert answers[("POST /v1/tasks", 201)] > 0
        acted = [("POST /v1/tasks/{task_id}/cancel", s) for s in (202, 409)]
        acted += [("POST /v1/tasks/{task_id}/nudges", s) for s in (202, 409)]
        assert sum(answers[key] for key in acted) > 0, answers
    else:
        assert answers[("GET /v1/tasks", 200)] > 0
        assert answers[("GET /v1/tasks/{task_id}", 200)] > 0, answers
        assert answers[("GET /v1/tasks/{task_id}/events", 200)] > 0, answers


@pytest.mark.parametrize("service", ["admission", "query"])
@pytest.mark.usefixtures("projected")
def test_an_unknown_token_gets_401_from_every_v1_route(e2e: E2E, service: str) -> None:
    answers = _answers(_run(e2e, service, "invalid"))
    behind = {(label, status) for label, status in answers if " /v1/" in label}
    assert behind
    assert {status for _, status in behind} == {401}, sorted(behind)
