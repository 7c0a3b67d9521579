"""The admission API as OpenAPI 3.1: every route, its body, its answers and their examples
(hand-declared, served at /schema/openapi.json; ``bgagent_web.openapi`` builds the pieces)."""

from __future__ import annotations

from importlib.metadata import version

from bgagent_contracts import TaskType
from bgagent_contracts.decide import MAX_DENY_REASON_CHARS, MAX_NUDGE_CHARS
from bgagent_contracts.events import MAX_NUMBER
from bgagent_contracts.scopes import ALL_SESSION, KINDS, MAX_INITIAL_SCOPES, MAX_SCOPE_CHARS
from bgagent_contracts.submission import (
    BUDGET_RANGE_USD,
    DEFAULT_MAX_TURNS,
    MAX_DESCRIPTION_CHARS,
    MAX_REASON_CHARS,
    MAX_REPO_CHARS,
    MAX_TURNS_RANGE,
)
from bgagent_web import openapi as oa

from .ratelimit import DECISIONS_PER_MINUTE
from .requests import APPROVAL_TIMEOUT_RANGE_S, DEFAULT_APPROVAL_TIMEOUT_S

# --- the OpenAPI document -------------------------------------------------------------------------

_TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]*$"
"""Free text: no control characters but tab, newline and carriage return (CR/CRLF become LF)."""
_SLUG = r"^\s*[A-Za-z0-9._-]+/[A-Za-z0-9._-]+\s*$"
_SLUG_OR_LOCAL = (
    r"^\s*(?:[A-Za-z0-9._-]+/[A-Za-z0-9._-]+|(?:file://)?/[^\x00-\x1f\x7f-\x9f\u2028\u2029]*)\s*$"
)
_BODY_ERRORS = {413: ["PAYLOAD_TOO_LARGE"], 415: ["UNSUPPORTED_MEDIA_TYPE"]}
_EDGE_ERRORS = {401: ["UNAUTHORIZED"], 431: ["HEADERS_TOO_LARGE"], 503: ["SERVICE_UNAVAILABLE"]}


def _create_body(local_repos: bool) -> oa.JSON:
    low, high = MAX_TURNS_RANGE
    number = {"type": "integer", "minimum": 1, "maximum": MAX_NUMBER}
    repo_rule = "`owner/name` (letters, digits, `.`, `_`, `-`; neither part `.` or `..`)"
    if local_repos:
        repo_rule += "; this server also accepts an absolute path or `file:///path`"
    schema = oa.obj(
        {
            "repo": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_REPO_CHARS,
                "pattern": _SLUG_OR_LOCAL if local_repos else _SLUG,
                "description": repo_rule + "; surrounding whitespace is trimmed",
            },
            "task_type": {"enum": [*(t.value for t in TaskType), None], "default": TaskType.NEW_TASK.value},
            "issue_number": oa.nullable(number),
            "pr_number": oa.nullable(
                {**number, "description": "required by pr_iteration and pr_review, refused by new_task"}
            ),
            "description": oa.nullable(
                {
                    "type": "string",
                    "maxLength": MAX_DESCRIPTION_CHARS,
                    "pattern": _TEXT,
                    "description": "trimmed; blank counts as absent; a new_task needs it or issue_number",
                }
            ),
            "max_turns": oa.nullable(
                {"type": "integer", "minimum": low, "maximum": high, "default": DEFAULT_MAX_TURNS}
            ),
            "max_budget_usd": oa.nullable(
                {
                    "type": "number",
                    "minimum": BUDGET_RANGE_USD[0],
                    "maximum": BUDGET_RANGE_USD[1],
                    "description": "absent: no budget",
                }
            ),
            "trace": oa.nullable({"type": "boolean", "default": False}),
            "network": oa.nullable(
                {
                    "type": "boolean",
                    "default": False,
                    "description": "the agent's commands may reach the network; refused unless the server "
                    "allows it",
                }
            ),
            "initial_approvals": oa.nullable(
                {
                    "type": "array",
                    "maxItems": MAX_INITIAL_SCOPES,
                    "items": {"type": "string", "minLength": 1, "maxLength": MAX_SCOPE_CHARS},
                    "description": _SCOPES_TEXT,
                }
            ),
            "approval_timeout_s": oa.nullable(
                {
                    "type": "integer",
                    "minimum": APPROVAL_TIMEOUT_RANGE_S[0],
                    "maximum": APPROVAL_TIMEOUT_RANGE_S[1],
                    "default": DEFAULT_APPROVAL_TIMEOUT_S,
                    "description": "seconds a gated tool call waits for a decision (a rule's own timeout "
                    "may be shorter); no decision in time denies the call",
                }
            ),
        },
        required=["repo"],
        description="`null` is the same as leaving a field out; unknown fields are refused (all named).",
    )
    example = {
        "repo": "acme/widgets",
        "issue_number": 42,
        "description": "Fix the flaky test",
        "max_turns": 50,
    }
    return {"required": True, "content": oa.json_content(schema, example=example)}


