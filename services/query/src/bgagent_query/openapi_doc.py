"""The query API as OpenAPI 3.1: every route, its parameters, its answers and their examples
(hand-declared, served at /schema/openapi.json; ``bgagent_web.openapi`` builds the pieces)."""

from __future__ import annotations

from importlib.metadata import version

from bgagent_contracts import Status
from bgagent_contracts.submission import MAX_REPO_CHARS
from bgagent_web import REQUEST_ID_HEADER
from bgagent_web import openapi as oa

from .limits import (
    APPROVALS_DEFAULT_LIMIT,
    APPROVALS_MAX_LIMIT,
    EVENTS_DEFAULT_LIMIT,
    EVENTS_MAX_LIMIT,
    MAX_SEQ,
    TASKS_DEFAULT_LIMIT,
    TASKS_MAX_LIMIT,
)

_EXAMPLE_APPROVAL = {
    "task_id": oa.EXAMPLE_TASK_ID,
    "user_id": "alice",
    "repo": "acme/widgets",
    "request_id": "01JBGAGENTEXAMP1E000000010",
    "tool_name": "bash",
    "input_preview": "git push origin main",
    "rule_ids": ["push_to_protected_branch"],
    "severity": "medium",
    "deadline": "2025-01-02T09:36:00Z",
    "requested_at": "2025-01-02T09:31:00Z",
    "attempt": 1,
    "waiting": True,
}
_EXAMPLE_POLICIES = {
    "repo": "acme/widgets",
    "hard_deny": [
        {"rule_id": "rm_slash", "severity": "critical", "category": "destructive", "summary": "rm -rf /"}
    ],
    "hard_gate": [
        {
            "rule_id": "push_to_protected_branch",
            "severity": "medium",
            "category": "git",
            "approval_timeout_s": 300,
            "summary": "git push to main, master, prod or release/*",
        }
    ],
}


# --- the OpenAPI document -------------------------------------------------------------------------

_READ_ERRORS = {401: ["UNAUTHORIZED"], 431: ["HEADERS_TOO_LARGE"]}


