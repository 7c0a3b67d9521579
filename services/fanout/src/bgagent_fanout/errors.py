"""Errors of the fanout service, translated to ack / skip / retry only in ``consumer.py``.

FanoutError
├── GitHubError                 GitHub answered with an error we do not retry
│   ├── TargetUnusableError     401/403/404/410/422 on the issue or PR: skip this task, keep going
│   └── CommentGoneError        404 on PATCH of our comment (someone deleted it): POST a new one
└── GitHubStoppedError          the retry loop was told to stop (shutdown) before GitHub answered
"""

from __future__ import annotations


class FanoutError(Exception):
    """Base of every error raised by bgagent_fanout."""


class GitHubError(FanoutError):
    """A GitHub API call failed with a status that retrying will not fix."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.message = message
        super().__init__(f"{method} {path} -> {status}: {message}")


class TargetUnusableError(GitHubError):
    """The issue or PR cannot take our comment (gone, no access, invalid): skip the task."""


class CommentGoneError(GitHubError):
    """The comment we keep was deleted on GitHub."""


class GitHubStoppedError(FanoutError):
    """Shutdown was requested while a call was waiting to be retried."""