_SCOPES_TEXT = (
    "scopes pre-approved for the task's gated tool calls: `"
    + ALL_SESSION
    + "` or "
    + ", ".join(f"`{k}:…`" for k in KINDS)
    + "; globs that match too much (too short, only or mostly wildcards) and `rule:` of a hard-deny "
    "rule are refused; hard-deny rules apply whatever is pre-approved"
)


def _approval_body() -> oa.JSON:
    schema = oa.obj(
        {
            "decision": {"enum": ["approve", "deny"]},
            "scope": oa.nullable(
                {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_SCOPE_CHARS,
                    "description": "approvals only: `this_call` (the default: only this call), "
                    "`tool_type_session` (every call of this tool), or a scope as for "
                    "`initial_approvals`; the scope is added to the task's allow-list",
                }
            ),
            "reason": oa.nullable(
                {
                    "type": "string",
                    "maxLength": MAX_DENY_REASON_CHARS,
                    "pattern": _TEXT,
                    "description": "trimmed; secrets in it are redacted; a denial's reason reaches the "
                    "agent as steering text",
                }
            ),
        },
        required=["decision"],
    )
    example = {"decision": "deny", "reason": "open a pull request instead of pushing to main"}
    return {"required": True, "content": oa.json_content(schema, example=example)}


def _optional_text_body(name: str, max_chars: int, *, required: bool, example: str) -> oa.JSON:
    rule = {"type": "string", "maxLength": max_chars, "pattern": _TEXT, "description": "trimmed"}
    if required:
        prop = {**rule, "minLength": 1, "description": "trimmed; must not be blank"}
    else:
        prop = oa.nullable(rule)
    schema = oa.obj({name: prop}, required=[name] if required else [])
    return {"required": required, "content": oa.json_content(schema, example={name: example})}


