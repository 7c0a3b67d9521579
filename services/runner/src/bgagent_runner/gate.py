"""The policy gate: every tool call passes here before it runs (allow, hard-deny, or wait for a human).

The Cedar engine (``bgagent_policy``) is loaded once per runner process and decides per call, in
this order: hard-deny rule ⇒ DENY; the task's allow-list (scopes pre-approved at submit or granted
by approvals, folded from the log) ⇒ ALLOW; the same call (tool, sha256 of its input) denied or timed
out within 60 s ⇒ DENY; hard-gate rule ⇒ REQUIRE_APPROVAL; else ALLOW. An engine error denies.

- DENY ⇒ ``policy_denied`` (the rule id, or ``recent_decision`` / ``fail_closed``); the tool result
  tells the model why; the tool does not run.
- REQUIRE_APPROVAL ⇒ ``approval_requested`` appended with an expected sequence (the fold moves the
  task to AWAITING_APPROVAL), then a wait on the task's ``approval_decided`` and ``cancel_requested``
  subjects (core NATS, no polling; the log is re-read after subscribing and on every wake, and is
  the only source of truth). Approve ⇒ the tool runs. Deny or the deadline ⇒ it does not, and the
  model's next user message holds a ``<user_denial>`` block (escaped like nudges). The deadline
  appends ``approval_expired`` with a conditional append that loses to a decision that landed
  first, so exactly one of them takes effect; a timeout never approves.
- A cancel during the wait wins (``GateCancelled``; the job's own cancel watch fires too).
- A later attempt (after a runner crash) that reaches a call whose (tool, sha256) is still open
  re-appends ``approval_requested`` with the same request id and the original deadline (the fold
  counts no new gate), so one call never has two live requests; a request of an earlier attempt
  decided meanwhile is honoured once (approve ⇒ run, deny or expiry ⇒ not run); one the attempt
  never reaches again is expired when the agent finishes (``close_leftovers``).
- Limits: ``approval_max_gates`` (50) distinct requests per task, one more fails the task
  (``APPROVAL_CAP``); ``approval_requests_per_minute`` (20) new requests per minute, more are
  denied (``approval_rate_limit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from bgagent_contracts import (
    ApprovalDecided,
    ApprovalExpired,
    ApprovalRequested,
    CancelRequested,
    DecidedApproval,
    MalformedEventError,
    PolicyDenied,
    TaskState,
    decode_recorded,
    recent_denial,
)
from bgagent_contracts.preview import preview
from bgagent_contracts.scopes import Allowlist
from bgagent_contracts.subjects import task_subject
from bgagent_contracts.text import clean
from bgagent_policy import Outcome, PolicyDecision, PolicyEngine, input_sha256

from . import observe
from .errors import ApprovalCapError
from .prompts import denial_block
from .session import TaskSession, new_id
from .settings import Settings

logger = logging.getLogger(__name__)

PREVIEW_CHARS = 256
"""``approval_requested.input_preview``: what a human sees before deciding (the design's 256)."""
REASON_CHARS = 1000
TOOL_NAME_CHARS = 64
RATE_WINDOW_S = 60.0
LIFETIME_MARGIN_S = 120.0
"""A gated call waits at most until this long before the task's wall-clock limit."""

RECENT_DECISION_RULE = "recent_decision"
FAIL_CLOSED_RULE = "fail_closed"
RATE_LIMIT_RULE = "approval_rate_limit"
LIFETIME_RULE = "approval_lifetime"
EDITOR = "str_replace_based_edit_tool"
_EDITOR_TEXTS = ("file_text", "old_str", "new_str", "insert_text")

_ESCAPES = re.compile(
    r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC … BEL or ST (window titles, hyperlinks, clipboard)
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC … ST
    r"|\x1b\[[0-?]*[ -/]*[@-~]"  # CSI (colours, cursor movement, erase)
    r"|\x1b[ -/]*[0-~]"  # any other escape sequence (charsets, keypad modes, RIS)
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
    r"|\x9d[^\x07\x9c]*[\x07\x9c]?"  # 8-bit OSC
)


def sanitise(text: str) -> str:
    """Terminal escape sequences (ANSI CSI, OSC, DCS, …) removed, then every control character but
    newline and tab (``contracts.text.clean``: also lone surrogates and bidi overrides)."""
    return clean(_ESCAPES.sub("", text))


def load_engine(settings: Settings) -> PolicyEngine:
    """The runner's one engine: the starter set, ``BGAGENT_POLICY_DIR``'s rules, minus
    ``BGAGENT_POLICY_DISABLE``; raises ``PolicyLoadError`` (the runner then refuses to start)."""
    extra = Path(settings.policy_dir) if settings.policy_dir else None
    return PolicyEngine.load(extra, disabled=settings.policy_disable)


def approval_timeout(
    settings: Settings, state: TaskState, rule_timeout_s: int | None, now: datetime
) -> float | None:
    """How long a new request waits: min(rule, task), floored (30 s) and capped (1 h), and ending
    ``LIFETIME_MARGIN_S`` before the task's wall-clock limit; None when that leaves less than the floor."""
    wanted = float(state.approval_timeout_s)
    if rule_timeout_s is not None:
        wanted = min(wanted, float(rule_timeout_s))
    timeout = min(max(wanted, settings.approval_timeout_floor_s), settings.approval_timeout_ceiling_s)
    if settings.task_timeout_s is not None and state.started_at is not None:
        left = settings.task_timeout_s - (now - state.started_at).total_seconds() - LIFETIME_MARGIN_S
        if left < min(timeout, settings.approval_timeout_floor_s):
            return None
        timeout = min(timeout, left)
    return timeout


@dataclass(frozen=True)
class Verdict:
    """What the agent does with one tool call."""

    run: bool
    message: str = ""
    """The ``tool_result`` text (``is_error``) when the call does not run."""
    steering: str | None = None
    """A text block for the model's next user message (``<user_denial …>``)."""


ALLOW = Verdict(run=True)


class GateCancelled(Exception):
    """A cancel was requested while a call waited for approval: the task ends CANCELLED."""


def decision_of(state: TaskState, request_id: str) -> DecidedApproval | None:
    return next((d for d in state.decided_approvals if d.request_id == request_id), None)


def _is_open(state: TaskState, request_id: str) -> bool:
    return any(a.request_id == request_id for a in state.open_approvals)


class Gate:
    """The policy check of one attempt's tool calls. Built after the claim, so it knows which
    approval requests earlier attempts left behind."""

    def __init__(self, session: TaskSession, settings: Settings, engine: PolicyEngine, *, nc: Client) -> None:
        self.session = session
        self.settings = settings
        self.engine = engine
        self.nc = nc
        state = session.state
        self._carried = {a.request_id for a in state.open_approvals} | {
            d.request_id for d in state.decided_approvals
        }
        """Requests of earlier attempts: a decision on one of them is honoured once by this attempt."""
        self._used: set[str] = set()

    # --- the check -------------------------------------------------------------------------------

    async def check(self, tool_use_id: str, name: str, tool_input: Any) -> Verdict:
        """Allow, deny (``policy_denied``) or ask and wait (``approval_requested``); see the module doc.

        Raises ``GateCancelled`` (cancel during a wait) and ``ApprovalCapError`` (too many gates).
        """
        if not isinstance(tool_input, Mapping):
            return ALLOW  # the agent refuses a non-object input without running anything
        state = self.session.state
        now = self.session.clock()
        tool = self._tool_name(name)
        cached: list[str] = []

        def recently_denied(_tool: str, sha: str) -> str | None:
            why = recent_denial(state, tool, sha, now)
            if why is not None:
                cached.append(why)
            return why

        decision = self.engine.evaluate(
            name, tool_input, allowed=Allowlist(state.approved_scopes).allows, recently_denied=recently_denied
        )
        if decision.outcome is Outcome.ALLOW:
            return ALLOW
        if decision.outcome is Outcome.DENY:
            if decision.rule_ids:
                rule = decision.rule_ids[0]
            else:
                rule = RECENT_DECISION_RULE if cached else FAIL_CLOSED_RULE
            return await self._deny(tool_use_id, tool, rule, decision.reason)
        return await self._approval(tool_use_id, name, tool_input, decision)

    async def _deny(self, tool_use_id: str, tool: str, rule_id: str, reason: str) -> Verdict:
        reason = self._text(reason, REASON_CHARS)
        await self.session.emit(
            PolicyDenied(
                **self.session.common(),
                tool_use_id=tool_use_id,
                tool_name=tool,
                rule_id=rule_id,
                reason=reason,
            )
        )
        logger.info("task %s: %s call denied by policy (%s)", self.session.task_id, tool, rule_id)
        return Verdict(
            run=False,
            message=(
                f"Denied by policy ({rule_id}): {reason}\n"
                "The tool call did not run. Do not retry it; find another way to reach the goal."
            ),
        )

    async def _approval(
        self, tool_use_id: str, name: str, tool_input: Mapping[str, Any], decision: PolicyDecision
    ) -> Verdict:
        state = self.session.state
        tool = self._tool_name(name)
        sha = input_sha256(name, tool_input)
        carried = self._carried_decision(state, tool, sha)
        if carried is not None:
            self._used.add(carried.request_id)
            logger.info(
                "task %s: honouring %s of request %s (an earlier attempt's)",
                self.session.task_id,
                carried.decision,
                carried.request_id,
            )
            return self._verdict(carried)
        now = self.session.clock()
        reopened = next(
            (a for a in state.open_approvals if a.tool_name == tool and a.input_sha256 == sha), None
        )
        if reopened is not None:  # an earlier attempt's request for this very call: wait on it again
            request_id = reopened.request_id
            deadline = reopened.deadline or now + timedelta(seconds=state.approval_timeout_s)
            timeout_s = max(0, math.ceil((deadline - reopened.requested_at).total_seconds()))
        else:
            cap = self.settings.approval_max_gates
            if state.approval_gates >= cap:
                raise ApprovalCapError(
                    f"{tool} needed approval ({', '.join(decision.rule_ids)}), but the task already asked "
                    f"for {state.approval_gates} approvals, the most one task may ask for ({cap})"
                )
            rate = self.settings.approval_requests_per_minute
            asked = [a.requested_at for a in state.open_approvals]
            asked += [d.requested_at for d in state.decided_approvals]
            recent = sum(1 for at in asked if (now - at).total_seconds() < RATE_WINDOW_S)
            if recent >= rate:
                return await self._deny(
                    tool_use_id,
                    tool,
                    RATE_LIMIT_RULE,
                    f"{decision.reason}; but the task asked for {recent} approvals within the last minute, "
                    f"the most allowed ({rate})",
                )
            timeout = self._timeout(state, decision, now)
            if timeout is None:
                return await self._deny(
                    tool_use_id,
                    tool,
                    LIFETIME_RULE,
                    f"{decision.reason}; but too little of the task's time limit is left to wait for a "
                    "decision",
                )
            request_id = new_id()
            deadline = now + timedelta(seconds=timeout)
            timeout_s = math.ceil(timeout)
        request = ApprovalRequested(
            **self.session.common(),
            request_id=request_id,
            tool_use_id=tool_use_id,
            tool_name=tool,
            input_preview=self._input_preview(name, tool_input),
            rule_id=decision.rule_ids[0] if decision.rule_ids else "",
            timeout_s=timeout_s,
            rule_ids=decision.rule_ids,
            severity=decision.severity,
            category=decision.category,
            input_sha256=sha,
            deadline=deadline,
        )
        with observe.approval_wait_span(request_id, tool, decision.rule_ids):
            async with self._watch() as woken:
                await self.session.emit_unless(request, lambda s: self._moot(s, request_id))
                logger.info(
                    "task %s: %s call waits for approval %s (rules %s, until %s)",
                    self.session.task_id,
                    tool,
                    request_id,
                    ",".join(decision.rule_ids),
                    deadline.isoformat(timespec="seconds"),
                )
                decided = await self._wait(request_id, deadline, woken)
        return self._verdict(decided)

    async def close_leftovers(self) -> None:
        """Expire the requests earlier attempts left open that this attempt never reached again (the
        replay took another path, or the call is allowed now): called when the agent has finished,
        so no request outlives the attempt that could still honour it."""
        for request in self.session.state.open_approvals:
            rid = request.request_id
            expired = ApprovalExpired(**self.session.common(), request_id=rid)
            if await self.session.emit_unless(expired, functools.partial(self._moot, request_id=rid)):
                logger.info(
                    "task %s: expired request %s left by attempt %d",
                    self.session.task_id,
                    rid,
                    request.attempt,
                )

    def _carried_decision(self, state: TaskState, tool: str, sha: str) -> DecidedApproval | None:
        for d in reversed(state.decided_approvals):
            if (
                d.request_id in self._carried
                and d.request_id not in self._used
                and d.tool_name == tool
                and d.input_sha256 == sha
            ):
                return d
        return None

    def _timeout(self, state: TaskState, decision: PolicyDecision, now: datetime) -> float | None:
        return approval_timeout(self.settings, state, decision.timeout_s, now)

    # --- the wait --------------------------------------------------------------------------------

    @staticmethod
    def _moot(state: TaskState, request_id: str) -> bool:
        """Nothing to ask or expire any more: cancelled, ended, or decided."""
        return state.cancel_requested or state.terminal or decision_of(state, request_id) is not None

    async def _wait(
        self, request_id: str, deadline: datetime, woken: asyncio.Event
    ) -> DecidedApproval | None:
        """Until the request is decided (or expired by us); None when the fold never opened it."""
        while True:
            woken.clear()  # before the read: a message arriving during it wakes the next wait
            state = await self.session.refresh()
            if state.cancel_requested or state.terminal:
                raise GateCancelled(request_id)
            decided = decision_of(state, request_id)
            if decided is not None:
                return decided
            if not _is_open(state, request_id):
                logger.error(
                    "task %s: approval request %s was not recorded", self.session.task_id, request_id
                )
                return None
            left = (deadline - self.session.clock()).total_seconds()
            if left <= 0:
                expired = ApprovalExpired(**self.session.common(), request_id=request_id)
                if await self.session.emit_unless(expired, lambda s: self._moot(s, request_id)):
                    logger.info("task %s: approval %s expired", self.session.task_id, request_id)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), timeout=left)

    @contextlib.asynccontextmanager
    async def _watch(self) -> AsyncIterator[asyncio.Event]:
        """Core-NATS subscriptions to the task's approval_decided and cancel_requested subjects."""
        woken = asyncio.Event()
        prefix = self.settings.nats.prefix

        async def on_msg(msg: Msg) -> None:
            try:
                event = decode_recorded(0, msg.subject, msg.data, prefix).event
            except MalformedEventError:
                return  # poison wakes nobody (the projector records it)
            if isinstance(event, ApprovalDecided | CancelRequested):
                woken.set()

        subs = []
        try:
            for kind in ("approval_decided", "cancel_requested"):
                subs.append(
                    await self.nc.subscribe(task_subject(self.session.task_id, kind, prefix), cb=on_msg)
                )
            with contextlib.suppress(Exception):  # the server has our interest before we append or read
                await self.nc.flush()
            yield woken
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    # --- what the model is told ------------------------------------------------------------------

    def _verdict(self, decided: DecidedApproval | None) -> Verdict:
        if decided is None:
            return Verdict(
                run=False,
                message="Not run: the approval request could not be recorded; the policy gate fails closed.",
            )
        if decided.decision == "approve":
            return ALLOW
        rid, tool = decided.request_id, decided.tool_name
        if decided.decision == "deny":
            by = decided.decided_by or "the task's owner"
            reason = self._text(decided.reason, REASON_CHARS) if decided.reason else "no reason given"
            return Verdict(
                run=False,
                message=f"Not run: {by} denied approval for this call (request {rid}); see <user_denial>.",
                steering=denial_block(rid, tool, "denied", f"{by} denied this {tool} call: {reason}"),
            )
        return Verdict(
            run=False,
            message=f"Not run: nobody approved this call in time (request {rid}); see <user_denial>.",
            steering=denial_block(
                rid,
                tool,
                "timed_out",
                f"Nobody approved this {tool} call in time, so it was denied. Do not retry it; find another "
                "way or finish without it.",
            ),
        )

    def _tool_name(self, name: str) -> str:
        return preview(sanitise(name), TOOL_NAME_CHARS, self.settings.secrets)

    def _text(self, text: str | None, limit: int) -> str:
        return preview(sanitise(text or ""), limit, self.settings.secrets)

    def _input_preview(self, name: str, tool_input: Mapping[str, Any]) -> str:
        return self._text(input_text(name, tool_input), PREVIEW_CHARS)


def input_text(name: str, tool_input: Mapping[str, Any]) -> str:
    """The call as a human reads it: the bash command; the editor's command, path and texts; else JSON
    of the sanitised values (JSON would turn an escape sequence into a harmless-looking ``\\u001b``)."""
    if name == "bash" and "command" in tool_input:
        return str(tool_input["command"])
    if name == EDITOR and isinstance(tool_input.get("command"), str):
        lines = [f"{tool_input['command']} {tool_input.get('path', '')}".rstrip()]
        lines += [f"{key}: {tool_input[key]}" for key in _EDITOR_TEXTS if key in tool_input]
        return "\n".join(lines)
    return json.dumps(_sanitised(tool_input), ensure_ascii=False, default=str)


def _sanitised(value: Any) -> Any:
    if isinstance(value, str):
        return sanitise(value)
    if isinstance(value, Mapping):
        return {sanitise(str(k)): _sanitised(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_sanitised(v) for v in value]
    return value
