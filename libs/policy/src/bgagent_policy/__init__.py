"""The bgagent tool-call policy engine (Cedar hard-deny and hard-gate rule sets)."""

from .engine import (
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
)

__all__ = [
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
]
