"""OpenAPI 3.1 documents written next to the routes they describe, not inferred from signatures.

Litestar's generator cannot say what these services really do: admission decodes raw bodies
itself (so no request body would appear), every error leaves as our envelope (not Litestar's
``{status_code, detail}``), query parameters are parsed by hand, and the generator drops
``null`` from examples and replaces configured component schemas. So each service declares its
operations with the helpers here, ``document()`` assembles them, and ``schema_handlers()``
serves the result at ``/schema/openapi.json`` (JSON) and ``/schema`` (a Redoc page).
Tests check the document against OpenAPI 3.1, against the routes the app really has, and
(fuzzing) against the responses the services really send.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import Response, get

from bgagent_contracts import (
    Actor,
    Event,
    Milestone,
    Recorded,
    Status,
    TaskStarted,
    TaskSubmitted,
    TaskType,
    WorkspaceReady,
    event_type,
    fold_recorded,
)
from bgagent_contracts.subjects import task_subject
from bgagent_contracts.views import event_view, task_view

from .edge import MAX_HEADER_BYTES, MAX_HEADER_FIELD_BYTES
from .errors import CODES, REQUEST_ID_HEADER

JSON = dict[str, Any]

OPENAPI_VERSION = "3.1.0"
SCHEMA_PATH = "/schema"
BEARER = "bearer"
ERROR_SCHEMA = "Error"
TASK_ID_PATTERN = "^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$"
"""A ULID (Crockford base 32, 26 characters); lower case is accepted and upper-cased."""
MAX_SEQ = 2**63 - 1
"""Stream sequences fit a Postgres bigint; larger cursors are refused with 400."""


def ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: JSON) -> JSON:
    """``schema`` or null (JSON Schema 2020-12: ``type`` becomes a list)."""
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: Mapping[str, JSON], *, required: Iterable[str] | None = None, **extra: Any) -> JSON:
    """A closed object; every property is required unless ``required`` says otherwise."""
    names = list(properties) if required is None else list(required)
    return {
        "type": "object",
        "additionalProperties": False,
        "required": names,
        "properties": dict(properties),
        **extra,
    }


# --- shared schemas ---------------------------------------------------------------------------

STRING = {"type": "string"}
COUNT = {"type": "integer", "minimum": 0}
TIME = {"type": "string", "format": "date-time"}

TASK_SCHEMA: JSON = obj(
    {
        "task_id": {"type": "string", "description": "ULID; newer tasks sort after older ones"},
        "user_id": STRING,
        "status": {"enum": [s.value for s in Status]},
        "repo": STRING,
        "task_type": {"enum": [t.value for t in TaskType]},
        "issue_number": nullable({"type": "integer"}),
        "pr_number": nullable({"type": "integer"}),
        "description": nullable(STRING),
        "channel": STRING,
        "max_turns": {"type": "integer"},
        "max_budget_usd": nullable({"type": "number"}),
        "trace": {"type": "boolean"},
        "attempt": COUNT,
        "turn": COUNT,
        "cost_usd": {"type": "number", "minimum": 0},
        "input_tokens": COUNT,
        "output_tokens": COUNT,
        "branch": nullable(STRING),
        "pr_url": nullable(STRING),
        "result": nullable(STRING),
        "last_milestone": nullable(STRING),
        "current_step": nullable(STRING),
        "error_code": nullable(STRING),
        "error_message": nullable(STRING),
        "cancel_requested": {"type": "boolean"},
        "pending_nudges": COUNT,
        "pending_approval": nullable(STRING),
        "waiting_since": nullable(
            {**TIME, "description": "since when the task waits for a runner after its runner was lost"}
        ),
        "lost_attempts": {**COUNT, "description": "attempts whose runner was lost (runner_lost events)"},
        "created_at": TIME,
        "updated_at": nullable(TIME),
        "started_at": nullable(TIME),
        "completed_at": nullable(TIME),
        "duration_s": nullable({"type": "number"}),
        "last_event_type": nullable(STRING),
        "last_event_at": nullable(TIME),
        "last_seq": {**COUNT, "description": "stream sequence of the task's last event"},
        "queue_position": nullable(
            {"type": "integer", "minimum": 1, "description": "SUBMITTED tasks in query answers only"}
        ),
    },
    description="A task folded from its events (bgagent_contracts.views.task_view).",
)

EVENT_SCHEMA: JSON = obj(
    {
        "seq": {"type": "integer", "minimum": 1, "description": "stream sequence: the cursor for `after`"},
        "task_id": STRING,
        "type": STRING,
        "event": {
            "type": "object",
            "required": ["type", "task_id", "event_id", "ts", "actor"],
            "properties": {
                "type": STRING,
                "task_id": STRING,
                "event_id": STRING,
                "ts": TIME,
                "actor": STRING,
            },
            "description": "The event as stored; the other fields depend on its type (docs/architecture.md).",
        },
    },
    description="One stored event (bgagent_contracts.views.event_view).",
)

HEALTH_SCHEMA: JSON = obj({"status": {"enum": ["ok", "ready", "not ready"]}})


def error_schema() -> JSON:
    """The envelope every error leaves in; ``code`` is one of the registry's codes."""
    return obj(
        {
            "error": obj(
                {
                    "code": {"enum": sorted(CODES)},
                    "message": {
                        "type": "string",
                        "description": "For 400, starts with the offending parameter, header or field",
                    },
                    "request_id": {
                        "type": "string",
                        "description": f"Also in the {REQUEST_ID_HEADER} header; the logs carry it",
                    },
                }
            )
        },
        description="Every error response: a stable code (docs/errors.md), a message and the request id.",
    )


