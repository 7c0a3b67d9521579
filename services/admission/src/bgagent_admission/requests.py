"""Request bodies and headers: decode, check, normalise. Every problem names its field.

Bodies are decoded in three steps so each failure gets a precise message:
JSON syntax (``body: ...``), unknown fields (all of them named), then field types
through msgspec structs with ``forbid_unknown_fields``; value rules follow.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from bgagent_contracts import TaskType
from bgagent_contracts.decide import MAX_NUDGE_CHARS

from .errors import InvalidRequest, UnsupportedMediaType

MAX_DESCRIPTION_CHARS = 2000
MAX_REASON_CHARS = 2000
MAX_TURNS_RANGE = (1, 500)
BUDGET_RANGE_USD = (0.01, 100.0)
MAX_NUMBER = 2_147_483_647
"""Issue and PR numbers fit a 32-bit integer (GitHub's and the read model's)."""
MAX_REPO_CHARS = 1024

_REPO_SLUG = re.compile(r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$")
_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_TASK_TYPES = ", ".join(t.value for t in TaskType)


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


class CancelBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    reason: str | None = None


class NudgeBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    message: str | None = None


class CreateTask(msgspec.Struct, frozen=True, kw_only=True):
    """A validated, normalised task submission (what TaskSubmitted will carry)."""

    repo: str
    task_type: TaskType = TaskType.NEW_TASK
    issue_number: int | None = None
    pr_number: int | None = None
    description: str | None = None
    max_turns: int = 100
    max_budget_usd: float | None = None
    trace: bool = False


_KINDS: dict[str, str] = {
    "repo": "a string",
    "task_type": "a string",
    "issue_number": "an integer",
    "pr_number": "an integer",
    "description": "a string",
    "max_turns": "an integer",
    "max_budget_usd": "a number",
    "trace": "true or false",
    "reason": "a string",
    "message": "a string",
}
_AT_FIELD = re.compile(r" - at `\$\.([A-Za-z0-9_]+)")

B = TypeVar("B", bound=msgspec.Struct)


def check_json_content_type(media_type: str) -> None:
    """Bodies must be declared JSON (``application/json`` or any ``+json`` type)."""
    kind = media_type.strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        shown = kind or "none"
        raise UnsupportedMediaType(f"Content-Type must be application/json (got {shown})")


def decode_body(raw: bytes, cls: type[B]) -> B:
    """Decode a JSON object into ``cls``; InvalidRequest names the field that is wrong."""
    try:
        value: Any = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequest("body", f"malformed JSON ({exc})") from None
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


def _check_repo(raw: str | None, *, allow_local: bool) -> str:
    if raw is None:
        raise InvalidRequest("repo", "is required (owner/name)")
    repo = raw.strip()
    if not repo:
        raise InvalidRequest("repo", "must not be empty (owner/name)")
    if len(repo) > MAX_REPO_CHARS or any(ch in repo for ch in "\x00\r\n"):
        raise InvalidRequest("repo", "is not a repository name")
    if _REPO_SLUG.match(repo):
        if any(part in (".", "..") for part in repo.split("/")):
            raise InvalidRequest("repo", "owner and name may not be '.' or '..'")
        return repo
    if repo.startswith(("/", "file://")):
        if not allow_local:
            raise InvalidRequest("repo", "local repositories are disabled on this server; use owner/name")
        path = repo.removeprefix("file://")
        if not path.startswith("/"):
            raise InvalidRequest("repo", "a local repository must be an absolute path or file:///path")
        if ".." in path.split("/"):
            raise InvalidRequest("repo", "a local repository path may not contain '..'")
        return repo
    raise InvalidRequest("repo", "must be owner/name (letters, digits, '.', '_' and '-')")


def _check_number(field: str, value: int | None) -> int | None:
    if value is not None and not 1 <= value <= MAX_NUMBER:
        raise InvalidRequest(field, f"must be between 1 and {MAX_NUMBER}")
    return value


def validate_create(body: CreateTaskBody, *, allow_local_repos: bool) -> CreateTask:
    """Apply every rule of a submission; the first broken rule is reported."""
    repo = _check_repo(body.repo, allow_local=allow_local_repos)
    try:
        task_type = TaskType(body.task_type) if body.task_type is not None else TaskType.NEW_TASK
    except ValueError:
        raise InvalidRequest("task_type", f"must be one of {_TASK_TYPES}") from None
    issue_number = _check_number("issue_number", body.issue_number)
    pr_number = _check_number("pr_number", body.pr_number)
    description = body.description.strip() if body.description is not None else None
    if description is not None and len(description) > MAX_DESCRIPTION_CHARS:
        raise InvalidRequest(
            "description", f"at most {MAX_DESCRIPTION_CHARS} characters (got {len(description)})"
        )
    description = description or None
    low, high = MAX_TURNS_RANGE
    max_turns = body.max_turns if body.max_turns is not None else 100
    if not low <= max_turns <= high:
        raise InvalidRequest("max_turns", f"must be between {low} and {high}")
    budget = body.max_budget_usd
    if budget is not None and not BUDGET_RANGE_USD[0] <= budget <= BUDGET_RANGE_USD[1]:
        raise InvalidRequest("max_budget_usd", "must be between 0.01 and 100")
    if task_type is TaskType.NEW_TASK:
        if pr_number is not None:
            raise InvalidRequest("pr_number", "not allowed for task_type new_task")
        if issue_number is None and description is None:
            raise InvalidRequest("description", "a new_task needs an issue_number or a description")
    elif pr_number is None:
        raise InvalidRequest("pr_number", f"is required for task_type {task_type.value}")
    return CreateTask(
        repo=repo,
        task_type=task_type,
        issue_number=issue_number,
        pr_number=pr_number,
        description=description,
        max_turns=max_turns,
        max_budget_usd=budget,
        trace=bool(body.trace),
    )


def validate_reason(body: CancelBody) -> str | None:
    if body.reason is None:
        return None
    reason = body.reason.strip()
    if len(reason) > MAX_REASON_CHARS:
        raise InvalidRequest("reason", f"at most {MAX_REASON_CHARS} characters (got {len(reason)})")
    return reason or None


def validate_message(body: NudgeBody) -> str:
    """Checked here too (before any read) so a bad nudge never costs a round trip."""
    if body.message is None:
        raise InvalidRequest("message", "is required")
    text = body.message.strip()
    if not text:
        raise InvalidRequest("message", "must not be empty")
    if len(text) > MAX_NUDGE_CHARS:
        raise InvalidRequest("message", f"at most {MAX_NUDGE_CHARS} characters (got {len(text)})")
    return text
