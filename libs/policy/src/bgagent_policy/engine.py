"""The tool-call policy engine: Cedar hard-deny and hard-gate sets, parsed once, evaluated per call.

Cedar has no "require approval" outcome, so the engine keeps two policy sets. Each holds the ``forbid``
rules of one tier plus a base ``permit``: a matching ``forbid`` in the hard-deny set means DENY, a
matching ``forbid`` in the hard-gate set means REQUIRE_APPROVAL. The tier comes from the file a rule
is written in; rule metadata comes from Cedar annotations read with ``cedarpy.policies_to_json_str``.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import cedarpy

HARD_DENY = "hard-deny"
HARD_GATE = "hard-gate"
HARD_DENY_FILE = "hard_deny.cedar"
HARD_GATE_FILE = "hard_gate.cedar"
REPO_POLICY_DIR = ".bgagent/policies"  # a repository's own rule files, relative to its root
MIN_APPROVAL_TIMEOUT_S = 30
SEVERITIES = ("low", "medium", "high", "critical")
BASE_PERMIT_ID = "bgagent:base_permit"

_RULE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGITS = re.compile(r"[0-9]+")
_BASE_PERMIT = "permit(principal, action, resource);"

PRINCIPAL = {"type": "Agent", "id": "bgagent"}
EDIT_TOOL = "str_replace_based_edit_tool"
_READ_COMMANDS = frozenset({"view"})

AllowedFn = Callable[[str, Mapping[str, Any], tuple[str, ...]], bool]
RecentlyDeniedFn = Callable[[str, str], str | None]


class Outcome(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"


@dataclass(frozen=True)
class RuleInfo:
    """One loaded rule and its annotations (``tier`` is "hard-deny" or "hard-gate")."""

    rule_id: str
    tier: str
    severity: str | None
    category: str | None
    approval_timeout_s: int | None
    summary: str


@dataclass(frozen=True)
class PolicyDecision:
    outcome: Outcome
    rule_ids: tuple[str, ...]
    reason: str
    severity: str | None = None
    timeout_s: int | None = None
    category: str | None = None

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW


class PolicyLoadError(Exception):
    """A policy file or rule the engine refuses to load; the message names the file/rule and the problem."""


def input_sha256(tool_name: str, tool_input: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON (sorted keys, no spaces) of the tool input.

    ``tool_name`` is part of the signature so callers key caches on (tool, sha); it is not hashed.
    """
    del tool_name
    canonical = json.dumps(tool_input, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def cedar_request(tool_name: str, tool_input: Mapping[str, Any]) -> dict[str, Any]:
    """The Cedar request for one tool call.

    ``bash`` → ``Action::"bash"`` with the command in ``context.command``; the edit tool's ``view`` →
    ``Action::"read_file"``, its other commands → ``Action::"write_file"``, the path in
    ``context.file_path``; any other tool → ``Action::"invoke_tool"``. Resources are sentinels
    (``Sentinel::"bash"``, ``Sentinel::"file"``, ``Sentinel::"tool"``). The context always carries
    ``tool``, ``command`` and ``file_path`` (empty strings where they do not apply) so a rule never
    fails on a missing attribute.
    """
    command = ""
    file_path = ""
    if tool_name == "bash":
        action, resource = "bash", "bash"
        command = _text_field(tool_input, "command")
    elif tool_name == EDIT_TOOL:
        sub = _text_field(tool_input, "command")
        action = "read_file" if sub in _READ_COMMANDS else "write_file"
        resource = "file"
        file_path = _text_field(tool_input, "path")
    else:
        action, resource = "invoke_tool", "tool"
    return {
        "principal": PRINCIPAL,
        "action": {"type": "Action", "id": action},
        "resource": {"type": "Sentinel", "id": resource},
        "context": {"tool": tool_name, "command": command, "file_path": file_path},
    }


def _text_field(tool_input: Mapping[str, Any], key: str) -> str:
    value = tool_input.get(key, "")
    if not isinstance(value, str):
        raise TypeError(f"tool input field {key!r} is {type(value).__name__}, not a string")
    return value


@dataclass(frozen=True)
class _Source:
    label: str
    tier: str
    text: str


class _TierSet:
    """The parsed ``PolicySet`` of one tier (its rules plus the base permit), built once."""

    def __init__(self, rules: list[tuple[RuleInfo, dict[str, Any]]], base: dict[str, Any]) -> None:
        static = {info.rule_id: body for info, body in rules}
        static[BASE_PERMIT_ID] = base
        doc = {"staticPolicies": static, "templates": {}, "templateLinks": []}
        self.policy_set = cedarpy.PolicySet.from_json_str(json.dumps(doc))
        self.order = {info.rule_id: n for n, (info, _) in enumerate(rules)}

    def matches(self, request: Mapping[str, Any], entities: cedarpy.Entities) -> tuple[str, ...]:
        result = cedarpy.is_authorized(dict(request), self.policy_set, entities)
        errors = result.diagnostics.errors
        if errors:
            raise PolicyEvaluationError("; ".join(str(e) for e in errors))
        decision = result.decision
        if decision is cedarpy.Decision.Allow:
            return ()
        if decision is not cedarpy.Decision.Deny:
            raise PolicyEvaluationError(f"cedar returned {decision.value}")
        ids = [r for r in result.diagnostics.reasons if r in self.order]
        if not ids:
            raise PolicyEvaluationError("cedar denied without a known determining rule")
        return tuple(sorted(ids, key=self.order.__getitem__))


class PolicyEvaluationError(Exception):
    """Cedar reported an error, or an outcome the engine cannot explain; the call fails closed."""


def _starter_sources() -> list[_Source]:
    root = resources.files("bgagent_policy") / "policies"
    return [
        _Source(f"starter:{HARD_DENY_FILE}", HARD_DENY, (root / HARD_DENY_FILE).read_text("utf-8")),
        _Source(f"starter:{HARD_GATE_FILE}", HARD_GATE, (root / HARD_GATE_FILE).read_text("utf-8")),
    ]


def _extra_sources(extra_dir: Path) -> list[_Source]:
    if not extra_dir.is_dir():
        raise PolicyLoadError(f"{extra_dir}: not a directory")
    sources = []
    for name, tier in ((HARD_DENY_FILE, HARD_DENY), (HARD_GATE_FILE, HARD_GATE)):
        path = extra_dir / name
        if path.is_file():
            try:
                text = path.read_text("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise PolicyLoadError(f"{path}: cannot be read: {exc}") from exc
            sources.append(_Source(str(path), tier, text))
    return sources


def _annotation_timeout(where: str, raw: str | None) -> int | None:
    if raw is None:
        return None
    if not _DIGITS.fullmatch(raw.strip()):
        raise PolicyLoadError(f"{where}: @approval_timeout_s({raw!r}) is not an integer number of seconds")
    value = int(raw.strip())
    if value < MIN_APPROVAL_TIMEOUT_S:
        raise PolicyLoadError(f"{where}: @approval_timeout_s({value}) is under {MIN_APPROVAL_TIMEOUT_S} s")
    return value


def _parse_source(source: _Source) -> list[tuple[RuleInfo, dict[str, Any]]]:
    """The rules of one file in file order, with their annotations checked."""
    try:
        doc = json.loads(cedarpy.policies_to_json_str(source.text))
    except ValueError as exc:
        raise PolicyLoadError(f"{source.label}: malformed policy: {exc}") from exc
    if doc.get("templates"):
        raise PolicyLoadError(f"{source.label}: policy templates are not supported")
    static: dict[str, dict[str, Any]] = doc.get("staticPolicies", {})
    rules = []
    for index, (_cedar_id, body) in enumerate(sorted(static.items(), key=lambda kv: _policy_index(kv[0]))):
        annotations: dict[str, str | None] = body.get("annotations") or {}
        rule_id = annotations.get("rule_id")
        if "rule_id" in annotations and rule_id is None:
            rule_id = ""  # a bare @rule_id: refused below like any other malformed id
        where = f"{source.label}: rule {rule_id!r}" if rule_id else f"{source.label}: policy #{index + 1}"
        if rule_id is None:
            if source.tier == HARD_GATE:
                raise PolicyLoadError(f"{where}: a hard-gate rule needs @rule_id")
            rule_id = f"{Path(source.label).name.removesuffix('.cedar')}#{index + 1}"
        elif not _RULE_ID.fullmatch(rule_id):
            raise PolicyLoadError(f"{where}: @rule_id must be 1-128 of A-Z a-z 0-9 _ . - (not starting . -)")
        if body.get("effect") != "forbid":
            raise PolicyLoadError(
                f"{where}: only forbid rules belong in a policy file (the engine adds permit)"
            )
        tier = annotations.get("tier")
        if tier is not None and tier != source.tier:
            raise PolicyLoadError(f"{where}: @tier({tier!r}) contradicts its file, which holds {source.tier}")
        severity = annotations.get("severity")
        if severity is not None and severity not in SEVERITIES:
            raise PolicyLoadError(f"{where}: @severity({severity!r}) is not one of {', '.join(SEVERITIES)}")
        raw_timeout = annotations.get("approval_timeout_s")
        if "approval_timeout_s" in annotations and raw_timeout is None:
            raw_timeout = ""  # a bare @approval_timeout_s: not an integer
        timeout = _annotation_timeout(where, raw_timeout)
        info = RuleInfo(
            rule_id=rule_id,
            tier=source.tier,
            severity=severity,
            category=annotations.get("category"),
            approval_timeout_s=timeout,
            summary=annotations.get("summary") or "",
        )
        rules.append((info, body))
    return rules


def _policy_index(cedar_id: str) -> tuple[int, str]:
    digits = cedar_id.removeprefix("policy")
    return (int(digits), cedar_id) if digits.isdigit() else (1 << 30, cedar_id)


def _base_permit() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(cedarpy.policies_to_json_str(_BASE_PERMIT))["staticPolicies"]["policy0"]
    return body


def _severity_rank(severity: str | None) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


class PolicyEngine:
    """Two Cedar policy sets (hard-deny, hard-gate) built once by :meth:`load`, evaluated per tool call."""

    def __init__(self, rules: list[tuple[RuleInfo, dict[str, Any]]]) -> None:
        base = _base_permit()
        self._rules = {info.rule_id: info for info, _ in rules}
        self._deny = _TierSet([r for r in rules if r[0].tier == HARD_DENY], base)
        self._gate = _TierSet([r for r in rules if r[0].tier == HARD_GATE], base)
        self._entities = cedarpy.Entities.from_json_str("[]")

    @classmethod
    def load(
        cls,
        extra_dir: Path | None = None,
        *,
        disabled: Iterable[str] = (),
        more_dirs: Iterable[Path] = (),
    ) -> PolicyEngine:
        """The starter set, plus ``hard_deny.cedar`` / ``hard_gate.cedar`` from ``extra_dir`` (the
        installation's) and then from each of ``more_dirs`` (a repository's) when present.

        ``disabled`` drops hard-gate rules by id; naming a hard-deny rule or an unknown id is refused.
        """
        sources = _starter_sources()
        for directory in (*([extra_dir] if extra_dir is not None else []), *more_dirs):
            sources += _extra_sources(Path(directory))
        rules: list[tuple[RuleInfo, dict[str, Any]]] = []
        seen: dict[str, str] = {}
        for source in sources:
            for info, body in _parse_source(source):
                if info.rule_id in seen:
                    first = seen[info.rule_id]
                    raise PolicyLoadError(
                        f"{source.label}: duplicate @rule_id {info.rule_id!r} (also in {first})"
                    )
                seen[info.rule_id] = source.label
                rules.append((info, body))
        tiers = {info.rule_id: info.tier for info, _ in rules}
        drop = set()
        for rule_id in disabled:
            if rule_id not in tiers:
                raise PolicyLoadError(f"disabled rule {rule_id!r}: no such rule")
            if tiers[rule_id] == HARD_DENY:
                raise PolicyLoadError(f"disabled rule {rule_id!r}: hard-deny rules cannot be disabled")
            drop.add(rule_id)
        try:
            return cls([r for r in rules if r[0].rule_id not in drop])
        except ValueError as exc:
            raise PolicyLoadError(f"the policy set cannot be built: {exc}") from exc

    def rules(self) -> list[RuleInfo]:
        """Every loaded rule: hard-deny first, then hard-gate, each in file order."""
        infos = list(self._rules.values())
        return [i for i in infos if i.tier == HARD_DENY] + [i for i in infos if i.tier == HARD_GATE]

    def is_hard_deny(self, rule_id: str) -> bool:
        info = self._rules.get(rule_id)
        return info is not None and info.tier == HARD_DENY

    def evaluate(
        self,
        tool_name: str,
        tool_input: Mapping[str, Any],
        *,
        allowed: AllowedFn = lambda t, i, r: False,
        recently_denied: RecentlyDeniedFn = lambda t, sha: None,
    ) -> PolicyDecision:
        """hard-deny ⇒ DENY; allow-list ⇒ ALLOW; recent denial ⇒ DENY; hard-gate ⇒ ALLOW by rule scope or
        REQUIRE_APPROVAL; otherwise ALLOW. Any error (Cedar, bad input, a raising callback) ⇒ DENY."""
        try:
            return self._evaluate(tool_name, tool_input, allowed, recently_denied)
        except Exception as exc:  # noqa: BLE001  (fail closed on any error, whatever raised it)
            return PolicyDecision(Outcome.DENY, (), f"fail closed: {type(exc).__name__}")

    def _evaluate(
        self,
        tool_name: str,
        tool_input: Mapping[str, Any],
        allowed: AllowedFn,
        recently_denied: RecentlyDeniedFn,
    ) -> PolicyDecision:
        request = cedar_request(tool_name, tool_input)
        denied = self._deny.matches(request, self._entities)
        if denied:
            return self._hard_deny(denied)
        if allowed(tool_name, tool_input, ()):
            return PolicyDecision(Outcome.ALLOW, (), "allowed by an approval scope")
        cached = recently_denied(tool_name, input_sha256(tool_name, tool_input))
        if cached is not None:
            return PolicyDecision(Outcome.DENY, (), cached)
        gated = self._gate.matches(request, self._entities)
        if not gated:
            return PolicyDecision(Outcome.ALLOW, (), "no rule matched")
        if allowed(tool_name, tool_input, gated):
            return PolicyDecision(Outcome.ALLOW, gated, f"allowed by a rule scope for {', '.join(gated)}")
        return self._gate_decision(gated)

    def _hard_deny(self, rule_ids: tuple[str, ...]) -> PolicyDecision:
        infos = [self._rules[r] for r in rule_ids]
        top = max(infos, key=lambda i: _severity_rank(i.severity))
        return PolicyDecision(
            Outcome.DENY,
            rule_ids,
            "hard-deny: " + "; ".join(_describe(i) for i in infos),
            severity=top.severity,
            category=top.category or next((i.category for i in infos if i.category), None),
        )

    def _gate_decision(self, rule_ids: tuple[str, ...]) -> PolicyDecision:
        infos = [self._rules[r] for r in rule_ids]
        timeouts = [i.approval_timeout_s for i in infos if i.approval_timeout_s is not None]
        top = max(infos, key=lambda i: _severity_rank(i.severity))
        return PolicyDecision(
            Outcome.REQUIRE_APPROVAL,
            rule_ids,
            "approval required: " + "; ".join(_describe(i) for i in infos),
            severity=top.severity,
            timeout_s=min(timeouts) if timeouts else None,
            category=top.category or next((i.category for i in infos if i.category), None),
        )


def _describe(info: RuleInfo) -> str:
    return f"{info.rule_id} ({info.summary})" if info.summary else info.rule_id


DISABLED_FILE = "disabled"
"""In a policy directory: hard-gate rule ids to drop, one per line (``#`` starts a comment)."""


def read_disabled(directory: Path) -> list[str]:
    """The rule ids listed in ``<directory>/disabled`` (none when the file is absent)."""
    path = Path(directory) / DISABLED_FILE
    if not path.is_file():
        return []
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyLoadError(f"{path}: cannot be read: {exc}") from exc
    ids = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return [i for i in ids if i]
