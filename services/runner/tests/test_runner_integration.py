"""The runner against real NATS JetStream, the scripted model server and a local git origin."""

from __future__ import annotations

import asyncio
import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import msgspec
import pytest
from ulid import ULID

from bgagent_contracts import (
    AgentFinished,
    AgentTurn,
    CancelRequested,
    CostUpdated,
    Milestone,
    NudgeAcknowledged,
    NudgeRequested,
    Status,
    TaskCancelled,
    TaskCompleted,
    TaskStarted,
    TaskTimedOut,
    ToolCalled,
    ToolResult,
    TraceStored,
    WorkspaceReady,
)
from bgagent_contracts.subjects import runner_consumer, traces_bucket
from bgagent_eventstore.provision import runner_consumer_config
from bgagent_runner import Runner, Settings
from bgagent_runner.errors import NotProvisionedError
from bgagent_runner.sandbox import SandboxSettings
from bgagent_runner.session import ClaimLost, TaskSession, claim
from bgagent_testing.model_server import ModelServer
from bgagent_testing.servers import free_port

pytestmark = pytest.mark.integration


def bash(command: str) -> dict[str, Any]:
    return {"name": "bash", "input": {"command": command}}


async def test_task_completes_and_branch_holds_the_scripted_change(
    kit: Any, model_server: ModelServer, origin: Path
) -> None:
    tag = f"feature-{ULID()}"
    model_server.add_script(
        tag,
        [
            {"text": "Looking around.", "tool_uses": [bash("ls && cat app.py")]},
            {
                "text": "Editing.",
                "tool_uses": [
                    {
                        "name": "str_replace_based_edit_tool",
                        "input": {
                            "command": "str_replace",
                            "path": "app.py",
                            "old_str": "return 'hi'",
                            "new_str": "return 'hello'",
                        },
                    },
                    bash("echo made-by-agent > NOTES.txt"),
                ],
            },
            {"text": "Changed greet() to say hello and added NOTES.txt."},
        ],
    )
    await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(origin), f"{tag}: say hello\nmore detail")

    state = await kit.wait_terminal(task_id)

    assert state.status is Status.COMPLETED, (state.error_code, state.error_message)
    assert state.result == "branch_pushed"
    branch = f"bgagent/{task_id}"
    assert kit.git(origin, "show", f"{branch}:app.py") == "def greet():\n    return 'hello'"
    assert kit.git(origin, "show", f"{branch}:NOTES.txt") == "made-by-agent"
    message = kit.git(origin, "log", "-1", "--format=%B", branch)
    assert message.startswith(f"bgagent: {tag}: say hello")
    assert f"Task-Id: {task_id}" in message
    assert kit.git(origin, "log", "-1", "--format=%an <%ae>", branch) == "bgagent <bgagent@localhost>"

    events = await kit.events(task_id)
    kinds = [type(e) for e in events]
    assert kinds.count(AgentTurn) == 3
    assert kinds.count(CostUpdated) == 3
    assert kinds.count(ToolCalled) == kinds.count(ToolResult) == 3
    ready = next(e for e in events if isinstance(e, WorkspaceReady))
    assert (ready.branch, ready.base_branch) == (branch, "main")
    assert any(isinstance(e, AgentFinished) for e in events)
    pushed = next(e for e in events if isinstance(e, Milestone) and e.name == "branch_pushed")
    assert pushed.detail is not None
    assert "no pull request was opened because the remote is not GitHub" in pushed.detail
    done = events[-1]
    assert isinstance(done, TaskCompleted)
    assert done.attempt == 1
    assert done.head_sha == kit.git(origin, "rev-parse", branch)
    assert state.cost_usd > 0
    assert all(getattr(e, "attempt", 1) == 1 for e in events[1:])

    requests = model_server.requests(tag)
    assert len(requests) == 3
    body = requests[0]["body"]
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert [t["type"] for t in body["tools"]] == ["bash_20250124", "text_editor_20250728"]
    second_user = requests[2]["body"]["messages"][-1]["content"]
    assert [b["type"] for b in second_user] == ["tool_result", "tool_result"]
    marked = [
        (i, j)
        for i, m in enumerate(requests[2]["body"]["messages"])
        if isinstance(m["content"], list)
        for j, b in enumerate(m["content"])
        if "cache_control" in b
    ]
    assert marked == [(4, 1)]  # one rolling breakpoint: the newest user block
    assert "hello" in second_user[0]["content"]


