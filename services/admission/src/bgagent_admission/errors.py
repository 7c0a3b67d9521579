"""Errors of the admission service; api.py turns them into HTTP responses (and nothing else does).

AdmissionError
├── InvalidRequest           400 VALIDATION_ERROR: a field of the request is wrong (the message names it)
├── UnsupportedMediaType     415: the body is not JSON
├── TaskNotFound             404 NOT_FOUND: no such task, or not the caller's (or no such approval request)
├── TaskAlreadyTerminal      409 TASK_ALREADY_TERMINAL
├── RequestAlreadyDecided    409 REQUEST_ALREADY_DECIDED: approved, denied or expired before
├── TaskNotAwaitingApproval  409 TASK_NOT_AWAITING_APPROVAL: e.g. a cancel was requested during the wait
├── RateLimited              429 RATE_LIMITED: too many decisions by this user in the last minute
├── IdempotencyKeyReused     409 IDEMPOTENCY_KEY_REUSED: same key, different request
├── TooMuchContention        409 CONCURRENT_UPDATE: the task kept changing under every retry
└── BackendUnavailable       503 SERVICE_UNAVAILABLE: NATS did not answer
"""

from __future__ import annotations


class AdmissionError(Exception):
    """Base of every error raised by bgagent_admission."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(AdmissionError):
    """Bad input; ``field`` is the offending field (or header) and starts the message."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class UnsupportedMediaType(AdmissionError):
    """The request body is not declared as JSON."""


class TaskNotFound(AdmissionError):
    """The task does not exist or belongs to someone else (indistinguishable on purpose)."""


class TaskAlreadyTerminal(AdmissionError):
    """The task has finished; nothing can change it any more."""


class IdempotencyKeyReused(AdmissionError):
    """An Idempotency-Key already names a task created from a different request."""


class TooMuchContention(AdmissionError):
    """Every optimistic append lost against a concurrent writer."""


class BackendUnavailable(AdmissionError):
    """The event store or the idempotency bucket did not answer."""


class RequestAlreadyDecided(AdmissionError):
    """The approval request was approved, denied or expired before this decision."""


class TaskNotAwaitingApproval(AdmissionError):
    """The task no longer waits on the request (a cancel was requested)."""


class RateLimited(AdmissionError):
    """Too many requests of one kind by one user; ``retry_after_s`` says when one is free again."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
