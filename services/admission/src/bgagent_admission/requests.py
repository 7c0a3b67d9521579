"""Request bodies and headers: decode, check, normalise. Every problem names its field.

Bodies are decoded in three steps so each failure gets a precise message:
JSON syntax (``body: ...``), unknown fields (all of them named), then field types
through msgspec structs with ``forbid_unknown_fields``; value rules follow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any, TypeVar

import msgspec

from bgagent_contracts import InvalidSubmissionError
from bgagent_contracts.decide import MAX_DENY_REASON_CHARS, MAX_NUDGE_CHARS
from bgagent_contracts.redact import redact
from bgagent_contracts.scopes import InvalidScopeError, check_decision_scope, check_initial_approvals
from bgagent_contracts.subjects import is_task_id
from bgagent_contracts.submission import MAX_REASON_CHARS, Submission, check_submission, check_text

from .errors import InvalidRequest, UnsupportedMediaType

APPROVAL_TIMEOUT_RANGE_S = (30, 3600)
DEFAULT_APPROVAL_TIMEOUT_S = 300
DECISIONS = ("approve", "deny")


class CreateTask(Submission, frozen=True, kw_only=True):
    """What admission appends: a submission that passed every rule of bgagent_contracts.submission,
    with the approval settings (``bgagent_contracts.scopes``) checked here."""

    initial_approvals: tuple[str, ...] = ()
    """Scopes pre-approved at submit: at most 20 of at most 128 characters, no hard-deny rule."""
    approval_timeout_s: int = DEFAULT_APPROVAL_TIMEOUT_S
    """How long a gated tool call waits for a decision: 30 to 3600 s."""


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """A checked approval decision (``POST /v1/tasks/{id}/approvals/{request_id}``)."""

    request_id: str
    decision: str
    scope: str | None = None
    reason: str | None = None
    """Redacted (secrets replaced) and at most 2000 characters."""


_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class CreateTaskBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/tasks`` as sent; ``None`` means absent (JSON ``null`` is the same as leaving it out)."""

    repo: str | None = None
    task_type: str | None = None
    issue_number: int | None = None
    pr_number: int | None = None
    description: str | None = None
    max_turns: int | None = None
    max_budget_usd: float | None = None
    trace: bool | None = None
    network: bool | None = None
    initial_approvals: list[str] | None = None
    approval_timeout_s: int | None = None


class CancelBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    reason: str | None = None


class NudgeBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    message: str | None = None


class ApprovalBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    decision: str | None = None
    scope: str | None = None
    reason: str | None = None


_KINDS: dict[str, str] = {
    "repo": "a string",
    "task_type": "a string",
    "issue_number": "an integer",
    "pr_number": "an integer",
    "description": "a string",
    "max_turns": "an integer",
    "max_budget_usd": "a number",
    "trace": "true or false",
    "network": "true or false",
    "reason": "a string",
    "message": "a string",
    "initial_approvals": "a list of strings",
    "approval_timeout_s": "an integer",
    "decision": "a string",
    "scope": "a string",
}
_AT_FIELD = re.compile(r" - at `\$\.([A-Za-z0-9_]+)")

B = TypeVar("B", bound=msgspec.Struct)


def check_json_content_type(media_type: str) -> None:
    """Bodies must be declared JSON (``application/json`` or any ``+json`` type)."""
    kind = media_type.strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        shown = kind or "none"
        raise UnsupportedMediaType(f"Content-Type must be application/json (got {shown})")


