"""``watch --transport sse``: a stream cut while the task ends is resumed, not taken for the end.

Seen on a NATS cluster whose stream leader died: query's live follower gave up, the server closed
the event stream, and by the time the CLI asked, the task had completed. The CLI then exited 0
having printed only the events before the cut. A scripted SSE server replays that here.
"""

from __future__ import annotations

import asyncio
import io
import json

from bgagent_cli.config import CliConfig
from bgagent_cli.render import Printer
from bgagent_cli.watch import watch_sse

TASK = "01J0000000000000000000TASK"
TYPES = ["task_submitted", "task_started", "agent_finished", "task_completed"]


class ScriptedSse:
    """First stream: seqs 1-2, then closes. Later streams: every seq after ``Last-Event-ID``."""

    def __init__(self) -> None:
        self.streams: list[int] = []  # the Last-Event-ID of each stream request
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        path = head.split(" ", 2)[1]
        headers = {
            k.strip().lower(): v.strip()
            for k, v in (ln.split(":", 1) for ln in head.splitlines()[1:] if ":" in ln)
        }
        if path.endswith("/events/stream"):
            after = int(headers.get("last-event-id", "0"))
            self.streams.append(after)
            last = 2 if len(self.streams) == 1 else len(TYPES)
            views = [{"seq": seq, "type": TYPES[seq - 1]} for seq in range(after + 1, last + 1)]
            body = "".join(f"id: {v['seq']}\nevent: {v['type']}\ndata: {json.dumps(v)}\n\n" for v in views)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            writer.write(body.encode())
        else:  # GET /v1/tasks/{id}: the task has completed meanwhile
            data = json.dumps({"data": {"task_id": TASK, "status": "COMPLETED"}}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                + f"Content-Length: {len(data)}\r\n\r\n".encode()
                + data
            )
        await writer.drain()
        writer.close()


async def test_a_stream_cut_before_the_terminal_event_of_a_task_that_has_ended_is_resumed() -> None:
    sse = ScriptedSse()
    server = await asyncio.start_server(sse.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    out, err = io.StringIO(), io.StringIO()
    try:
        config = CliConfig(query_url=f"http://127.0.0.1:{port}", token="t")
        async with asyncio.timeout(20):
            code = await watch_sse(config, TASK, Printer(True, out=out, err=err))
    finally:
        server.close()
        await server.wait_closed()
    assert code == 0
    assert [json.loads(line)["seq"] for line in out.getvalue().splitlines()] == [1, 2, 3, 4]
    assert sse.streams == [0, 2]
    assert "reconnecting after seq 2" in err.getvalue()
