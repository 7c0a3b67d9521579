"""The rules of a task submission, applied where it is made (admission) and where it is consumed
(the runner re-checks every ``task_submitted`` it reads): one set of rules, one place.

Pure: local repository roots are compared as paths, never looked up on disk; the services
add what needs the file system (existence, symlinks) at their edges.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence

import msgspec

from .errors import InvalidSubmissionError
from .events import MAX_NUMBER, TaskSubmitted, TaskType

MAX_DESCRIPTION_CHARS = 2000
MAX_REASON_CHARS = 2000
MAX_TURNS_RANGE = (1, 500)
DEFAULT_MAX_TURNS = 100
BUDGET_RANGE_USD = (0.01, 100.0)
MAX_REPO_CHARS = 1024
MAX_USER_ID_CHARS = 128

NOT_UNDER_ROOTS = "is not under a local repository root this server allows"
NETWORK_REFUSED = "network access for the agent's commands is not allowed on this server"
"""The one answer for ``network: true`` where the operator did not allow it (admission and runner)."""
"""The one answer for a local path outside the roots, from the text rule and the disk rule alike."""

CHANNELS = ("api",)
"""Where a task may come from (webhooks and GitHub ingress add theirs)."""

_REPO_SLUG = re.compile(r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$")
_USER_ID = re.compile(r"^[A-Za-z0-9._@+-]+$")
# Control characters (C0, DEL, C1) except tab and newline; also the Unicode line and paragraph
# separators, which break one-line renderings (commit subjects, PR titles).
_FORBIDDEN_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_FORBIDDEN_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_TASK_TYPES = ", ".join(t.value for t in TaskType)


class Submission(msgspec.Struct, frozen=True, kw_only=True):
    """A validated, normalised submission: what a ``task_submitted`` carries besides its envelope."""

    repo: str
    task_type: TaskType = TaskType.NEW_TASK
    issue_number: int | None = None
    pr_number: int | None = None
    description: str | None = None
    max_turns: int = DEFAULT_MAX_TURNS
    max_budget_usd: float | None = None
    trace: bool = False
    network: bool = False
    """The agent's commands may reach the network; only where the caller allows it."""


def check_text(field: str, value: str | None, *, max_chars: int, one_line: bool = False) -> str | None:
    """Strip a free text; refuse control characters (except tab and newline) and overlong text.

    CRLF and lone CR become LF first. Returns None for a missing or blank text.
    """
    if value is None:
        return None
    text = value.replace("\r\n", "\n").replace("\r", "\n").strip()
    bad = (_FORBIDDEN_LINE if one_line else _FORBIDDEN_TEXT).search(text)
    if bad is not None:
        allowed = "" if one_line else " (tab and newline are allowed)"
        raise InvalidSubmissionError(
            field, f"contains the control character U+{ord(bad.group()):04X}{allowed}"
        )
    if len(text) > max_chars:
        raise InvalidSubmissionError(field, f"at most {max_chars} characters (got {len(text)})")
    return text or None


def check_user_id(value: str) -> str:
    if not value or len(value) > MAX_USER_ID_CHARS or not _USER_ID.match(value):
        raise InvalidSubmissionError(
            "user_id", f"must be 1-{MAX_USER_ID_CHARS} characters of letters, digits and . _ @ + -"
        )
    return value


def local_path(repo: str) -> str | None:
    """The file-system path a local repository value names (``/p`` or ``file:///p``), else None."""
    if repo.startswith("file://"):
        return repo.removeprefix("file://")
    if repo.startswith("/"):
        return repo
    return None


def under_roots(path: str, roots: Sequence[str]) -> bool:
    """True when the absolute, normalised ``path`` is one of ``roots`` or inside one."""
    for root in roots:
        base = posixpath.normpath(root)
        if base == "/" or path == base or path.startswith(base + "/"):
            return True
    return False