def _parse_json(raw: bytes) -> Any:
    """Any JSON value; every failure (depth, UTF-8, syntax) is a 400 naming the body."""
    try:
        return msgspec.json.decode(raw)
    except RecursionError:
        raise InvalidRequest("body", "JSON nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise InvalidRequest("body", f"invalid UTF-8 at byte {exc.start}") from None
    except msgspec.ValidationError as exc:
        if "out of range" not in str(exc):
            raise InvalidRequest("body", f"malformed JSON ({exc})") from None
    except (msgspec.DecodeError, ValueError) as exc:
        raise InvalidRequest("body", f"malformed JSON ({exc})") from None
    # msgspec refuses a number beyond float range (1e400) without saying which field holds it; the
    # standard parser reads it as infinity, so the field rules below can name the field.
    try:
        return json.loads(raw)
    except RecursionError:
        raise InvalidRequest("body", "JSON nested too deeply") from None
    except ValueError as exc:
        raise InvalidRequest("body", f"malformed JSON ({exc})") from None


def decode_body(raw: bytes, cls: type[B]) -> B:
    """Decode a JSON object into ``cls``; InvalidRequest names the field that is wrong."""
    value = _parse_json(raw)
    if not isinstance(value, dict):
        raise InvalidRequest("body", "must be a JSON object")
    unknown = sorted(set(value) - set(cls.__struct_fields__))
    if unknown:
        allowed = ", ".join(cls.__struct_fields__)
        raise InvalidRequest(", ".join(unknown), f"unknown field (allowed: {allowed})")
    try:
        return msgspec.convert(value, cls, strict=True)
    except msgspec.ValidationError as exc:
        match = _AT_FIELD.search(str(exc))
        if match is None:  # pragma: no cover - every field error carries a path
            raise InvalidRequest("body", str(exc)) from None
        field = match.group(1)
        raise InvalidRequest(field, f"must be {_KINDS.get(field, 'valid')}") from None


def check_idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.match(value):
        raise InvalidRequest("Idempotency-Key", "must be 1-128 characters of A-Z, a-z, 0-9, '_' and '-'")
    return value


def validate_create(
    body: CreateTaskBody,
    *,
    local_roots: tuple[str, ...] = (),
    allow_network: bool = False,
    hard_deny_rules: Collection[str] = (),
) -> CreateTask:
    """Apply every rule of a submission (bgagent_contracts.submission); the first broken one is reported.

    ``network: true`` is refused (400 naming ``network``) unless ``allow_network``
    (``BGAGENT_ALLOW_TASK_NETWORK``). ``initial_approvals`` may not name a rule of
    ``hard_deny_rules`` (``rule:<id>``): nothing can allow those.
    """
    try:
        submission = check_submission(
            repo=body.repo,
            task_type=body.task_type,
            issue_number=body.issue_number,
            pr_number=body.pr_number,
            description=body.description,
            max_turns=body.max_turns,
            max_budget_usd=body.max_budget_usd,
            trace=body.trace,
            network=body.network,
            local_roots=local_roots,
            allow_network=allow_network,
        )
        approvals = check_initial_approvals(body.initial_approvals, hard_deny_rules=hard_deny_rules)
    except InvalidSubmissionError as exc:
        raise InvalidRequest(exc.field, exc.problem) from None
    timeout = body.approval_timeout_s
    low, high = APPROVAL_TIMEOUT_RANGE_S
    if timeout is None:
        timeout = DEFAULT_APPROVAL_TIMEOUT_S
    elif not low <= timeout <= high:
        raise InvalidRequest(
            "approval_timeout_s", f"must be between {low} and {high} seconds (got {timeout})"
        )
    return CreateTask(
        **msgspec.structs.asdict(submission), initial_approvals=approvals, approval_timeout_s=timeout
    )


def _text(field: str, value: str | None, max_chars: int) -> str | None:
    try:
        return check_text(field, value, max_chars=max_chars)
    except InvalidSubmissionError as exc:
        raise InvalidRequest(exc.field, exc.problem) from None


def validate_reason(body: CancelBody) -> str | None:
    return _text("reason", body.reason, MAX_REASON_CHARS)


def validate_message(body: NudgeBody) -> str:
    """Checked here too (before any read) so a bad nudge never costs a round trip."""
    if body.message is None:
        raise InvalidRequest("message", "is required")
    text = _text("message", body.message, MAX_NUDGE_CHARS)
    if text is None:
        raise InvalidRequest("message", "must not be empty")
    return text


def validate_request_id(raw: str) -> str:
    """An approval request id is a ULID (lower case is accepted and upper-cased)."""
    upper = raw.upper()
    if not is_task_id(upper):
        shown = repr(raw[:40]) + ("…" if len(raw) > 40 else "")
        raise InvalidRequest("request_id", f"{shown} is not an approval request id (a 26-character ULID)")
    return upper


def validate_decision(
    request_id: str, body: ApprovalBody, *, hard_deny_rules: Collection[str] = ()
) -> Decision:
    """Check a decision before any read: decision, scope (approvals only) and reason (redacted)."""
    rid = validate_request_id(request_id)
    if body.decision is None:
        raise InvalidRequest("decision", "is required: approve or deny")
    if body.decision not in DECISIONS:
        raise InvalidRequest("decision", "must be approve or deny")
    scope = body.scope
    if scope is not None:
        if body.decision == "deny":
            raise InvalidRequest("scope", "only an approval takes a scope")
        try:
            scope = check_decision_scope(scope)
        except InvalidScopeError as exc:
            raise InvalidRequest("scope", str(exc)) from None
        if scope is not None and scope.startswith("rule:") and scope[5:] in hard_deny_rules:
            raise InvalidRequest("scope", f"{scope} is a hard-deny rule; nothing can allow it")
    reason = _text("reason", body.reason, MAX_DENY_REASON_CHARS)
    if reason is not None:
        reason = redact(reason)[:MAX_DENY_REASON_CHARS]
    return Decision(request_id=rid, decision=body.decision, scope=scope, reason=reason)
