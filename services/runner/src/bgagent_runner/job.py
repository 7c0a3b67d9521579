"""One claimed attempt from workspace to terminal event.

Phases: prepare the workspace and run the agent (interruptible: a cancel
request kills the running tool / model call within a second), then finalize
(commit, push, pull request; not interrupted once started, so a pushed branch
and its event never disagree). Runner errors become TaskFailed with their code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import anthropic
from nats.aio.client import Client
from nats.aio.msg import Msg

from bgagent_contracts import (
    CancelRequested,
    Event,
    MalformedEventError,
    Milestone,
    PrOpened,
    PrUpdated,
    ReviewPosted,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskType,
    WorkspaceReady,
    decode_recorded,
)
from bgagent_contracts.preview import redact
from bgagent_contracts.subjects import task_subject
from bgagent_policy import PolicyEngine

from . import observe
from .agent import Agent, AgentResult, Outcome
from .errors import ForgeError, ForgeUnsupportedError, RunnerError
from .forge import Forge, Issue, PullRequest
from .gate import Gate
from .prompts import commit_message, pr_body, pr_title, review_body, system_prompt, task_message
from .repo_policy import task_engine
from .sandbox import Sandbox
from .session import AttemptSuperseded, TaskSession
from .settings import Settings
from .tools import BashTool, TextEditor, scrubbed_env
from .trace import Trace, attach
from .workspace import (
    Git,
    RepoRef,
    Workspace,
    attempt_dir,
    checkout_new_branch,
    checkout_remote_branch,
    clone,
    commit_all,
    commits_ahead,
    default_branch,
    head_sha,
    parse_repo,
    push,
    remove,
)

logger = logging.getLogger(__name__)


class CancelWatch:
    """Core-NATS subscription to the task's cancel_requested subject (live, sub-second)."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.by: str | None = None
        self.reason: str | None = None
        self._sub: object | None = None

    async def start(self, nc: Client, subject: str, prefix: str) -> None:
        async def on_msg(msg: Msg) -> None:
            # Only a valid cancel_requested of this task counts: anything else on the subject is
            # poison (the projector records it) and must not stop the task.
            try:
                event = decode_recorded(0, msg.subject, msg.data, prefix).event
            except MalformedEventError as exc:
                logger.warning("ignoring a malformed message on %s: %s", msg.subject, exc)
                return
            if isinstance(event, CancelRequested):
                self.by, self.reason = event.requested_by, event.reason
                self.requested.set()

        self._sub = await nc.subscribe(subject, cb=on_msg)

    async def stop(self) -> None:
        sub = self._sub
        self._sub = None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()  # type: ignore[attr-defined]


