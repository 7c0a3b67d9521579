"""The runner process: pull task_submitted from the shared durable, claim, run, ack.

Every replica binds to the same durable pull consumer, so JetStream hands each
submission to one of them; the expected-sequence ``task_started`` append is
what guarantees that two runners never both run one attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import anthropic
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from opentelemetry.trace import Span

from bgagent_contracts import TaskFailed
from bgagent_contracts.preview import redact
from bgagent_contracts.subjects import runner_consumer
from bgagent_eventstore import ConcurrencyError, JetStreamEventStore, StoreUnavailableError, connect
from bgagent_eventstore.heartbeats import Heartbeats
from bgagent_eventstore.heartbeats import bucket as heartbeat_bucket
from bgagent_policy import PolicyEngine

from . import observe
from .cleanup import sweep
from .errors import NotProvisionedError
from .forge import Forge, GitHubForge
from .gate import load_engine
from .intake import delivered_task, fail_invalid, submission_problem
from .job import Job
from .session import AttemptSuperseded, ClaimLost, claim, utcnow
from .settings import Settings

logger = logging.getLogger(__name__)

_NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error)


class Runner:
    """N task slots over one NATS connection. ``await run()`` until ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        *,
        nc: Client | None = None,
        forge: Forge | None = None,
        client: anthropic.AsyncAnthropic | None = None,
        policy: PolicyEngine | None = None,
    ) -> None:
        self.settings = settings
        self.policy = load_engine(settings) if policy is None else policy
        """The Cedar policy engine, loaded once per process (``PolicyLoadError`` here: no runner)."""
        self._nc = nc
        self._own_nc = nc is None
        self._forge = forge
        self._client = client
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.slots)
        self._jobs: dict[asyncio.Task[None], str] = {}
        self.active: set[str] = set()
        self._heartbeats: Heartbeats | None = None

    @property
    def runner_id(self) -> str:
        return self.settings.runner_id

    def stop(self) -> None:
        """Stop fetching; in-flight tasks get ``shutdown_grace_s`` to finish, then are handed back."""
        self._stopping.set()

    async def run(self) -> None:
        s = self.settings
        nc = self._nc or await connect(s.nats.url, name=f"bgagent-runner {s.runner_id}", auth=s.nats.auth)
        self._nc = nc
        forge = self._forge or GitHubForge(s.github_api_url, s.github_token)
        client = self._client
        if client is None and s.anthropic_api_key:
            client = anthropic.AsyncAnthropic(api_key=s.anthropic_api_key, base_url=s.anthropic_base_url)
        store = JetStreamEventStore(nc, stream=s.nats.stream, prefix=s.nats.prefix, outage_s=s.nats.outage_s)
        psub, kv = await self._bind(nc)
        heartbeats = self._heartbeats = Heartbeats(kv, s.runner_id, interval_s=s.heartbeat_interval_s)
        beating = asyncio.create_task(heartbeats.run(), name="heartbeats")
        depth = asyncio.create_task(
            observe.poll_queue_depth(nc.jetstream(), s.nats.stream, runner_consumer(s.nats.prefix)),
            name="queue-depth",
        )
        await self._sweep_workspaces()
        logger.info("runner %s ready: %d slot(s) on %s", s.runner_id, s.slots, s.nats.stream)
        self.ready.set()
        if s.ready_file:
            await asyncio.to_thread(Path(s.ready_file).write_text, s.runner_id)
        try:
            while await self._acquire_slot():
                handed_off = False
                try:
                    try:
                        msgs = await psub.fetch(1, timeout=s.fetch_timeout_s)
                    except (TimeoutError, nats.errors.TimeoutError):
                        continue
                    except _NATS_ERRORS as exc:
                        logger.warning("fetch failed: %s", exc)
                        await asyncio.sleep(min(1.0, s.fetch_timeout_s))
                        continue
                    for msg in msgs:
                        job = asyncio.create_task(self._handle(msg, store, nc, forge, client))
                        self._jobs[job] = msg.subject
                        job.add_done_callback(self._job_done)
                        handed_off = True
                finally:
                    if not handed_off:
                        self._slots.release()
        finally:
            await self._drain_jobs()
            beating.cancel()
            depth.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
            await heartbeats.stop()
            with contextlib.suppress(*_NATS_ERRORS):
                await psub.unsubscribe()
            if self._forge is None:
                await forge.aclose()
            if self._client is None and client is not None:
                await client.close()
            if self._own_nc:
                try:
                    await nc.drain()
                except _NATS_ERRORS:  # e.g. still reconnecting during an outage: close without draining
                    with contextlib.suppress(*_NATS_ERRORS, OSError):
                        await nc.close()
            logger.info("runner %s stopped", s.runner_id)

    async def _bind(self, nc: Client) -> tuple[JetStreamContext.PullSubscription, KeyValue]:
        """The work consumer and the heartbeat bucket; NotProvisionedError when either is missing."""
        s = self.settings
        js = nc.jetstream()
        durable = runner_consumer(s.nats.prefix)
        try:
            await js.consumer_info(s.nats.stream, durable)
            kv = await heartbeat_bucket(js, s.nats.prefix)
        except nats.js.errors.NotFoundError as exc:  # BucketNotFoundError is one too
            if self._own_nc:
                await nc.close()
            raise NotProvisionedError(
                f"stream {s.nats.stream}, its consumer {durable} or the heartbeat bucket does not exist: "
                "run 'bgagent admin init'"
            ) from exc
        return await js.pull_subscribe_bind(durable=durable, stream=s.nats.stream), kv

    async def _sweep_workspaces(self) -> None:
        """Remove the workspaces of attempts whose runner is gone (killed, crashed): ``cleanup.sweep``."""
        if self.settings.keep_workspaces:
            return
        swept = await asyncio.to_thread(sweep, Path(self.settings.work_dir))
        if swept:
            logger.info("removed %d workspace(s) of attempts no live runner owns", len(swept))

    async def _acquire_slot(self) -> bool:
        """Wait for a free slot; False (holding none) once stop() was called."""
        if self._stopping.is_set():
            return False
        acquire = asyncio.create_task(self._slots.acquire())
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({acquire, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not acquire.done():
                acquire.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await acquire
        if acquire.cancelled():
            return False
        if self._stopping.is_set():
            self._slots.release()
            return False
        return True

    def _job_done(self, job: asyncio.Task[None]) -> None:
        self._jobs.pop(job, None)
        self._slots.release()
        if not job.cancelled() and job.exception() is not None:
            logger.error("job crashed", exc_info=job.exception())

    async def _drain_jobs(self) -> None:
        jobs = list(self._jobs)
        if not jobs:
            return
        _, pending = await asyncio.wait(jobs, timeout=self.settings.shutdown_grace_s)
        for job in pending:
            job.cancel()
        if pending:
            logger.warning("handing %d unfinished task(s) back to the queue", len(pending))
            await asyncio.wait(pending, timeout=10)

    async def _keep_alive(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(self.settings.in_progress_interval_s)
            try:
                await msg.in_progress()
            except _NATS_ERRORS as exc:
                logger.warning("in-progress ack failed: %s", exc)

    async def _handle(
        self,
        msg: Msg,
        store: JetStreamEventStore,
        nc: Client,
        forge: Forge,
        client: anthropic.AsyncAnthropic | None,
    ) -> None:
        heartbeat = asyncio.create_task(self._keep_alive(msg))
        try:
            verdict = await self._process(msg, store, nc, forge, client)
        except asyncio.CancelledError:
            with contextlib.suppress(*_NATS_ERRORS):
                await msg.nak()
            raise
        except StoreUnavailableError as exc:
            logger.warning("NATS unavailable while handling %s: %s", msg.subject, exc)
            verdict = "retry"
        finally:
            heartbeat.cancel()
        try:
            if verdict == "ack":
                await msg.ack()
            elif verdict == "term":
                await msg.term()
            elif verdict == "busy":
                await msg.nak(delay=self.settings.nak_delay_s)
            elif verdict == "retry":
                await msg.nak(delay=5.0)
        except _NATS_ERRORS as exc:
            logger.warning("could not %s %s: %s", verdict, msg.subject, exc)

    async def _process(
        self,
        msg: Msg,
        store: JetStreamEventStore,
        nc: Client,
        forge: Forge,
        client: anthropic.AsyncAnthropic | None,
    ) -> str:
        """Handle one delivery inside the task span, a child of the submission's trace context."""
        with observe.task_span(msg.headers) as span:
            return await self._process_delivery(msg, store, nc, forge, client, span)

    async def _process_delivery(
        self,
        msg: Msg,
        store: JetStreamEventStore,
        nc: Client,
        forge: Forge,
        client: anthropic.AsyncAnthropic | None,
        span: Span,
    ) -> str:
        task_id = await delivered_task(msg, nc.jetstream(), self.settings.nats.prefix)
        if task_id is None:
            return "term"  # poison: recorded, never redelivered
        observe.name_task(span, task_id)
        if task_id in self.active:
            return "none"  # a redelivery of a task this process is running: its handler acks
        log = await store.read(task_id)
        state = log.state()
        if state is None:
            logger.error("task %s has no readable task_submitted; dropping the message", task_id)
            return "term"
        if state.terminal:
            return "ack"
        if state.attempt >= self.settings.max_attempts:
            # a second work message (a requeue) of a task whose attempts are spent: the reconciler
            # ends it (RUNNER_LOST) once its last runner's heartbeat is gone
            logger.warning("task %s: %d attempts spent; not claiming it again", task_id, state.attempt)
            return "ack"
        sandbox = self.settings.sandbox
        problem = submission_problem(log, self.settings.local_repo_roots, allow_network=sandbox.allow_network)
        if problem is not None:
            try:
                await fail_invalid(store, log, problem)
            except ConcurrencyError:
                return "busy"  # the log moved (a cancel?): look again on redelivery
            return "ack"
        try:
            # task_started and every later append carry the current span (this task span or a child).
            session = await claim(store, log, self.runner_id, now=utcnow(), sandbox=sandbox.mode)
        except ClaimLost as lost:
            if lost.state is None or lost.state.terminal:
                return "ack"
            logger.info("task %s is owned by %s; backing off", task_id, lost.state.runner_id)
            return "busy"
        logger.info("claimed task %s (attempt %d)", task_id, session.attempt)
        observe.claimed(span, session.attempt, self.runner_id)
        self.active.add(task_id)
        heartbeats = self._heartbeats
        assert heartbeats is not None
        await heartbeats.hold(task_id, session.attempt)
        try:
            try:
                await Job(session, self.settings, nc=nc, client=client, forge=forge, policy=self.policy).run()
            except (StoreUnavailableError, asyncio.CancelledError):
                raise
            except AttemptSuperseded:
                return "none"  # the newer attempt's runner holds the message now
            except Exception as exc:
                logger.exception("task %s: unexpected error", task_id)
                message = redact(f"{type(exc).__name__}: {exc}", self.settings.secrets)[:1000]
                await session.emit(TaskFailed(**session.common(), code="RUNNER_ERROR", message=message))
        finally:
            self.active.discard(task_id)
            await heartbeats.release(task_id)
        observe.finished(span, session.state.status.value)
        logger.info("task %s done: %s", task_id, session.state.status.value)
        return "ack"