async def test_no_changes_completes_without_pushing(
    kit: Any, model_server: ModelServer, origin: Path
) -> None:
    tag = f"nothing-{ULID()}"
    model_server.add_script(tag, [{"text": "Nothing to do: the code already does this."}])
    await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(origin), f"{tag} check only")

    state = await kit.wait_terminal(task_id)

    assert state.status is Status.COMPLETED
    assert state.result == "no_changes"
    assert not kit.git_ok(origin, "rev-parse", "--verify", f"refs/heads/bgagent/{task_id}")


async def test_turn_limit_fails_the_task_before_the_extra_model_call(
    kit: Any, model_server: ModelServer, origin: Path
) -> None:
    tag = f"turns-{ULID()}"
    model_server.add_script(tag, [{"tool_uses": [bash(f"echo {i}")]} for i in range(6)])
    await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(origin), f"{tag} loop", max_turns=2)

    state = await kit.wait_terminal(task_id)

    assert state.status is Status.FAILED
    assert state.error_code == "MAX_TURNS"
    assert len(model_server.requests(tag)) == 2
    assert not kit.git_ok(origin, "rev-parse", "--verify", f"refs/heads/bgagent/{task_id}")


async def test_budget_limit_fails_the_task_before_the_extra_model_call(
    kit: Any, model_server: ModelServer, origin: Path
) -> None:
    tag = f"budget-{ULID()}"
    expensive = {
        "input_tokens": 100_000,
        "output_tokens": 1000,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    model_server.add_script(tag, [{"tool_uses": [bash("true")], "usage": expensive} for _ in range(4)])
    await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(origin), f"{tag} spend", max_budget_usd=0.25)

    state = await kit.wait_terminal(task_id)

    assert state.status is Status.FAILED
    assert state.error_code == "MAX_BUDGET"
    assert state.cost_usd == pytest.approx(0.315)  # one call: 100k in × $3/M + 1k out × $15/M
    assert len(model_server.requests(tag)) == 1


