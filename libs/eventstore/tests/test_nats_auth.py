"""NATS users and permissions on a real nats-server running the generated config: each bgagent user
can do its work, everything else is refused (docs/security.md#nats-permissions).

``test_nats_auth_config.py`` checks the same config without a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy, StreamConfig

from bgagent_contracts import (
    EVENT_TYPE_NAMES,
    Actor,
    CancelRequested,
    Milestone,
    NudgeRequested,
    TaskCompleted,
    TaskFailed,
    TaskRequeued,
    TaskStarted,
    TaskSubmitted,
)
from bgagent_contracts.subjects import (
    advisory_stream,
    comments_bucket,
    fanout_consumer,
    heartbeats_bucket,
    idempotency_bucket,
    poison_bucket,
    reconciler_consumer,
    runner_consumer,
    task_filter,
    task_subject,
    traces_bucket,
)
from bgagent_contracts.writers import WRITERS, Role
from bgagent_eventstore import (
    JetStreamEventStore,
    NatsAuth,
    NatsAuthError,
    NatsSettings,
    StoreUnavailableError,
    connect,
    follow,
    list_poison,
    provision,
    read_direct,
    record_poison,
)
from bgagent_eventstore.heartbeats import Heartbeats, read_beats
from bgagent_eventstore.heartbeats import bucket as heartbeat_bucket
from bgagent_eventstore.nats_auth import ADMIN, OPERATOR, auth_for, write_auth_dir
from bgagent_testing.servers import NatsServer, ServerError

pytestmark = pytest.mark.integration

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]+)"', re.IGNORECASE)


def new_id() -> str:
    return "0" + "".join(secrets.choice(CROCKFORD) for _ in range(25))


def now() -> datetime:
    return datetime.now(UTC)


def submitted(task_id: str) -> TaskSubmitted:
    return TaskSubmitted(
        task_id=task_id, event_id=new_id(), ts=now(), actor=Actor.ADMISSION, user_id="alice", repo="acme/w"
    )


def started(task_id: str) -> TaskStarted:
    return TaskStarted(
        task_id=task_id, event_id=new_id(), ts=now(), actor=Actor.RUNNER, attempt=1, runner_id="r1"
    )


def milestone(task_id: str) -> Milestone:
    return Milestone(task_id=task_id, event_id=new_id(), ts=now(), actor=Actor.RUNNER, attempt=1, name="m")


def completed(task_id: str) -> TaskCompleted:
    return TaskCompleted(
        task_id=task_id, event_id=new_id(), ts=now(), actor=Actor.RUNNER, attempt=1, result="no_changes"
    )


class AuthServer:
    def __init__(self, server: NatsServer, directory: str, settings: NatsSettings) -> None:
        self.server = server
        self.directory = directory
        self.settings = settings

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def stream(self) -> str:
        return self.settings.stream

    @property
    def prefix(self) -> str:
        return self.settings.prefix

    @contextlib.asynccontextmanager
    async def client(self, user: str) -> AsyncIterator[Client]:
        nc = await connect(self.url, name=f"pytest-{user}", auth=auth_for(self.directory, user))
        try:
            yield nc
        finally:
            await nc.close()

    def store(self, nc: Client, timeout: float = 5.0) -> JetStreamEventStore:
        return JetStreamEventStore(nc, stream=self.stream, prefix=self.prefix, timeout=timeout)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    root = tmp_path_factory.mktemp("nats-auth")
    tag = secrets.token_hex(3)
    settings = NatsSettings(stream=f"AUTH{tag.upper()}", prefix=f"auth{tag}")
    written = write_auth_dir(root / "auth", stream=settings.stream, prefix=settings.prefix)
    server = NatsServer(store_dir=str(root / "store"), config_file=written.config)
    server.start()
    try:
        yield AuthServer(server, written.directory, msgspec.structs.replace(settings, url=server.url))
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def authed(auth_server: AuthServer) -> AuthServer:
    """The server with bgagent provisioned by the admin user (what ``bgagent admin init`` does)."""
    async with auth_server.client(ADMIN) as nc:
        await provision(nc.jetstream(), auth_server.settings)
    return auth_server


async def wait_for(pred: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = pred()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def refused(caplog: pytest.LogCaptureFixture, kind: str = "publish") -> set[str]:
    """Subjects the server refused a publish (or subscription) on, as reported to connect()'s error
    callback (nats-py lower-cases the server's error text)."""
    found = set()
    for record in caplog.records:
        m = VIOLATION.search(record.getMessage())
        if m and m.group(1).lower() == kind:
            found.add(m.group(2).lower())
    return found


async def assert_refused(
    nc: Client, caplog: pytest.LogCaptureFixture, subjects: list[str], check: AuthServer
) -> None:
    """Publish raw bytes on each subject; the server refuses every one and the stream stores none."""
    async with check.client(ADMIN) as admin:
        before = (await admin.jetstream().stream_info(check.stream)).state.last_seq
        for subject in subjects:
            await nc.publish(subject, b'{"type": "forged"}')
        await nc.flush()
        wanted = {s.lower() for s in subjects}
        await wait_for(lambda: wanted <= refused(caplog), f"refusals of {subjects}")
        assert nc.is_connected  # a refused publish is reported, the connection stays up
        assert (await admin.jetstream().stream_info(check.stream)).state.last_seq == before


async def test_admission_appends_its_events_reads_and_claims_idempotency_keys(authed: AuthServer) -> None:
    task = new_id()
    async with authed.client(Role.ADMISSION) as nc:
        store = authed.store(nc)
        [seq] = await store.append(task, [submitted(task)], expected_seq=0)
        cancel = CancelRequested(
            task_id=task, event_id=new_id(), ts=now(), actor=Actor.ADMISSION, requested_by="alice"
        )
        nudge = NudgeRequested(
            task_id=task,
            event_id=new_id(),
            ts=now(),
            actor=Actor.ADMISSION,
            nudge_id="n1",
            requested_by="alice",
            message="hi",
        )
        await store.append(task, [nudge, cancel], expected_seq=seq)
        log = await store.read(task)
        assert [type(r.event) for r in log.records] == [TaskSubmitted, NudgeRequested, CancelRequested]
        assert await store.last_stream_seq() >= log.last_seq
        js = nc.jetstream()
        kv = await js.key_value(idempotency_bucket(authed.prefix))
        await kv.create("digest-1", task.encode())
        with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
            await kv.create("digest-1", b"another task")
        assert (await kv.get("digest-1")).value == task.encode()


async def test_admission_cannot_write_a_runner_event(
    authed: AuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bgagent_eventstore.connect")
    task = new_id()
    async with authed.client(Role.ADMISSION) as nc:
        store = authed.store(nc, timeout=0.5)
        [seq] = await store.append(task, [submitted(task)], expected_seq=0)
        with pytest.raises(StoreUnavailableError):
            await store.append(task, [completed(task)], expected_seq=seq)
        assert task_subject(task, "task_completed", authed.prefix).lower() in refused(caplog)
        runner_only = sorted(WRITERS[Role.RUNNER] - WRITERS[Role.ADMISSION])
        await assert_refused(nc, caplog, [task_subject(task, t, authed.prefix) for t in runner_only], authed)
    async with authed.client(OPERATOR) as reader:
        log = await read_direct(reader, authed.stream, task_filter(task, authed.prefix))
    assert [type(r.event) for r in log.records] == [TaskSubmitted]


async def test_runner_claims_works_and_finishes_a_task(authed: AuthServer) -> None:
    task = new_id()
    async with authed.client(Role.ADMISSION) as adm:
        [submitted_seq] = await authed.store(adm).append(task, [submitted(task)], expected_seq=0)
    async with authed.client(Role.RUNNER) as nc:
        js = nc.jetstream()
        store = authed.store(nc)
        durable = runner_consumer(authed.prefix)
        await js.consumer_info(authed.stream, durable)
        psub = await js.pull_subscribe_bind(durable=durable, stream=authed.stream)
        msg = await _fetch_task(psub, task)
        await msg.in_progress()

        cancels: asyncio.Queue[Msg] = asyncio.Queue()

        async def on_cancel(m: Msg) -> None:
            cancels.put_nowait(m)

        watch = await nc.subscribe(task_subject(task, "cancel_requested", authed.prefix), cb=on_cancel)
        seqs = await store.append(task, [started(task), milestone(task)], expected_seq=submitted_seq)

        traces = await js.object_store(traces_bucket(authed.prefix))
        await traces.put(f"{task}/1", b"first trace")
        await traces.put(f"{task}/1", b"the trace again")  # replacing purges the old chunks
        await record_poison(js, authed.prefix, reader="runner", seq=1, subject="x", reason="r", size_bytes=1)
        beats = Heartbeats(await heartbeat_bucket(js, authed.prefix), "runner-a")
        await beats.hold(task, 1)
        await beats.beat()

        async with authed.client(Role.ADMISSION) as adm:
            cancel = CancelRequested(
                task_id=task, event_id=new_id(), ts=now(), actor=Actor.ADMISSION, requested_by="alice"
            )
            [cancel_seq] = await authed.store(adm).append(task, [cancel], expected_seq=seqs[-1])
        async with asyncio.timeout(5):
            assert (await cancels.get()).subject == task_subject(task, "cancel_requested", authed.prefix)
        await watch.unsubscribe()

        await store.append(task, [completed(task)], expected_seq=cancel_seq)
        await msg.ack_sync()
        log = await store.read(task)
        kinds = [TaskSubmitted, TaskStarted, Milestone, CancelRequested, TaskCompleted]
        assert [type(r.event) for r in log.records] == kinds
    async with authed.client(ADMIN) as admin:
        info = await admin.jetstream().consumer_info(authed.stream, runner_consumer(authed.prefix))
        assert info.num_ack_pending == 0
        records = await list_poison(admin.jetstream(), authed.prefix)
        assert [(r.reader, r.seq) for r in records if r.reader == "runner"] == [("runner", 1)]
        traces = await admin.jetstream().object_store(traces_bucket(authed.prefix))
        assert (await traces.get(f"{task}/1")).data == b"the trace again"


async def _fetch_task(psub: nats.js.JetStreamContext.PullSubscription, task_id: str) -> Msg:
    """Fetch until this test's task comes (other tests' submissions are acked on the way)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for msg in await psub.fetch(1, timeout=2):
            if f".{task_id}." in msg.subject:
                return msg
            await msg.ack()
    raise AssertionError(f"no delivery of {task_id}")


async def test_reconciler_reads_heartbeats_and_the_queue_and_appends_only_its_events(
    authed: AuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bgagent_eventstore.connect")
    task = new_id()
    async with authed.client(Role.ADMISSION) as adm:
        [seq] = await authed.store(adm).append(task, [submitted(task)], expected_seq=0)
    async with authed.client(Role.RUNNER) as runner:
        await Heartbeats(await heartbeat_bucket(runner.jetstream(), authed.prefix), "r1").hold(task, 1)
    async with authed.client(Role.RECONCILER) as nc:
        js = nc.jetstream()
        store = authed.store(nc)
        await js.consumer_info(authed.stream, runner_consumer(authed.prefix))
        kv = await heartbeat_bucket(js, authed.prefix)
        assert f"task.{task}" in await read_beats(kv)
        advisories = await js.pull_subscribe_bind(
            durable=reconciler_consumer(authed.prefix), stream=advisory_stream(authed.stream)
        )
        with contextlib.suppress(nats.errors.TimeoutError):
            await advisories.fetch(1, timeout=0.2)
        head = {"task_id": task, "ts": now(), "actor": Actor.RECONCILER}
        seqs = await store.append(
            task,
            [
                TaskRequeued(**head, event_id=new_id(), attempt=0),
                TaskFailed(**head, event_id=new_id(), code="STRANDED", message="no runner"),
            ],
            expected_seq=seq,
        )
        assert len(seqs) == 2
        not_ours = sorted(EVENT_TYPE_NAMES - WRITERS[Role.RECONCILER])
        subjects = [task_subject(task, t, authed.prefix) for t in not_ours]
        await assert_refused(
            nc,
            caplog,
            [
                *subjects,
                f"$KV.{heartbeats_bucket(authed.prefix)}.task.{task}",
                f"$JS.API.CONSUMER.MSG.NEXT.{authed.stream}.{runner_consumer(authed.prefix)}",
            ],
            authed,
        )


async def test_runner_cannot_submit_or_write_another_readers_poison_records(
    authed: AuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bgagent_eventstore.connect")
    task = new_id()
    async with authed.client(Role.RUNNER) as nc:
        admission_only = sorted(WRITERS[Role.ADMISSION] - WRITERS[Role.RUNNER])
        subjects = [task_subject(task, t, authed.prefix) for t in admission_only]
        await assert_refused(nc, caplog, [*subjects, f"$KV.{poison_bucket(authed.prefix)}.fanout.9"], authed)
        with pytest.raises(StoreUnavailableError):
            await authed.store(nc, timeout=0.5).append(task, [submitted(task)], expected_seq=0)


async def test_query_replays_and_follows_the_stream_but_writes_nothing(
    authed: AuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bgagent_eventstore.connect")
    task = new_id()
    async with authed.client(Role.ADMISSION) as adm:
        await authed.store(adm).append(task, [submitted(task)], expected_seq=0)
    async with authed.client(Role.QUERY) as nc:
        store = authed.store(nc)
        assert await store.last_stream_seq() > 0
        log = await store.read(task)
        assert len(log.records) == 1
        tail = follow(nc, stream=authed.stream, subject_filter=task_filter(task, authed.prefix))
        try:
            async with asyncio.timeout(5):
                first = await anext(tail)
            assert first.seq == log.last_seq
        finally:
            await tail.aclose()
        every_type = [task_subject(task, t, authed.prefix) for t in sorted(EVENT_TYPE_NAMES)]
        await assert_refused(nc, caplog, every_type, authed)


async def test_fanout_pulls_acks_and_keeps_its_comment_ids_but_writes_no_event(
    authed: AuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bgagent_eventstore.connect")
    task = new_id()
    async with authed.client(Role.ADMISSION) as adm:
        await authed.store(adm).append(task, [submitted(task)], expected_seq=0)
    async with authed.client(Role.FANOUT) as nc:
        js = nc.jetstream()
        durable = fanout_consumer(authed.prefix)
        await js.consumer_info(authed.stream, durable)
        psub = await js.pull_subscribe_bind(durable=durable, stream=authed.stream)
        msg = await _fetch_task(psub, task)
        await msg.ack_sync()
        kv = await js.key_value(comments_bucket(authed.prefix))
        await kv.create(task, b'{"id": 1}')
        await kv.put(task, b'{"id": 2}')
        assert (await kv.get(task)).value == b'{"id": 2}'
        await record_poison(js, authed.prefix, reader="fanout", seq=7, subject="x", reason="r", size_bytes=1)
        assert len((await authed.store(nc).read(task)).records) == 1
        every_type = [task_subject(task, t, authed.prefix) for t in sorted(EVENT_TYPE_NAMES)]
        await assert_refused(nc, caplog, every_type, authed)


async def test_operator_reads_the_stream_and_can_publish_nothing(
    authed: AuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bgagent_eventstore.connect")
    task = new_id()
    async with authed.client(Role.ADMISSION) as adm:
        await authed.store(adm).append(task, [submitted(task)], expected_seq=0)
    async with authed.client(OPERATOR) as nc:
        js = nc.jetstream()
        info = await js.stream_info(authed.stream)
        log = await read_direct(nc, authed.stream, task_filter(task, authed.prefix))
        assert len(log.records) == 1
        assert (await js.get_msg(authed.stream, seq=log.last_seq, direct=True)).data
        tail = follow(nc, stream=authed.stream, subject_filter=task_filter(task, authed.prefix))
        try:
            async with asyncio.timeout(5):
                assert (await anext(tail)).seq == log.last_seq
        finally:
            await tail.aclose()
        every_type = [task_subject(task, t, authed.prefix) for t in sorted(EVENT_TYPE_NAMES)]
        stream, runner = authed.stream, runner_consumer(authed.prefix)
        forbidden = [
            *every_type,
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{runner}",
            f"$JS.API.CONSUMER.DELETE.{stream}.{runner}",
            f"$JS.API.STREAM.PURGE.{stream}",
            f"$KV.{comments_bucket(authed.prefix)}.{task}",
        ]
        await assert_refused(nc, caplog, forbidden, authed)
        with pytest.raises(nats.errors.TimeoutError):  # the request is dropped: no answer comes
            await nc.jetstream(timeout=0.5).add_stream(StreamConfig(name=f"{stream}X", subjects=["evil.>"]))
        assert info.config.name == stream
        # replies go to per-user inboxes: nobody may listen to another user's (or all of them)
        for other in ("_INBOX.>", "_INBOX_runner.>", f"$KV.{comments_bucket(authed.prefix)}.>"):
            await nc.subscribe(other)
        await nc.flush()
        wanted = {"_inbox.>", "_inbox_runner.>", f"$kv.{comments_bucket(authed.prefix)}.>".lower()}
        await wait_for(lambda: wanted <= refused(caplog, "subscription"), "refused subscriptions")


@pytest.mark.parametrize("user", [OPERATOR, Role.QUERY.value])
async def test_a_reader_cannot_reconfigure_a_services_durable_consumer(
    authed: AuthServer, caplog: pytest.LogCaptureFixture, user: str
) -> None:
    """Readers create ephemeral consumers; none of the ways to name the runner's durable in a create
    request may update it (say, to filter on milestones so that no runner gets work again)."""
    caplog.set_level(logging.WARNING, logger="bgagent_eventstore.connect")
    stream, runner = authed.stream, runner_consumer(authed.prefix)
    hijack = {"name": runner, "filter_subject": f"{authed.prefix}.task.*.milestone", "ack_policy": "explicit"}
    request = json.dumps({"stream_name": stream, "config": hijack}).encode()
    async with authed.client(user) as nc:
        refused_subjects = [
            f"$JS.API.CONSUMER.CREATE.{stream}",  # unnamed: the name would come from the body
            f"$JS.API.CONSUMER.CREATE.{stream}.{runner}",
            f"$JS.API.CONSUMER.CREATE.{stream}.{runner}.{authed.prefix}.task.*.milestone",
        ]
        for subject in refused_subjects:
            with pytest.raises(nats.errors.TimeoutError):
                await nc.request(subject, request, timeout=0.5)
        wanted = {s.lower() for s in refused_subjects}
        await wait_for(lambda: wanted <= refused(caplog), "the refusals")
        # the subject names the consumer: the body's name cannot redirect the create to the durable
        own = f"mine{secrets.token_hex(3)}"
        reply = json.loads((await nc.request(f"$JS.API.CONSUMER.CREATE.{stream}.{own}", request)).data)
        assert reply["name"] == own
    async with authed.client(ADMIN) as admin:
        info = await admin.jetstream().consumer_info(stream, runner)
    assert info.config.filter_subjects == [
        f"{authed.prefix}.task.*.task_submitted",
        f"{authed.prefix}.task.*.task_requeued",
    ]


async def test_an_ephemeral_consumer_cannot_be_turned_into_a_writer(authed: AuthServer) -> None:
    """The operator (and query) create ephemeral push consumers. One aimed back at a task subject
    (say, to replay another task's cancel into a running task's cancel watch) is refused, and one
    aimed at a KV subject delivers to subscribers only: the bucket stores nothing."""
    task = new_id()
    async with authed.client(Role.ADMISSION) as adm:
        await authed.store(adm).append(task, [submitted(task)], expected_seq=0)
    async with authed.client(ADMIN) as admin, authed.client(OPERATOR) as nc:
        js = nc.jetstream()
        only_task = task_filter(task, authed.prefix)
        into_stream = ConsumerConfig(
            name=f"cycle{secrets.token_hex(3)}",
            deliver_subject=task_subject(new_id(), "cancel_requested", authed.prefix),
            filter_subject=only_task,
        )
        with pytest.raises(nats.js.errors.BadRequestError):
            await js.add_consumer(authed.stream, into_stream)

        delivered: asyncio.Queue[str] = asyncio.Queue()

        async def on_msg(msg: Msg) -> None:
            delivered.put_nowait(msg.subject)

        forged = f"$KV.{comments_bucket(authed.prefix)}.forged"
        await admin.subscribe(forged, cb=on_msg)
        await admin.flush()
        config = ConsumerConfig(
            name=f"kv{secrets.token_hex(3)}",
            deliver_subject=forged,
            deliver_policy=DeliverPolicy.ALL,
            filter_subject=only_task,
        )
        await js.add_consumer(authed.stream, config)
        async with asyncio.timeout(5):
            assert await delivered.get() == task_subject(task, "task_submitted", authed.prefix)
        kv = await admin.jetstream().key_value(comments_bucket(authed.prefix))
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await kv.get("forged")


async def test_anonymous_clients_and_wrong_passwords_cannot_connect(authed: AuthServer) -> None:
    with pytest.raises(NatsAuthError, match="refused a client without credentials"):
        await connect(authed.url, name="pytest-anonymous")
    with pytest.raises(NatsAuthError, match="refused user 'runner'"):
        await connect(
            authed.url, name="pytest-wrong", auth=NatsAuth(user="runner", password="not-the-password")
        )
    with pytest.raises(NatsAuthError, match="refused user 'mallory'"):
        await connect(authed.url, name="pytest-unknown", auth=NatsAuth(user="mallory", password="x"))


async def test_rotated_passwords_take_over_when_the_server_restarts(tmp_path: Path) -> None:
    """Rotate, restart nats-server with the new config: a connected process reconnects reading its
    password file again and goes on working; the old password no longer opens a connection."""
    settings = NatsSettings(stream="ROT", prefix="rot")
    written = write_auth_dir(tmp_path / "auth", stream=settings.stream, prefix=settings.prefix)
    server = NatsServer(store_dir=str(tmp_path / "store"), config_file=written.config).start()
    try:
        nc = await connect(server.url, name="pytest-rotate", auth=written.auth(ADMIN))
        try:
            await provision(nc.jetstream(), msgspec.structs.replace(settings, url=server.url))
            old = Path(written.password_file(ADMIN)).read_text().strip()
            write_auth_dir(written.directory, stream=settings.stream, prefix=settings.prefix, rotate=True)
            server.stop()
            server.start()

            async def reconnected_and_working() -> bool:
                try:
                    async with asyncio.timeout(0.5):
                        await nc.jetstream().stream_info(settings.stream)
                except (TimeoutError, nats.errors.Error, nats.js.errors.Error):
                    return False
                return True

            await wait_for(reconnected_and_working, "the client to reconnect with the new password", 15)
            assert nc.stats["reconnects"] >= 1
            with pytest.raises(NatsAuthError):
                await connect(server.url, name="pytest-old", auth=NatsAuth(user=ADMIN, password=old))
        finally:
            await nc.close()
    finally:
        server.stop()


def test_a_config_the_server_cannot_parse_fails_the_start_with_the_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("authorization { users = [ { user: \n")
    server = NatsServer(
        store_dir=str(tmp_path / "store"), log_file=str(tmp_path / "nats.log"), config_file=str(bad)
    )
    # The start notices the exit (not "nothing is listening … after 10s", the wait for a port).
    with pytest.raises(ServerError, match="nats-server exited with code"):
        server.start()
    assert server.pid is None