def openapi_document(*, local_repos: bool, max_body_bytes: int) -> oa.JSON:
    """The admission API as OpenAPI 3.1 (served at /schema/openapi.json)."""
    written = oa.obj({"data": oa.ref("Task"), "meta": oa.obj({"seq": {"type": "integer", "minimum": 1}})})
    nudged = oa.obj(
        {
            "data": oa.obj(
                {"task_id": {"type": "string"}, "nudge_id": {"type": "string"}, "submitted_at": oa.TIME}
            ),
            "meta": oa.obj({"seq": {"type": "integer", "minimum": 1}}),
        }
    )
    decided = oa.obj(
        {
            "data": oa.obj(
                {
                    "task_id": {"type": "string"},
                    "request_id": {"type": "string"},
                    "decision": {"enum": ["approve", "deny"]},
                    "scope": oa.nullable({"type": "string"}),
                    "reason": oa.nullable({"type": "string"}),
                    "decided_by": {"type": "string"},
                    "decided_at": oa.TIME,
                    "task": oa.ref("Task"),
                }
            ),
            "meta": oa.obj({"seq": {"type": "integer", "minimum": 1}}),
        }
    )
    link_params = {"task_id": "$response.body#/data/task_id"}
    links = {
        "CancelTask": {"operationId": "cancelTask", "parameters": link_params},
        "NudgeTask": {"operationId": "nudgeTask", "parameters": link_params},
    }
    created = {"data": oa.example_task(1), "meta": {"seq": 101}}
    idempotency = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "The same key (per user) returns the same task with 200, never a second task.",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"},
    }
    limit_note = f" Bodies are limited to {max_body_bytes} bytes (413)."
    operations = [
        oa.Operation(
            "POST",
            "/v1/tasks",
            "createTask",
            "Submit a task",
            {
                "201": oa.response(
                    "Created; `meta.seq` is the seq of task_submitted", written, example=created, links=links
                ),
                "200": oa.response(
                    "The task this Idempotency-Key already created", written, example=created, links=links
                ),
                **oa.errors(
                    {
                        400: ["VALIDATION_ERROR"],
                        409: ["IDEMPOTENCY_KEY_REUSED", "CONCURRENT_UPDATE"],
                        **_BODY_ERRORS,
                        **_EDGE_ERRORS,
                    }
                ),
            },
            description="Validates, appends `task_submitted` and returns the task." + limit_note,
            tags=["tasks"],
            parameters=[idempotency],
            request_body=_create_body(local_repos),
        ),
        oa.Operation(
            "POST",
            "/v1/tasks/{task_id}/cancel",
            "cancelTask",
            "Cancel a task",
            {
                "202": oa.response(
                    "Accepted: cancelled at once if nobody started it, else requested (the runner stops it "
                    "between turns); a repeated cancel appends nothing and returns the last seq",
                    written,
                    example={"data": {**oa.example_task(4), "cancel_requested": True}, "meta": {"seq": 105}},
                ),
                **oa.errors(
                    {
                        400: ["VALIDATION_ERROR"],
                        404: ["NOT_FOUND"],
                        409: ["TASK_ALREADY_TERMINAL", "CONCURRENT_UPDATE"],
                        **_BODY_ERRORS,
                        **_EDGE_ERRORS,
                    }
                ),
            },
            description="The body is optional; an empty body needs no Content-Type." + limit_note,
            tags=["tasks"],
            parameters=[oa.TASK_ID_PARAM],
            request_body=_optional_text_body(
                "reason", MAX_REASON_CHARS, required=False, example="wrong repo"
            ),
        ),
        oa.Operation(
            "POST",
            "/v1/tasks/{task_id}/nudges",
            "nudgeTask",
            "Send the agent a message before its next model call",
            {
                "202": oa.response(
                    "Accepted: nudge_requested appended",
                    nudged,
                    example={
                        "data": {
                            "task_id": oa.EXAMPLE_TASK_ID,
                            "nudge_id": "01JBGAGENTEXAMP1E000000009",
                            "submitted_at": "2025-01-02T09:31:00Z",
                        },
                        "meta": {"seq": 105},
                    },
                ),
                **oa.errors(
                    {
                        400: ["VALIDATION_ERROR"],
                        404: ["NOT_FOUND"],
                        409: ["TASK_ALREADY_TERMINAL", "CONCURRENT_UPDATE"],
                        **_BODY_ERRORS,
                        **_EDGE_ERRORS,
                    }
                ),
            },
            description=limit_note.strip(),
            tags=["tasks"],
            parameters=[oa.TASK_ID_PARAM],
            request_body=_optional_text_body(
                "message", MAX_NUDGE_CHARS, required=True, example="also update the changelog"
            ),
        ),
        oa.Operation(
            "POST",
            "/v1/tasks/{task_id}/approvals/{request_id}",
            "decideApproval",
            "Approve or deny a gated tool call",
            {
                "202": oa.response(
                    "Accepted: approval_decided appended (`meta.seq`); the runner runs the tool (approve) "
                    "or tells the agent it was denied (deny)",
                    decided,
                    example={
                        "data": {
                            "task_id": oa.EXAMPLE_TASK_ID,
                            "request_id": "01JBGAGENTEXAMP1E000000010",
                            "decision": "approve",
                            "scope": "this_call",
                            "reason": None,
                            "decided_by": "alice",
                            "decided_at": "2025-01-02T09:32:00Z",
                            "task": oa.example_task(4),
                        },
                        "meta": {"seq": 106},
                    },
                ),
                **oa.errors(
                    {
                        400: ["VALIDATION_ERROR"],
                        404: ["NOT_FOUND"],
                        409: [
                            "REQUEST_ALREADY_DECIDED",
                            "TASK_NOT_AWAITING_APPROVAL",
                            "TASK_ALREADY_TERMINAL",
                            "CONCURRENT_UPDATE",
                        ],
                        429: ["RATE_LIMITED"],
                        **_BODY_ERRORS,
                        **_EDGE_ERRORS,
                    }
                ),
            },
            description="A request that does not exist and another user's task are both 404 (an admin may "
            "decide any task). Of two racing decisions exactly one is appended; the other is 409 "
            f"REQUEST_ALREADY_DECIDED. At most {DECISIONS_PER_MINUTE} decisions per minute per user "
            "(429 with Retry-After; counted per admission process)." + limit_note,
            tags=["approvals"],
            parameters=[
                oa.TASK_ID_PARAM,
                oa.path_param(
                    "request_id",
                    {"type": "string", "pattern": oa.TASK_ID_PATTERN},
                    "The approval request's id (from approval_requested; a ULID, lower case is accepted).",
                ),
            ],
            request_body=_approval_body(),
        ),
        *oa.health_operations(),
    ]
    return oa.document(
        title="bgagent admission",
        version=version("bgagent-admission"),
        description="The write side: submit, cancel and nudge tasks, decide approval requests. Every /v1 "
        "route needs a bearer token; a user acts only on their own tasks (others' are 404), an admin on all.",
        operations=operations,
    )
