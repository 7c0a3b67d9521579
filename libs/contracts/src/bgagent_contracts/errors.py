"""Errors of the contracts package.

ContractsError
├── MalformedEventError      bytes that are not a valid event (poison: record and skip)
├── InvalidSubmissionError   a submission that breaks a rule (names its field)
└── DecisionError            a command the folded state forbids
    ├── TaskNotFoundError
    ├── TaskAlreadyTerminalError
    ├── InvalidCommandError
    ├── RequestNotFoundError          an approval request the task never made (404)
    ├── RequestAlreadyDecidedError    decided, expired or superseded (409)
    └── TaskNotAwaitingApprovalError  e.g. cancel requested during the wait (409)
"""

from __future__ import annotations

from typing import ClassVar


class ContractsError(Exception):
    """Base of every error raised by bgagent_contracts."""


class MalformedEventError(ContractsError):
    """A message on a task subject could not be decoded as an event."""


class InvalidSubmissionError(ContractsError):
    """A task submission broke a rule of ``bgagent_contracts.submission``."""

    code: ClassVar[str] = "INVALID_SUBMISSION"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class DecisionError(ContractsError):
    """A command was refused by a pure decision over the folded task state."""

    code: ClassVar[str] = "CONFLICT"


class TaskNotFoundError(DecisionError):
    code = "NOT_FOUND"


class TaskAlreadyTerminalError(DecisionError):
    code = "TASK_ALREADY_TERMINAL"


class InvalidCommandError(DecisionError):
    code = "VALIDATION_ERROR"


class RequestNotFoundError(DecisionError):
    code = "NOT_FOUND"


class RequestAlreadyDecidedError(DecisionError):
    code = "REQUEST_ALREADY_DECIDED"


class TaskNotAwaitingApprovalError(DecisionError):
    code = "TASK_NOT_AWAITING_APPROVAL"
