"""``bgagent watch``: replay a task's events from NATS from a cursor, then follow live."""

from __future__ import annotations

from bgagent_contracts import MalformedEventError, Status, TaskState, decode_recorded, evolve
from bgagent_contracts.subjects import is_task_id, task_filter
from bgagent_contracts.views import event_view
from bgagent_eventstore import StoreError, connect, follow, read_direct
from bgagent_eventstore.nats_auth import OPERATOR

from .config import CliConfig
from .errors import CliError
from .render import Printer

EXIT_COMPLETED = 0
EXIT_NOT_COMPLETED = 1


def exit_code_for(status: Status) -> int:
    """0 for COMPLETED, 1 for any other terminal state."""
    return EXIT_COMPLETED if status is Status.COMPLETED else EXIT_NOT_COMPLETED


async def watch(config: CliConfig, task_id: str, printer: Printer, *, after: int = 0) -> int:
    """Print every event after ``after`` until the task is terminal; returns the exit code."""
    if not is_task_id(task_id):
        raise CliError(f"{task_id!r} is not a task id (26-character ULID)", hint="see 'bgagent list'")
    if not config.nats_url:
        raise CliError(
            "watch needs NATS", hint="set NATS_URL, or start the local stack with 'bgagent dev up'"
        )
    try:
        nc = await connect(config.nats_url, name="bgagent-cli-watch", auth=config.nats_auth_as(OPERATOR))
    except StoreError as exc:
        raise CliError(str(exc), hint="check NATS_URL; 'bgagent dev up' starts a local NATS") from exc
    subject_filter = task_filter(task_id, config.prefix)
    try:
        log = await read_direct(nc, config.stream, subject_filter, prefix=config.prefix)
        for seq in log.skipped:
            if seq > after:
                printer.note(f"warning: skipping malformed message #{seq} (not a valid event)")
        state: TaskState | None = None
        for record in log.records:
            state = evolve(state, record.event)
            if record.seq > after:
                printer.event(event_view(record))
        if state is None:
            raise CliError(
                f"task {task_id} not found in stream {config.stream}", hint="check the id and NATS_URL"
            )
        if state.terminal:
            return exit_code_for(state.status)
        async for delivered in follow(
            nc, stream=config.stream, subject_filter=subject_filter, after_seq=log.last_seq
        ):
            try:
                record = decode_recorded(delivered.seq, delivered.subject, delivered.data, config.prefix)
            except MalformedEventError as exc:
                printer.note(f"warning: skipping malformed message #{delivered.seq}: {exc}")
                continue
            state = evolve(state, record.event)
            if delivered.seq > after:
                printer.event(event_view(record))
            if state is not None and state.terminal:
                return exit_code_for(state.status)
        raise CliError("the event stream ended unexpectedly")  # follow() never ends on its own
    finally:
        await nc.close()