def shared_schemas() -> dict[str, JSON]:
    return {ERROR_SCHEMA: error_schema(), "Task": TASK_SCHEMA, "Event": EVENT_SCHEMA, "Health": HEALTH_SCHEMA}


# --- examples, made by the real views from real events ------------------------------------------

EXAMPLE_TASK_ID = "01JBGAGENTEXAMP1E000000000"
_T0 = datetime(2025, 1, 2, 9, 30, tzinfo=UTC)


def example_records() -> list[Recorded]:
    """A task's first events: submitted by alice, started, workspace ready, a milestone."""
    tid = EXAMPLE_TASK_ID
    events: list[Event] = [
        TaskSubmitted(
            task_id=tid,
            event_id="01JBGAGENTEXAMP1E000000001",
            ts=_T0,
            actor=Actor.ADMISSION,
            user_id="alice",
            repo="acme/widgets",
            issue_number=42,
            description="Fix the flaky test in tests/test_api.py",
            max_turns=50,
            max_budget_usd=2.5,
        ),
        TaskStarted(
            task_id=tid,
            event_id="01JBGAGENTEXAMP1E000000002",
            ts=_T0 + timedelta(seconds=1),
            actor=Actor.RUNNER,
            attempt=1,
            runner_id="runner-1",
        ),
        WorkspaceReady(
            task_id=tid,
            event_id="01JBGAGENTEXAMP1E000000003",
            ts=_T0 + timedelta(seconds=4),
            actor=Actor.RUNNER,
            attempt=1,
            branch=f"bgagent/{tid}",
            base_branch="main",
        ),
        Milestone(
            task_id=tid,
            event_id="01JBGAGENTEXAMP1E000000004",
            ts=_T0 + timedelta(seconds=9),
            actor=Actor.RUNNER,
            attempt=1,
            name="baseline_tests",
            detail="12 passed, 1 failed",
        ),
    ]
    return [
        Recorded(seq=seq, subject=task_subject(tid, event_type(e)), event=e)
        for seq, e in enumerate(events, start=101)
    ]


def example_task(events: int = 1, *, queue_position: int | None = None) -> JSON:
    """The task view after its first ``events`` example events."""
    state = fold_recorded(example_records()[:events])
    assert state is not None
    return task_view(state, queue_position=queue_position)


def example_events(after: int = 0) -> list[JSON]:
    return [event_view(r) for r in example_records() if r.seq > after]


# --- operations -------------------------------------------------------------------------------

_REQUEST_ID_RESPONSE_HEADER: JSON = {
    "description": "The caller's X-Request-Id when it is 1-128 visible ASCII characters, else a new id",
    "required": True,
    "schema": {"type": "string"},
}


def json_content(schema: JSON, *, example: Any = None) -> JSON:
    media: JSON = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def response(
    description: str, schema: JSON, *, example: Any = None, links: Mapping[str, JSON] | None = None
) -> JSON:
    """A JSON response; every response carries X-Request-Id."""
    out: JSON = {
        "description": description,
        "headers": {REQUEST_ID_HEADER: {"$ref": "#/components/headers/RequestId"}},
        "content": json_content(schema, example=example),
    }
    if links:
        out["links"] = dict(links)
    return out


_DEFAULT_MESSAGES = {
    "VALIDATION_ERROR": "limit: must be between 1 and 500, got 0",
    "UNAUTHORIZED": "missing or unknown bearer token: send 'Authorization: Bearer <token>'",
    "NOT_FOUND": "task 01J0000000000000000000000Z not found",
    "TASK_ALREADY_TERMINAL": "task 01J0000000000000000000000Z is already COMPLETED",
    "HEADERS_TOO_LARGE": f"headers: 9000 bytes in all; the limit is {MAX_HEADER_BYTES}",
}


def errors(codes_by_status: Mapping[int, Sequence[str]]) -> dict[str, JSON]:
    """Error responses: for each status, the codes this route can answer with (checked against
    the registry). The schema is the envelope with ``code`` narrowed to those codes."""
    out: dict[str, JSON] = {}
    for status, codes in sorted(codes_by_status.items()):
        for code in codes:
            known = CODES.get(code)
            if known is None or known.status != status:
                raise ValueError(
                    f"{status} {code}: not an error code of that status in bgagent_web.ERROR_CODES"
                )
        schema = {
            "allOf": [
                ref(ERROR_SCHEMA),
                {"properties": {"error": {"properties": {"code": {"enum": list(codes)}}}}},
            ]
        }
        first = codes[0]
        example = {
            "error": {
                "code": first,
                "message": _DEFAULT_MESSAGES.get(first, CODES[first].meaning),
                "request_id": "5f0c9d2e7a1b3c4d",
            }
        }
        lines = "; ".join(f"`{c}`: {CODES[c].meaning}" for c in codes)
        out[str(status)] = response(lines, schema, example=example)
    return out