def _processes_running(token: str) -> list[int]:
    """Live processes whose command line carries ``token`` (a zombie's is empty)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


async def _wait_for_tool_call(kit: Any, task_id: str) -> None:
    async def called() -> bool:
        return any(isinstance(e, ToolCalled) for e in await kit.events(task_id))

    await kit.wait_until(called)


async def test_nudge_during_a_run_is_acknowledged_and_reaches_the_model(
    kit: Any, model_server: ModelServer, origin: Path, tmp_path: Path
) -> None:
    tag = f"nudge-{ULID()}"
    gate = tmp_path / "gate"
    model_server.add_script(
        tag,
        [
            {"tool_uses": [bash(f"while [ ! -e {gate} ]; do sleep 0.02; done; echo waited")]},
            {"text": "Following the nudge."},
        ],
    )
    # the gate is a host file, which the sandbox would hide
    await kit.start_runner(msgspec.structs.replace(kit.settings, sandbox=SandboxSettings(mode="off")))
    task_id = await kit.submit(str(origin), f"{tag} wait for me")
    await _wait_for_tool_call(kit, task_id)
    state = await kit.state(task_id)
    nudge = NudgeRequested(
        task_id=task_id,
        event_id=str(ULID()),
        ts=datetime.now(UTC),
        actor="admission",
        nudge_id="nudge-1",
        requested_by="alice",
        message="Use <b>tabs</b> & keep it short",
    )
    await kit.store.append(task_id, [nudge], expected_seq=state.last_seq)
    gate.touch()

    state = await kit.wait_terminal(task_id)

    assert state.status is Status.COMPLETED
    acks = [e for e in await kit.events(task_id) if isinstance(e, NudgeAcknowledged)]
    assert len(acks) == 1
    assert acks[0].nudge_ids == ("nudge-1",)
    assert acks[0].turn == 2
    requests = model_server.requests(tag)
    assert len(requests) == 2
    last_user = requests[1]["body"]["messages"][-1]["content"]
    assert [b["type"] for b in last_user] == ["tool_result", "text"]
    assert last_user[1]["text"] == (
        '<user_nudge nudge_id="nudge-1">Use &lt;b&gt;tabs&lt;/b&gt; &amp; keep it short</user_nudge>'
    )
    assert "<user_nudge>" in requests[0]["body"]["system"][0]["text"]


async def test_cancel_during_a_long_tool_call_kills_the_tool_ends_cancelled_and_pushes_nothing(
    kit: Any, model_server: ModelServer, origin: Path
) -> None:
    tag = f"cancel-{ULID()}"
    model_server.add_script(tag, [{"tool_uses": [bash(f"echo partial > partial.txt; sleep 30; : {tag}")]}])
    await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(origin), f"{tag} long")
    await _wait_for_tool_call(kit, task_id)

    async def tool_running() -> bool:
        return bool(_processes_running(tag))

    async def tool_gone() -> bool:
        return not _processes_running(tag)

    await kit.wait_until(tool_running)
    state = await kit.state(task_id)
    cancel = CancelRequested(
        task_id=task_id,
        event_id=str(ULID()),
        ts=datetime.now(UTC),
        actor="admission",
        requested_by="alice",
        reason="changed my mind",
    )
    await kit.store.append(task_id, [cancel], expected_seq=state.last_seq)

    # The deadline only bounds a failure: the `sleep 30` would outlive it if the cancel did not
    # interrupt the tool (the latency itself is bench/cancel_latency.py's figure).
    state = await kit.wait_terminal(task_id, timeout=15)

    assert state.status is Status.CANCELLED
    await kit.wait_until(tool_gone)  # the running tool's processes (host view, sandbox or not) are gone
    events = await kit.events(task_id)
    after_cancel = events[[type(e) for e in events].index(CancelRequested) + 1 :]
    assert [type(e) for e in after_cancel] == [TaskCancelled], "no tool result or turn after the cancel"
    last = after_cancel[-1]
    assert isinstance(last, TaskCancelled)
    assert (last.attempt, last.cancelled_by, last.reason) == (1, "alice", "changed my mind")
    assert not kit.git_ok(origin, "rev-parse", "--verify", f"refs/heads/bgagent/{task_id}")
    assert len(model_server.requests(tag)) == 1


async def test_two_claims_racing_for_one_task_exactly_one_wins(kit: Any, origin: Path) -> None:
    task_id = await kit.submit(str(origin), "race")
    log = await kit.store.read(task_id)

    results = await asyncio.gather(
        claim(kit.store, log, "runner-a", now=datetime.now(UTC)),
        claim(kit.store, log, "runner-b", now=datetime.now(UTC)),
        return_exceptions=True,
    )

    sessions = [r for r in results if isinstance(r, TaskSession)]
    lost = [r for r in results if isinstance(r, ClaimLost)]
    assert len(sessions) == 1
    assert len(lost) == 1
    starts = [e for e in await kit.events(task_id) if isinstance(e, TaskStarted)]
    assert len(starts) == 1
    assert starts[0].attempt == 1
    state = await kit.state(task_id)
    assert state.runner_id == sessions[0].state.runner_id
    assert lost[0].state is not None
    assert lost[0].state.runner_id == state.runner_id


async def test_two_runners_share_the_queue_and_each_task_runs_once(
    kit: Any, model_server: ModelServer, origin: Path, tmp_path: Path
) -> None:
    tag = f"pair-{ULID()}"
    model_server.add_script(tag, [{"tool_uses": [bash("echo $RANDOM > out-$RANDOM.txt")]}, {"text": "ok"}])
    a = kit.make_settings(kit.settings.nats, model_server.url, tmp_path / "wa", runner_id="runner-a", slots=1)
    b = kit.make_settings(kit.settings.nats, model_server.url, tmp_path / "wb", runner_id="runner-b", slots=1)
    await kit.start_runner(a)
    await kit.start_runner(b)
    ids = [await kit.submit(str(origin), f"{tag} #{i}") for i in range(4)]

    states = [await kit.wait_terminal(task_id, timeout=15) for task_id in ids]

    assert all(s.status is Status.COMPLETED for s in states)
    for task_id in ids:
        starts = [e for e in await kit.events(task_id) if isinstance(e, TaskStarted)]
        assert len(starts) == 1
    assert {s.runner_id for s in states} <= {"runner-a", "runner-b"}


async def test_local_repos_are_refused_without_roots(kit: Any, origin: Path) -> None:
    settings = kit.make_settings(
        kit.settings.nats, "http://127.0.0.1:9", Path(kit.settings.work_dir), local_repo_roots=()
    )
    await kit.start_runner(settings)
    branches = kit.git(origin, "branch", "--list")
    task_id = await kit.submit(f"file://{origin}", "not allowed")

    state = await kit.wait_terminal(task_id)

    assert state.status is Status.FAILED
    # the runner's re-check of the submission, or its workspace: either refuses before any clone
    assert state.error_code in ("REPO_NOT_ALLOWED", "INVALID_SUBMISSION")
    assert "disabled" in (state.error_message or "")
    assert str(origin) not in (state.error_message or "")
    assert kit.git(origin, "branch", "--list") == branches


async def test_model_api_failure_fails_the_task_with_model_error(kit: Any, origin: Path) -> None:
    client = anthropic.AsyncAnthropic(
        api_key="test", base_url=f"http://127.0.0.1:{free_port()}", max_retries=0, timeout=2.0
    )
    try:
        await kit.start_runner(kit.settings, client=client)
        task_id = await kit.submit(str(origin), "model down")

        state = await kit.wait_terminal(task_id)
    finally:
        await client.close()

    assert state.status is Status.FAILED
    assert state.error_code == "MODEL_ERROR"
    assert "model API call failed" in (state.error_message or "")


async def test_trace_is_stored_before_the_terminal_event_and_secrets_are_redacted(
    kit: Any, model_server: ModelServer, origin: Path, nc: Any
) -> None:
    tag = f"trace-{ULID()}"
    secret = "sk-ant-api03-" + "A" * 40
    model_server.add_script(
        tag, [{"tool_uses": [bash(f"echo key={secret}; echo x > x.txt")]}, {"text": "ok"}]
    )
    await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(origin), f"{tag} traced", trace=True)

    state = await kit.wait_terminal(task_id)

    assert state.status is Status.COMPLETED
    events = await kit.events(task_id)
    stored = events[-2]
    assert isinstance(stored, TraceStored)
    assert isinstance(events[-1], TaskCompleted)
    assert stored.object_name == f"{task_id}/attempt-1.jsonl.gz"
    result = next(e for e in events if isinstance(e, ToolResult))
    assert secret not in result.output_preview
    assert "[REDACTED-ANTHROPIC_KEY]" in result.output_preview
    bucket = await nc.jetstream().object_store(traces_bucket(kit.settings.nats.prefix))
    obj = await bucket.get(stored.object_name)
    assert obj.data is not None
    assert len(obj.data) == stored.size_bytes
    entries = [json.loads(line) for line in gzip.decompress(obj.data).splitlines()]
    assert [e["kind"] for e in entries] == ["start", "model_turn", "tool_result", "model_turn", "end"]
    assert "run the tests" in entries[0]["system"]
    assert "[REDACTED-ANTHROPIC_KEY]" in entries[2]["output"]
    assert secret not in gzip.decompress(obj.data).decode()


async def test_wall_clock_limit_times_the_task_out_before_the_next_model_call(
    kit: Any, model_server: ModelServer, origin: Path
) -> None:
    tag = f"clock-{ULID()}"
    model_server.add_script(tag, [{"tool_uses": [bash("sleep 0.5")]} for _ in range(5)])
    settings = kit.make_settings(
        kit.settings.nats, model_server.url, Path(kit.settings.work_dir), task_timeout_s=0.4
    )
    await kit.start_runner(settings)
    task_id = await kit.submit(str(origin), f"{tag} slow")

    state = await kit.wait_terminal(task_id)

    assert state.status is Status.TIMED_OUT
    timed_out = (await kit.events(task_id))[-1]
    assert isinstance(timed_out, TaskTimedOut)
    assert timed_out.limit == "wall_clock"
    assert timed_out.attempt == 1
    assert len(model_server.requests(tag)) == 1


async def test_a_stopped_runner_hands_its_task_back_and_the_next_attempt_finishes(
    kit: Any, model_server: ModelServer, origin: Path, tmp_path: Path
) -> None:
    tag = f"handoff-{ULID()}"
    gate = tmp_path / "gate"
    model_server.add_script(
        tag,
        [
            {
                "tool_uses": [
                    bash(f"echo $$ > pid-$$; while [ ! -e {gate} ]; do sleep 0.02; done; echo hi > hi.txt")
                ]
            }
        ],
    )
    off = SandboxSettings(mode="off")  # the gate is a host file, which the sandbox would hide
    a = await kit.start_runner(  # one slot, busy: stop() must not wait for a slot to free up
        kit.make_settings(
            kit.settings.nats, model_server.url, tmp_path / "wa", runner_id="runner-a", slots=1, sandbox=off
        )
    )
    task_id = await kit.submit(str(origin), f"{tag} hand off")
    await _wait_for_tool_call(kit, task_id)
    await a.stop()
    await kit.start_runner(
        kit.make_settings(
            kit.settings.nats, model_server.url, tmp_path / "wb", runner_id="runner-b", sandbox=off
        )
    )

    async def second_attempt_calls_a_tool() -> bool:
        events = await kit.events(task_id)
        return any(isinstance(e, ToolCalled) and e.attempt == 2 for e in events)

    await kit.wait_until(second_attempt_calls_a_tool)
    gate.touch()
    state = await kit.wait_terminal(task_id)

    assert state.status is Status.COMPLETED
    assert (state.attempt, state.runner_id) == (2, "runner-b")
    starts = [e for e in await kit.events(task_id) if isinstance(e, TaskStarted)]
    assert [(s.attempt, s.runner_id) for s in starts] == [(1, "runner-a"), (2, "runner-b")]
    assert kit.git(origin, "show", f"bgagent/{task_id}:hi.txt") == "hi"
    assert not (tmp_path / "wa" / task_id).exists() or not any((tmp_path / "wa" / task_id).iterdir())


async def test_runner_events_carry_the_submissions_traceparent(
    kit: Any, model_server: ModelServer, origin: Path, nc: Any
) -> None:
    tag = f"tp-{ULID()}"
    model_server.add_script(tag, [{"text": "nothing to change"}])
    await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(origin), f"{tag} traced")

    await kit.wait_terminal(task_id)

    js = nc.jetstream()
    records = (await kit.store.read(task_id)).records
    parents = set()
    for record in records:
        msg = await js.get_msg(kit.settings.nats.stream, seq=record.seq)
        parents.add((msg.headers or {}).get("traceparent"))
    assert len(parents) == 1
    assert None not in parents


async def test_in_progress_acks_keep_a_long_task_from_being_redelivered(
    kit: Any, model_server: ModelServer, origin: Path, nc: Any, tmp_path: Path
) -> None:
    s = kit.settings.nats
    js = nc.jetstream()
    config = runner_consumer_config(s)
    config.ack_wait = 1.0
    await js.add_consumer(s.stream, config)
    assert (await js.consumer_info(s.stream, runner_consumer(s.prefix))).config.ack_wait == 1.0
    tag = f"wpi-{ULID()}"
    model_server.add_script(tag, [{"tool_uses": [bash("sleep 2.5")]}, {"text": "slow but done"}])
    for name in ("runner-a", "runner-b"):
        settings = kit.make_settings(
            s, model_server.url, tmp_path / name, runner_id=name, in_progress_interval_s=0.3
        )
        await kit.start_runner(settings)
    task_id = await kit.submit(str(origin), f"{tag} longer than ack_wait")

    state = await kit.wait_terminal(task_id, timeout=10)

    assert state.status is Status.COMPLETED
    starts = [e for e in await kit.events(task_id) if isinstance(e, TaskStarted)]
    assert len(starts) == 1

    async def acked() -> bool:
        return (await js.consumer_info(s.stream, runner_consumer(s.prefix))).num_ack_pending == 0

    await kit.wait_until(acked)
    assert (await js.consumer_info(s.stream, runner_consumer(s.prefix))).num_redelivered == 0


async def test_a_superseded_attempt_stops_appending_and_pushes_nothing(
    kit: Any, model_server: ModelServer, origin: Path, tmp_path: Path
) -> None:
    tag = f"stale-{ULID()}"
    gate = tmp_path / "gate"
    model_server.add_script(
        tag,
        [
            {"tool_uses": [bash(f"echo x > x.txt; while [ ! -e {gate} ]; do sleep 0.02; done")]},
            {"text": "done"},
        ],
    )
    # the gate is a host file, which the sandbox would hide
    handle = await kit.start_runner(
        msgspec.structs.replace(kit.settings, sandbox=SandboxSettings(mode="off"))
    )
    task_id = await kit.submit(str(origin), f"{tag} presumed lost")
    await _wait_for_tool_call(kit, task_id)
    state = await kit.state(task_id)
    takeover = TaskStarted(
        task_id=task_id,
        event_id=str(ULID()),
        ts=datetime.now(UTC),
        actor="runner",
        attempt=2,
        runner_id="runner-z",
    )
    [takeover_seq] = await kit.store.append(task_id, [takeover], expected_seq=state.last_seq)
    gate.touch()

    async def idle() -> bool:
        return not handle.runner.active

    await kit.wait_until(idle)

    later = [r.event for r in (await kit.store.read(task_id)).records if r.seq > takeover_seq]
    assert later == []
    state = await kit.state(task_id)
    assert (state.attempt, state.runner_id, state.status) == (2, "runner-z", Status.HYDRATING)
    assert not kit.git_ok(origin, "rev-parse", "--verify", f"refs/heads/bgagent/{task_id}")
    assert len(model_server.requests(tag)) == 1


async def test_build_junk_is_never_committed(kit: Any, model_server: ModelServer, origin: Path) -> None:
    tag = f"junk-{ULID()}"
    command = (
        "mkdir -p __pycache__ .pytest_cache && touch __pycache__/m.pyc .pytest_cache/x a.pyc"
        " && echo y > keep.txt"
    )
    model_server.add_script(tag, [{"tool_uses": [bash(command)]}, {"text": "ok"}])
    await kit.start_runner(kit.settings)
    task_id = await kit.submit(str(origin), f"{tag} junk")

    state = await kit.wait_terminal(task_id)

    assert state.result == "branch_pushed"
    files = kit.git(origin, "ls-tree", "-r", "--name-only", f"bgagent/{task_id}").splitlines()
    assert sorted(files) == ["README.md", "app.py", "keep.txt"]


async def _consumer_drained(kit: Any, nc: Any) -> None:
    s = kit.settings.nats
    js = nc.jetstream()

    async def drained() -> bool:
        info = await js.consumer_info(s.stream, runner_consumer(s.prefix))
        return info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq > 0

    await kit.wait_until(drained)


async def test_a_malformed_submission_is_terminated_without_events(kit: Any, nc: Any) -> None:
    task_id = str(ULID())
    subject = f"{kit.settings.nats.prefix}.task.{task_id}.task_submitted"
    await nc.jetstream().publish(subject, b"{not json")
    await kit.start_runner(kit.settings)

    await _consumer_drained(kit, nc)

    log = await kit.store.read(task_id)
    assert log.records == ()
    assert len(log.skipped) == 1


async def test_an_already_cancelled_task_is_acked_without_starting(kit: Any, nc: Any, origin: Path) -> None:
    task_id = await kit.submit(str(origin), "cancelled while queued")
    cancelled = TaskCancelled(
        task_id=task_id,
        event_id=str(ULID()),
        ts=datetime.now(UTC),
        actor="admission",
        cancelled_by="alice",
    )
    await kit.store.append(task_id, [cancelled], expected_seq=(await kit.state(task_id)).last_seq)
    await kit.start_runner(kit.settings)

    await _consumer_drained(kit, nc)

    events = await kit.events(task_id)
    assert [type(e) for e in events] == [type(events[0]), TaskCancelled]
    assert not any(isinstance(e, TaskStarted) for e in events)


async def test_runner_refuses_to_start_without_a_provisioned_consumer(
    nats_settings: Any, nc: Any, tmp_path: Path
) -> None:
    settings = Settings(nats=nats_settings, runner_id="r", work_dir=str(tmp_path))
    with pytest.raises(NotProvisionedError, match="bgagent admin init"):
        await Runner(settings, nc=nc).run()
