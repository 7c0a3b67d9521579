"""Approval scopes: what a user pre-approves at submit or grants when approving a gate. Pure.

A scope is a string:

- ``all_session``: every tool call of the task (hard-deny rules still apply);
- ``tool_type:<tool>``: every call of one tool (``bash``, ``str_replace_based_edit_tool``);
- ``tool_group:file_write``: every file write (the text editor's create, str_replace, insert);
- ``rule:<rule_id>``: every call a gate rule would hold (never a hard-deny rule);
- ``bash_pattern:<glob>``: bash commands matching the glob (``fnmatch``, case-sensitive);
- ``write_path:<glob>``: file writes whose path matches the glob.

At approve time also ``this_call`` (the default: the one call, nothing added to the allow-list)
and ``tool_type_session`` (becomes ``tool_type:<the gated call's tool>``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InvalidSubmissionError

BASH = "bash"
EDITOR = "str_replace_based_edit_tool"
FILE_WRITE_COMMANDS = frozenset({"create", "str_replace", "insert"})
TOOLS = (BASH, EDITOR)

ALL_SESSION = "all_session"
THIS_CALL = "this_call"
TOOL_TYPE_SESSION = "tool_type_session"
KINDS = ("tool_type", "tool_group", "rule", "bash_pattern", "write_path")
MAX_INITIAL_SCOPES = 20
MAX_SCOPE_CHARS = 128
_WILDCARDS = frozenset("*?[]")


class InvalidScopeError(ValueError):
    """A scope string that breaks a rule; the message says which."""


@dataclass(frozen=True)
class Scope:
    kind: str
    """``all_session`` or one of ``KINDS``."""
    value: str = ""

    def __str__(self) -> str:
        return self.kind if self.kind == ALL_SESSION else f"{self.kind}:{self.value}"


def parse_scope(text: str) -> Scope:
    """A scope of the allow-list (not ``this_call`` / ``tool_type_session``: see ``grant``)."""
    if not text or len(text) > MAX_SCOPE_CHARS:
        raise InvalidScopeError(f"a scope is 1 to {MAX_SCOPE_CHARS} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise InvalidScopeError("a scope has no control characters")
    if text == ALL_SESSION:
        return Scope(ALL_SESSION)
    kind, sep, value = text.partition(":")
    if not sep or kind not in KINDS:
        raise InvalidScopeError(
            f"unknown scope {text!r}: use all_session, or one of {', '.join(k + ':…' for k in KINDS)}"
        )
    if kind == "tool_type" and value not in TOOLS:
        raise InvalidScopeError(f"tool_type: one of {', '.join(TOOLS)}")
    if kind == "tool_group" and value != "file_write":
        raise InvalidScopeError("tool_group: only file_write")
    if kind == "rule" and not value:
        raise InvalidScopeError("rule: needs a rule id")
    if kind in ("bash_pattern", "write_path"):
        _check_glob(kind, value)
    return Scope(kind, value)


def _check_glob(kind: str, glob: str) -> None:
    """Degenerate globs are refused: too short, only wildcards, or more than half wildcards."""
    stripped = glob.strip()
    wild = sum(1 for c in stripped if c in _WILDCARDS)
    if len(stripped) <= 2 or wild == len(stripped) or wild * 2 > len(stripped):
        raise InvalidScopeError(
            f"{kind}:{glob!r} matches too much (too short, or more than half wildcards); "
            "use all_session or tool_type:<tool> for that, on purpose"
        )


def check_initial_approvals(
    scopes: Sequence[str] | None, *, hard_deny_rules: Iterable[str] = ()
) -> tuple[str, ...]:
    """Submit-time scopes: at most 20, each valid, none naming a hard-deny rule."""
    if not scopes:
        return ()
    if len(scopes) > MAX_INITIAL_SCOPES:
        raise InvalidSubmissionError("initial_approvals", f"at most {MAX_INITIAL_SCOPES} scopes")
    denied = frozenset(hard_deny_rules)
    out: list[str] = []
    for raw in scopes:
        try:
            scope = parse_scope(raw)
        except InvalidScopeError as exc:
            raise InvalidSubmissionError("initial_approvals", str(exc)) from None
        if scope.kind == "rule" and scope.value in denied:
            raise InvalidSubmissionError(
                "initial_approvals", f"rule:{scope.value} is a hard-deny rule; nothing can allow it"
            )
        if str(scope) not in out:
            out.append(str(scope))
    return tuple(out)


def grant(scope: str | None, tool_name: str) -> str | None:
    """The allow-list entry an approval adds: None for ``this_call`` (the default)."""
    if scope is None or scope == THIS_CALL:
        return None
    if scope == TOOL_TYPE_SESSION:
        return f"tool_type:{tool_name}"
    return str(parse_scope(scope))


def check_decision_scope(scope: str | None) -> str | None:
    """A scope given with an approval: ``this_call``, ``tool_type_session`` or an allow-list scope."""
    if scope is None or scope in (THIS_CALL, TOOL_TYPE_SESSION):
        return scope
    return str(parse_scope(scope))


def is_file_write(tool_name: str, tool_input: Mapping[str, Any]) -> bool:
    return tool_name == EDITOR and tool_input.get("command") in FILE_WRITE_COMMANDS


@dataclass(frozen=True)
class Allowlist:
    """The scopes a task holds (folded from ``task_submitted`` and ``approval_decided``)."""

    scopes: tuple[str, ...] = ()

    def allows(self, tool_name: str, tool_input: Mapping[str, Any], rule_ids: Sequence[str] = ()) -> bool:
        return any(_matches(scope, tool_name, tool_input, rule_ids) for scope in self.parsed())

    def parsed(self) -> list[Scope]:
        """The valid scopes (an invalid one, which admission refuses, allows nothing)."""
        out = []
        for text in self.scopes:
            try:
                out.append(parse_scope(text))
            except InvalidScopeError:
                continue
        return out


def _matches(scope: Scope, tool: str, tool_input: Mapping[str, Any], rule_ids: Sequence[str]) -> bool:
    if scope.kind == ALL_SESSION:
        return True
    if scope.kind == "tool_type":
        return tool == scope.value
    if scope.kind == "tool_group":
        return is_file_write(tool, tool_input)
    if scope.kind == "rule":
        return scope.value in rule_ids
    if scope.kind == "bash_pattern":
        command = tool_input.get("command")
        return tool == BASH and isinstance(command, str) and fnmatch.fnmatchcase(command, scope.value)
    if scope.kind == "write_path":
        path = tool_input.get("path")
        return (
            is_file_write(tool, tool_input)
            and isinstance(path, str)
            and fnmatch.fnmatchcase(path, scope.value)
        )
    return False