def query_param(name: str, schema: JSON, description: str, **extra: Any) -> JSON:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
        **extra,
    }


def path_param(name: str, schema: JSON, description: str) -> JSON:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


TASK_ID_PARAM = path_param(
    "task_id",
    {"type": "string", "pattern": TASK_ID_PATTERN},
    "The task's id (a ULID; lower case is accepted).",
)


@dataclass(frozen=True)
class Operation:
    """One documented route. ``secured`` routes need the bearer token."""

    method: str
    path: str
    operation_id: str
    summary: str
    responses: Mapping[str, JSON]
    description: str = ""
    tags: Sequence[str] = ()
    parameters: Sequence[JSON] = ()
    request_body: JSON | None = None
    secured: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_openapi(self) -> JSON:
        out: JSON = {"operationId": self.operation_id, "summary": self.summary}
        if self.description:
            out["description"] = self.description
        if self.tags:
            out["tags"] = list(self.tags)
        if self.parameters:
            out["parameters"] = list(self.parameters)
        if self.request_body is not None:
            out["requestBody"] = self.request_body
        out["responses"] = dict(self.responses)
        out["security"] = [{BEARER: []}] if self.secured else []
        out.update(self.extra)
        return out


def health_operations() -> list[Operation]:
    """``/healthz`` and ``/readyz`` (open: no token)."""
    return [
        Operation(
            "GET",
            "/healthz",
            "healthz",
            "The process is up",
            {
                "200": response(
                    "Always, while the process serves HTTP", ref("Health"), example={"status": "ok"}
                )
            },
            tags=["health"],
            secured=False,
        ),
        Operation(
            "GET",
            "/readyz",
            "readyz",
            "The service's dependencies answer",
            {
                "200": response("Ready", ref("Health"), example={"status": "ready"}),
                "503": response(
                    "A dependency is not answering", ref("Health"), example={"status": "not ready"}
                ),
            },
            tags=["health"],
            secured=False,
        ),
    ]


def document(
    *,
    title: str,
    version: str,
    description: str,
    operations: Sequence[Operation],
    schemas: Mapping[str, JSON] | None = None,
) -> JSON:
    """The whole OpenAPI 3.1 document (plain JSON-ready dicts)."""
    paths: dict[str, JSON] = {}
    for op in operations:
        item = paths.setdefault(op.path, {})
        method = op.method.lower()
        if method in item:
            raise ValueError(f"{op.method} {op.path} is documented twice")
        item[method] = op.to_openapi()
    limits = (
        f"\n\nLimits: a header field may be {MAX_HEADER_FIELD_BYTES} bytes, all header fields together "
        f"{MAX_HEADER_BYTES} bytes (431 `HEADERS_TOO_LARGE`). Error codes: docs/errors.md."
    )
    doc: JSON = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version, "description": description + limits},
        "paths": paths,
        "components": {
            "schemas": {**shared_schemas(), **(schemas or {})},
            "headers": {"RequestId": _REQUEST_ID_RESPONSE_HEADER},
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from BGAGENT_API_TOKENS (`tok=user` or `tok=user:admin`).",
                }
            },
        },
    }
    copy: JSON = json.loads(json.dumps(doc))  # plain and independent: nothing shared with the declarations
    return copy


def documented_statuses(doc: JSON, method: str, path: str) -> set[int]:
    """The statuses ``method path`` documents (``path`` as written in the document)."""
    return {int(s) for s in doc["paths"][path][method.lower()]["responses"]}


_REDOC_PAGE = """<!DOCTYPE html>
<html>
  <head>
    <title>{title}</title>
    <meta charset="utf-8"/>
    <meta name="viewport" content="width=device-width, initial-scale=1">
  </head>
  <body>
    <redoc spec-url="{path}/openapi.json"></redoc>
    <script src="https://cdn.jsdelivr.net/npm/redoc@2/bundles/redoc.standalone.js"></script>
  </body>
</html>
"""


def schema_handlers(doc: JSON) -> list[Any]:
    """``GET /schema/openapi.json`` (the document) and ``GET /schema`` (a Redoc page), both open."""
    body = json.dumps(doc).encode()
    page = _REDOC_PAGE.format(title=doc["info"]["title"], path=SCHEMA_PATH).encode()

    @get(f"{SCHEMA_PATH}/openapi.json", include_in_schema=False, sync_to_thread=False)
    def openapi_json() -> Response[bytes]:
        return Response(body, media_type="application/vnd.oai.openapi+json")

    @get(SCHEMA_PATH, include_in_schema=False, sync_to_thread=False)
    def openapi_page() -> Response[bytes]:
        return Response(page, media_type="text/html; charset=utf-8")

    return [openapi_json, openapi_page]