def _min_seq_param() -> oa.JSON:
    return oa.query_param(
        "min_seq",
        {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
        "Read-your-writes: wait (bounded) until the projection has reached this stream sequence "
        "(admission's `meta.seq`); 503 PROJECTION_LAG if it does not in time.",
    )


def openapi_document() -> oa.JSON:
    """The query API as OpenAPI 3.1 (served at /schema/openapi.json)."""
    tasks_page = oa.obj(
        {
            "data": {"type": "array", "items": oa.ref("Task")},
            "pagination": oa.obj(
                {
                    "next_before": oa.nullable(
                        {"type": "string", "description": "the `before` of the next page; null on the last"}
                    ),
                    "has_more": {"type": "boolean"},
                }
            ),
        }
    )
    events_page = oa.obj(
        {
            "data": {"type": "array", "items": oa.ref("Event")},
            "pagination": oa.obj(
                {
                    "next_after": oa.nullable(
                        {
                            "type": "integer",
                            "minimum": 1,
                            "description": "the last seq of this page (null when it is empty): poll from it",
                        }
                    ),
                    "has_more": {"type": "boolean"},
                }
            ),
        }
    )
    one_task = oa.obj({"data": oa.ref("Task")})
    approval = oa.obj(
        {
            "task_id": {"type": "string"},
            "user_id": {"type": "string"},
            "repo": {"type": "string"},
            "request_id": {"type": "string"},
            "tool_name": {"type": "string"},
            "input_preview": {
                "type": "string",
                "description": "sanitised by the runner: control and ANSI characters stripped, secrets "
                "redacted; still untrusted text",
            },
            "rule_ids": {"type": "array", "items": {"type": "string"}},
            "severity": oa.nullable({"type": "string"}),
            "deadline": oa.nullable(oa.TIME),
            "requested_at": oa.TIME,
            "attempt": {"type": "integer", "minimum": 0},
            "waiting": {
                "type": "boolean",
                "description": "the task waits on this request now (false: an earlier attempt's request, "
                "still decidable)",
            },
        }
    )
    approvals_page = oa.obj(
        {
            "data": {"type": "array", "items": approval},
            "pagination": oa.obj({"has_more": {"type": "boolean"}}),
        }
    )
    rule_schema = {"type": "string"}
    policies_doc = oa.obj(
        {
            "data": oa.obj(
                {
                    "repo": {"type": "string"},
                    "hard_deny": {
                        "type": "array",
                        "items": oa.obj(
                            {
                                "rule_id": rule_schema,
                                "severity": oa.nullable(rule_schema),
                                "category": oa.nullable(rule_schema),
                                "summary": rule_schema,
                            }
                        ),
                    },
                    "hard_gate": {
                        "type": "array",
                        "items": oa.obj(
                            {
                                "rule_id": rule_schema,
                                "severity": oa.nullable(rule_schema),
                                "category": oa.nullable(rule_schema),
                                "approval_timeout_s": oa.nullable({"type": "integer", "minimum": 30}),
                                "summary": rule_schema,
                            }
                        ),
                    },
                }
            )
        }
    )
    task_links = {
        "GetTask": {"operationId": "getTask", "parameters": {"task_id": "$response.body#/data/0/task_id"}},
        "ListEvents": {
            "operationId": "listEvents",
            "parameters": {"task_id": "$response.body#/data/0/task_id"},
        },
    }
    operations = [
        oa.Operation(
            "GET",
            "/v1/tasks",
            "listTasks",
            "List tasks, newest first",
            {
                "200": oa.response(
                    "A page of tasks (a user's own; an admin's: everyone's)",
                    tasks_page,
                    example={
                        "data": [oa.example_task(4)],
                        "pagination": {"next_before": oa.EXAMPLE_TASK_ID, "has_more": True},
                    },
                    links=task_links,
                ),
                **oa.errors(
                    {400: ["VALIDATION_ERROR"], **_READ_ERRORS, 503: ["SERVICE_UNAVAILABLE"]},
                ),
            },
            tags=["tasks"],
            parameters=[
                oa.query_param(
                    "status",
                    {
                        "type": "array",
                        "items": {"enum": [s.value for s in Status]},
                        "maxItems": len(Status),
                    },
                    "Only tasks in one of these statuses (comma-separated; case does not matter).",
                    style="form",
                    explode=False,
                ),
                oa.query_param(
                    "repo",
                    {"type": "string", "maxLength": MAX_REPO_CHARS, "pattern": r"^[^\x00-\x1f\x7f-\x9f]*$"},
                    "Only tasks of this repository (exact match); empty means all.",
                ),
                oa.query_param(
                    "limit",
                    {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": TASKS_MAX_LIMIT,
                        "default": TASKS_DEFAULT_LIMIT,
                    },
                    "Page size.",
                ),
                oa.query_param(
                    "before",
                    {"type": "string", "pattern": f"^(?:{oa.TASK_ID_PATTERN.strip('^$')})?$"},
                    "Keyset cursor: tasks older than this task id (the previous page's `next_before`); "
                    "empty means from the newest.",
                ),
            ],
        ),
        oa.Operation(
            "GET",
            "/v1/tasks/{task_id}",
            "getTask",
            "One task",
            {
                "200": oa.response(
                    "The task, with live turn and cost",
                    one_task,
                    example={"data": oa.example_task(4)},
                    links={
                        "ListEvents": {
                            "operationId": "listEvents",
                            "parameters": {"task_id": "$response.body#/data/task_id"},
                        }
                    },
                ),
                **oa.errors(
                    {
                        400: ["VALIDATION_ERROR"],
                        404: ["NOT_FOUND"],
                        **_READ_ERRORS,
                        503: ["SERVICE_UNAVAILABLE", "PROJECTION_LAG"],
                    }
                ),
            },
            description="Someone else's task is 404, the same answer as a task that does not exist.",
            tags=["tasks"],
            parameters=[oa.TASK_ID_PARAM, _min_seq_param()],
        ),
        oa.Operation(
            "GET",
            "/v1/tasks/{task_id}/events",
            "listEvents",
            "A task's events in stream order",
            {
                "200": oa.response(
                    "A page of events after `after`",
                    events_page,
                    example={
                        "data": oa.example_events(),
                        "pagination": {"next_after": 104, "has_more": False},
                    },
                ),
                **oa.errors(
                    {
                        400: ["VALIDATION_ERROR"],
                        404: ["NOT_FOUND"],
                        **_READ_ERRORS,
                        503: ["SERVICE_UNAVAILABLE", "PROJECTION_LAG"],
                    }
                ),
            },
            tags=["tasks"],
            parameters=[
                oa.TASK_ID_PARAM,
                oa.query_param(
                    "after",
                    {"type": "integer", "minimum": 0, "maximum": MAX_SEQ, "default": 0},
                    "Only events with a larger seq (the previous page's `next_after`).",
                ),
                oa.query_param(
                    "limit",
                    {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": EVENTS_MAX_LIMIT,
                        "default": EVENTS_DEFAULT_LIMIT,
                    },
                    "Page size.",
                ),
                _min_seq_param(),
            ],
        ),
        oa.Operation(
            "GET",
            "/v1/tasks/{task_id}/events/stream",
            "streamEvents",
            "A task's events live, as Server-Sent Events",
            {
                "200": {
                    "description": "`text/event-stream`: one message per event (`id:` its seq, `event:` its "
                    "type, `data:` the event as in `listEvents`), comment lines (`: ping`) while idle; "
                    "the stream ends after the terminal event",
                    "headers": {REQUEST_ID_HEADER: {"$ref": "#/components/headers/RequestId"}},
                    "content": {
                        "text/event-stream": {
                            "schema": {"type": "string"},
                            "example": 'id: 101\r\nevent: task_submitted\r\ndata: {"seq":101,…}\r\n\r\n',
                        }
                    },
                },
                **oa.errors(
                    {
                        400: ["VALIDATION_ERROR"],
                        404: ["NOT_FOUND"],
                        **_READ_ERRORS,
                        503: ["SERVICE_UNAVAILABLE", "PROJECTION_LAG"],
                    }
                ),
            },
            description="Catches up from the read model, then follows the event stream live with no gap "
            "and no duplicate. Resume with the `Last-Event-ID` header (what EventSource sends on "
            "reconnect; it wins over `after`) or `after`. Someone else's task is 404 before any stream "
            "starts; 503 when the server holds too many open streams.",
            tags=["tasks"],
            parameters=[
                oa.TASK_ID_PARAM,
                oa.query_param(
                    "after",
                    {"type": "integer", "minimum": 0, "maximum": MAX_SEQ, "default": 0},
                    "Only events with a larger seq.",
                ),
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "description": "The last seq received: resume after it.",
                    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
                },
                _min_seq_param(),
            ],
        ),
        oa.Operation(
            "GET",
            "/v1/approvals",
            "listApprovals",
            "Approval requests waiting for a decision",
            {
                "200": oa.response(
                    "Open requests of live tasks, oldest first (a user's own; an admin's: everyone's)",
                    approvals_page,
                    example={"data": [_EXAMPLE_APPROVAL], "pagination": {"has_more": False}},
                ),
                **oa.errors({400: ["VALIDATION_ERROR"], **_READ_ERRORS, 503: ["SERVICE_UNAVAILABLE"]}),
            },
            description="From the read model (a moment behind the event stream). Decide one with "
            "admission's `POST /v1/tasks/{task_id}/approvals/{request_id}`. Requests of tasks being "
            "cancelled are left out.",
            tags=["approvals"],
            parameters=[
                oa.query_param(
                    "status",
                    {"enum": ["pending"], "default": "pending"},
                    "Only `pending` (undecided requests) is supported.",
                ),
                oa.query_param(
                    "limit",
                    {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": APPROVALS_MAX_LIMIT,
                        "default": APPROVALS_DEFAULT_LIMIT,
                    },
                    "At most this many requests.",
                ),
            ],
        ),
        oa.Operation(
            "GET",
            "/v1/repos/{owner}/{name}/policies",
            "listPolicies",
            "The policy rules that apply to a repository's tasks",
            {
                "200": oa.response(
                    "The hard-deny rules (never allowed) and the hard-gate rules (need an approval)",
                    policies_doc,
                    example={"data": _EXAMPLE_POLICIES},
                ),
                **oa.errors({400: ["VALIDATION_ERROR"], 404: ["NOT_FOUND"], **_READ_ERRORS}),
            },
            description="The rules the runners' policy engine loads (the starter set plus the operator's "
            "`BGAGENT_POLICY_DIR`, minus `BGAGENT_POLICY_DISABLE`). Rules per repository are not "
            "configured yet, so every repository gets the same list. An owner or name holding a `/` "
            "(even percent-encoded) makes another path: 404.",
            tags=["approvals"],
            parameters=[
                oa.path_param("owner", {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,100}$"}, "Owner."),
                oa.path_param("name", {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,100}$"}, "Name."),
            ],
        ),
        *oa.health_operations(),
    ]
    return oa.document(
        title="bgagent query",
        version=version("bgagent-query"),
        description="The read side: tasks and their events from the Postgres read models. Every /v1 route "
        "needs a bearer token; a user sees their own tasks, an admin all. Bad parameters are 400 with "
        "a message that starts with the parameter's name.",
        operations=operations,
    )
