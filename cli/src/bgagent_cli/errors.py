"""Errors of the CLI; each carries what the user should do next.

CliError                 exit code 2 unless set
├── ApiCallError         the server answered with an error envelope
└── NotConfiguredError   no URL/token known
"""

from __future__ import annotations


class CliError(Exception):
    exit_code: int = 2

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code


class ApiCallError(CliError):
    def __init__(
        self, status: int, code: str, message: str, request_id: str | None, hint: str | None
    ) -> None:
        super().__init__(f"{code}: {message}", hint=hint)
        self.status = status
        self.code = code
        self.request_id = request_id


class NotConfiguredError(CliError):
    pass
