"""The bgagent tool-call policy engine (Cedar hard-deny and hard-gate rule sets)."""

from .engine import (
    DISABLED_FILE,
    HARD_DENY,
    HARD_GATE,
    REPO_POLICY_DIR,
    Outcome,
    PolicyDecision,
    PolicyEngine,
    PolicyLoadError,
    RuleInfo,
    cedar_request,
    input_sha256,
    read_disabled,
)

__all__ = [
    "DISABLED_FILE",
    "HARD_DENY",
    "HARD_GATE",
    "REPO_POLICY_DIR",
    "Outcome",
    "PolicyDecision",
    "PolicyEngine",
    "PolicyLoadError",
    "RuleInfo",
    "cedar_request",
    "input_sha256",
    "read_disabled",
]