class Job:
    def __init__(
        self,
        session: TaskSession,
        settings: Settings,
        *,
        nc: Client,
        client: anthropic.AsyncAnthropic | None,
        forge: Forge | None,
        policy: PolicyEngine,
    ) -> None:
        self.session = session
        self.settings = settings
        self.nc = nc
        self.client = client
        self.forge = forge
        self.policy = policy
        self.root = attempt_dir(settings, session.task_id, session.attempt)
        self.ws: Workspace | None = None
        self.git: Git | None = None
        self.trace = Trace(session.state.trace, settings.secrets)

    async def run(self) -> None:
        attach(self.trace, self.session, self.nc.jetstream(), self.settings.nats.prefix)
        watch = CancelWatch()
        prefix = self.settings.nats.prefix
        await watch.start(self.nc, task_subject(self.session.task_id, "cancel_requested", prefix), prefix)
        try:
            if (await self.session.refresh()).cancel_requested:
                watch.requested.set()
            result = await self._interruptible(watch)
            if result is None or result.outcome is Outcome.CANCELLED:
                await self._cancelled(watch)
            elif result.outcome is Outcome.FINISHED:
                await self._finalize(result.summary)
        except AttemptSuperseded as exc:
            logger.warning("%s; abandoning it", exc)
            raise
        except RunnerError as exc:
            message = redact(str(exc), self.settings.secrets)
            logger.warning("task %s failed: %s", self.session.task_id, message)
            await self.session.emit(TaskFailed(**self.session.common(), code=exc.code, message=message))
        finally:
            await watch.stop()
            if not self.settings.keep_workspaces:
                await asyncio.to_thread(remove, self.root)

    async def _interruptible(self, watch: CancelWatch) -> AgentResult | None:
        """Workspace + agent loop, abandoned at once when a cancel arrives (None then)."""
        work = asyncio.create_task(self._prepare_and_run())
        waiter = asyncio.create_task(watch.requested.wait())
        try:
            await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
        if work.cancelled():
            return None
        return work.result()

    async def _cancelled(self, watch: CancelWatch) -> None:
        by, reason = watch.by, watch.reason
        if by is None:
            log = await self.session.store.read(self.session.task_id)
            for record in reversed(log.records):
                if isinstance(record.event, CancelRequested):
                    by, reason = record.event.requested_by, record.event.reason
                    break
        await self.session.refresh()
        await self.session.emit(
            TaskCancelled(**self.session.common(), cancelled_by=by or "unknown", reason=reason)
        )

    # --- workspace -------------------------------------------------------------------------------

    async def _prepare_and_run(self) -> AgentResult:
        state = self.session.state
        ref = parse_repo(state.repo, self.settings)
        issue, pull = await self._forge_context(ref)
        git, repo_dir, home = await clone(self.settings, ref, self.root)
        # The agent gets a HOME and /tmp of its own, never the runner git's HOME (<attempt>/home): a
        # ~/.gitconfig written there (core.fsmonitor, hooksPath, …) would run in the runner's git.
        agent_home, agent_tmp = self.root / "sandbox" / "home", self.root / "sandbox" / "tmp"
        self.git = git
        base = await default_branch(git)
        if state.task_type is TaskType.NEW_TASK:
            branch, base_branch = f"bgagent/{state.task_id}", base
            base_sha = await head_sha(git)
            await checkout_new_branch(git, branch)
        else:
            assert pull is not None
            branch, base_branch = pull.head_ref, pull.base_ref
            await checkout_remote_branch(git, branch)
            base_sha = await head_sha(git)
        self.ws = Workspace(
            root=self.root,
            repo_dir=repo_dir,
            home=home,
            ref=ref,
            branch=branch,
            base_branch=base_branch,
            base_sha=base_sha,
            push=state.task_type is not TaskType.PR_REVIEW,
        )
        # the repository's own rules, read before the agent can touch them (repo_policy.py)
        policy, policy_note = await asyncio.to_thread(
            task_engine, self.policy, self.settings, repo_dir, self.root / "policies"
        )
        notes = (
            [Milestone(**self.session.common(), name="repo_policies", detail=policy_note)]
            if policy_note
            else []
        )
        await self.session.emit(
            Milestone(
                **self.session.common(),
                name="repo_cloned",
                detail=self._redact(f"cloned {state.repo} ({base})"),
            ),
            *notes,
            WorkspaceReady(
                **self.session.common(), branch=branch, base_branch=base_branch, head_sha=base_sha
            ),
        )
        agent = Agent(
            self.session,
            self.settings,
            self.client,
            system=system_prompt(state, str(repo_dir), branch),
            first_message=task_message(state, issue, pull),
            bash=BashTool(
                repo_dir,
                scrubbed_env(agent_home, workspace=repo_dir),
                timeout_s=self.settings.tool_timeout_s,
                output_cap=self.settings.tool_output_cap,
                sandbox=Sandbox(self.settings.sandbox) if self.settings.sandbox.mode == "bwrap" else None,
                home=agent_home,
                tmp=agent_tmp,
                network=self.session.network,
            ),
            editor=TextEditor(repo_dir),
            trace=self.trace,
            gate=Gate(self.session, self.settings, policy, nc=self.nc),
        )
        return await agent.run()

    async def _forge_context(self, ref: RepoRef) -> tuple[Issue | None, PullRequest | None]:
        state = self.session.state
        needs_pull = state.task_type is not TaskType.NEW_TASK
        if not ref.is_github or self.forge is None:
            if needs_pull:
                raise ForgeUnsupportedError(
                    f"{state.task_type.value} tasks need a GitHub repository; {state.repo} is not one"
                )
            return None, None
        assert ref.owner is not None
        assert ref.name is not None
        issue = None
        if state.issue_number is not None:
            issue = await self.forge.get_issue(ref.owner, ref.name, state.issue_number)
        pull = None
        if needs_pull:
            if state.pr_number is None:
                raise ForgeUnsupportedError(f"{state.task_type.value} task without a pr_number")
            pull = await self.forge.get_pull(ref.owner, ref.name, state.pr_number)
        return issue, pull

    # --- finalize --------------------------------------------------------------------------------
    # Everything written from here (commit message, pull request, review, event details) is redacted
    # and shaped by prompts.py / _redact: the agent's final text and the task description are
    # untrusted and may hold secrets the agent printed.

    def _redact(self, text: str) -> str:
        return redact(text, self.settings.secrets)

    @observe.phase_span("finalize")
    async def _finalize(self, summary: str | None) -> None:
        assert self.ws is not None
        assert self.git is not None
        ws, git, state = self.ws, self.git, self.session.state
        common = self.session.common
        secrets = self.settings.secrets
        if not ws.push:
            await self._post_review(summary)
            return
        await commit_all(git, commit_message(state, secrets))
        ahead = await commits_ahead(git, ws.base_sha)
        if ahead == 0:
            await self.session.emit(
                Milestone(**common(), name="no_changes", detail="the agent changed nothing; nothing pushed"),
                TaskCompleted(**common(), result="no_changes", branch=ws.branch),
            )
            return
        await self.session.emit(
            Milestone(**common(), name="committed", detail=f"{ahead} commit(s) on {ws.branch}")
        )
        await push(git, ws.branch, force=state.task_type is TaskType.NEW_TASK)
        sha = await head_sha(git)
        events: list[Event] = []
        pr_url: str | None = None
        if ws.ref.is_github and self.forge is not None:
            assert ws.ref.owner is not None
            assert ws.ref.name is not None
            events.append(
                Milestone(
                    **common(),
                    name="branch_pushed",
                    detail=self._redact(f"pushed {ws.branch} to {state.repo}"),
                )
            )
            try:
                pull = await self.forge.find_open_pull(ws.ref.owner, ws.ref.name, ws.branch)
                opened = pull is None
                if pull is None:
                    pull = await self.forge.open_pull(
                        ws.ref.owner,
                        ws.ref.name,
                        head=ws.branch,
                        base=ws.base_branch,
                        title=pr_title(state, secrets),
                        body=pr_body(state, summary, secrets),
                    )
            except ForgeError as exc:
                raise ForgeError(
                    f"pushed {ws.branch} ({sha[:12]}), but the pull request failed: {exc}"
                ) from exc
            if opened:
                events.append(PrOpened(**common(), pr_number=pull.number, pr_url=pull.url, branch=ws.branch))
                result = "pr_opened"
            else:
                events.append(PrUpdated(**common(), pr_number=pull.number, pr_url=pull.url, branch=ws.branch))
                result = "pr_updated"
            pr_url = pull.url
        else:
            detail = (
                f"pushed {ws.branch} to {_display(ws.ref)}; no pull request was opened because the remote "
                "is not GitHub"
            )
            events.append(Milestone(**common(), name="branch_pushed", detail=self._redact(detail)))
            result = "branch_pushed"
        events.append(TaskCompleted(**common(), result=result, branch=ws.branch, pr_url=pr_url, head_sha=sha))
        await self.session.emit(*events)

    @observe.phase_span("post review")
    async def _post_review(self, summary: str | None) -> None:
        assert self.ws is not None
        state, ws = self.session.state, self.ws
        if self.forge is None or ws.ref.owner is None or ws.ref.name is None or state.pr_number is None:
            raise ForgeUnsupportedError("a review can only be posted to a GitHub pull request")
        body = review_body(state, summary, self.settings.secrets)
        url = await self.forge.post_review(ws.ref.owner, ws.ref.name, state.pr_number, body)
        common = self.session.common
        await self.session.emit(
            ReviewPosted(**common(), pr_number=state.pr_number, review_url=url),
            TaskCompleted(**common(), result="review_posted", branch=ws.branch, pr_url=url),
        )


def _display(ref: RepoRef) -> str:
    if ref.kind == "local":
        return str(Path(ref.clone_url.removeprefix("file://")))
    return ref.clone_url
