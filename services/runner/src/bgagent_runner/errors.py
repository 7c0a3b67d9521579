"""Errors of the runner. Each carries the ``code`` its TaskFailed event gets.

RunnerError                      (code RUNNER_ERROR)
├── WorkspaceError               (WORKSPACE_ERROR) preparing the workspace failed
│   ├── RepoNotAllowedError      (REPO_NOT_ALLOWED) local repos disabled, unknown repo form
│   └── GitError                 (GIT_ERROR) a git command failed
├── ForgeError                   (FORGE_ERROR) the forge (GitHub REST) refused or failed
│   └── ForgeUnsupportedError    (FORGE_UNSUPPORTED) the task needs a forge the repo has not
├── ModelError                   (MODEL_ERROR) the Messages API failed after the SDK's retries
├── ApprovalCapError             (APPROVAL_CAP) a tool call needed one approval more than a task may ask
└── NotProvisionedError          the stream or the runner consumer does not exist (startup only)

Tool failures are never exceptions: they become tool_result blocks with is_error.
They are translated to events only at the edge (job.py), to ack/nak in worker.py.
"""

from __future__ import annotations

from typing import ClassVar


class RunnerError(Exception):
    """Base of every error raised by bgagent_runner."""

    code: ClassVar[str] = "RUNNER_ERROR"


class WorkspaceError(RunnerError):
    code = "WORKSPACE_ERROR"


class RepoNotAllowedError(WorkspaceError):
    code = "REPO_NOT_ALLOWED"


class GitError(WorkspaceError):
    code = "GIT_ERROR"


class ForgeError(RunnerError):
    code = "FORGE_ERROR"


class ForgeUnsupportedError(ForgeError):
    code = "FORGE_UNSUPPORTED"


class ModelError(RunnerError):
    code = "MODEL_ERROR"


class ApprovalCapError(RunnerError):
    code = "APPROVAL_CAP"


class NotProvisionedError(RunnerError):
    """Raised at startup, never for a task: run ``bgagent admin init`` first."""