def check_repo(raw: str | None, *, local_roots: Sequence[str] = ()) -> str:
    """``owner/name``, or a local path / ``file://`` URL under one of ``local_roots``.

    An empty ``local_roots`` disables local repositories. Messages never echo the path back
    beyond what the caller sent, and never say what exists on the server.
    """
    if raw is None:
        raise InvalidSubmissionError("repo", "is required (owner/name)")
    repo = raw.strip()
    if not repo:
        raise InvalidSubmissionError("repo", "must not be empty (owner/name)")
    if len(repo) > MAX_REPO_CHARS or _FORBIDDEN_LINE.search(repo):
        raise InvalidSubmissionError("repo", "is not a repository name")
    if _REPO_SLUG.match(repo):
        if any(part in (".", "..") for part in repo.split("/")):
            raise InvalidSubmissionError("repo", "owner and name may not be '.' or '..'")
        return repo
    path = local_path(repo)
    if path is None:
        raise InvalidSubmissionError("repo", "must be owner/name (letters, digits, '.', '_' and '-')")
    if not local_roots:
        raise InvalidSubmissionError("repo", "local repositories are disabled on this server; use owner/name")
    if not path.startswith("/"):
        raise InvalidSubmissionError("repo", "a local repository must be an absolute path or file:///path")
    if ".." in path.split("/"):
        raise InvalidSubmissionError("repo", "a local repository path may not contain '..'")
    normal = posixpath.normpath(path)
    if normal.startswith("//"):  # POSIX keeps a leading '//'; it names the same root
        normal = "/" + normal.lstrip("/")
    if not under_roots(normal, local_roots):
        raise InvalidSubmissionError("repo", NOT_UNDER_ROOTS)
    return f"file://{normal}" if repo.startswith("file://") else normal


def _check_number(field: str, value: int | None) -> int | None:
    if value is not None and not 1 <= value <= MAX_NUMBER:
        raise InvalidSubmissionError(field, f"must be between 1 and {MAX_NUMBER}")
    return value


def check_submission(
    *,
    repo: str | None,
    task_type: str | None = None,
    issue_number: int | None = None,
    pr_number: int | None = None,
    description: str | None = None,
    max_turns: int | None = None,
    max_budget_usd: float | None = None,
    trace: bool | None = None,
    network: bool | None = None,
    local_roots: Sequence[str] = (),
    allow_network: bool = False,
) -> Submission:
    """Apply every rule of a submission; InvalidSubmissionError names the first broken one.

    ``network: true`` is refused unless ``allow_network`` says this server grants it (admission's
    ``BGAGENT_ALLOW_TASK_NETWORK``, the runner's ``BGAGENT_SANDBOX_ALLOW_NETWORK``).
    """
    checked_repo = check_repo(repo, local_roots=local_roots)
    try:
        kind = TaskType(task_type) if task_type is not None else TaskType.NEW_TASK
    except ValueError:
        raise InvalidSubmissionError("task_type", f"must be one of {_TASK_TYPES}") from None
    issue = _check_number("issue_number", issue_number)
    pr = _check_number("pr_number", pr_number)
    text = check_text("description", description, max_chars=MAX_DESCRIPTION_CHARS)
    low, high = MAX_TURNS_RANGE
    turns = max_turns if max_turns is not None else DEFAULT_MAX_TURNS
    if not low <= turns <= high:
        raise InvalidSubmissionError("max_turns", f"must be between {low} and {high}")
    budget = max_budget_usd
    if budget is not None and not BUDGET_RANGE_USD[0] <= budget <= BUDGET_RANGE_USD[1]:
        raise InvalidSubmissionError("max_budget_usd", "must be between 0.01 and 100")
    if kind is TaskType.NEW_TASK:
        if pr is not None:
            raise InvalidSubmissionError("pr_number", "not allowed for task_type new_task")
        if issue is None and text is None:
            raise InvalidSubmissionError("description", "a new_task needs an issue_number or a description")
    elif pr is None:
        raise InvalidSubmissionError("pr_number", f"is required for task_type {kind.value}")
    if network and not allow_network:
        raise InvalidSubmissionError("network", NETWORK_REFUSED)
    return Submission(
        repo=checked_repo,
        task_type=kind,
        issue_number=issue,
        pr_number=pr,
        description=text,
        max_turns=turns,
        max_budget_usd=budget,
        trace=bool(trace),
        network=bool(network),
    )


def check_submitted(
    event: TaskSubmitted, *, local_roots: Sequence[str] = (), allow_network: bool = False
) -> Submission:
    """Re-apply the rules to a recorded ``task_submitted`` (defence in depth under admission).

    The event must already be in normal form: a value admission would have rewritten
    (untrimmed text, a non-canonical path) is refused too.
    """
    check_user_id(event.user_id)
    if event.channel not in CHANNELS:
        raise InvalidSubmissionError("channel", f"must be one of {', '.join(CHANNELS)}")
    checked = check_submission(
        repo=event.repo,
        task_type=event.task_type.value,
        issue_number=event.issue_number,
        pr_number=event.pr_number,
        description=event.description,
        max_turns=event.max_turns,
        max_budget_usd=event.max_budget_usd,
        trace=event.trace,
        network=event.network,
        local_roots=local_roots,
        allow_network=allow_network,
    )
    if checked.repo != event.repo:
        raise InvalidSubmissionError("repo", "is not in normal form")
    if checked.description != event.description:
        raise InvalidSubmissionError("description", "is not in normal form")
    return checked
