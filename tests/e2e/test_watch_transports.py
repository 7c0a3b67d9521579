"""``bgagent watch`` over SSE (query, bearer token) and over NATS print the same bytes."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bgagent_cli.demo import DEMO_SCRIPT, make_demo_repo

from .conftest import E2E, wait_until

pytestmark = pytest.mark.e2e


def _bgagent(e2e: E2E, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).parent / "bgagent")
    return subprocess.run([exe, *args], env={**e2e.env, **env}, capture_output=True, text=True, timeout=60)


def test_sse_and_nats_print_the_same_lines_live_and_afterwards(e2e: E2E, tmp_path: Path) -> None:
    repo = make_demo_repo(tmp_path)
    token = e2e.script(DEMO_SCRIPT[0]["turns"])
    created = e2e.cli_json("submit", "--repo", str(repo), "--task", f"fix the failing test {token}")
    task_id = created[0]["task_id"]
    # Both start while the task runs (catch-up, then live) ...
    live = {t: e2e.cli_popen("watch", task_id, "--transport", t, "-o", "json") for t in ("sse", "nats")}
    outputs = {t: p.communicate(timeout=60) for t, p in live.items()}
    for t, p in live.items():
        assert p.returncode == 0, (t, outputs[t][1])
    assert outputs["sse"][0] == outputs["nats"][0]
    lines = [json.loads(line) for line in outputs["sse"][0].splitlines()]
    assert lines[0]["type"] == "task_submitted"
    assert lines[-1]["type"] == "task_completed"
    seqs = [v["seq"] for v in lines]
    assert seqs == sorted(set(seqs))
    # ... and again once it has ended, from a cursor, with auto picking SSE on the dev stack.
    after = str(seqs[2])
    replays = {
        t: _bgagent(e2e, "watch", task_id, "--after", after, "--transport", t, "-o", "json")
        for t in ("sse", "nats", "auto")
    }
    assert {t: r.returncode for t, r in replays.items()} == {"sse": 0, "nats": 0, "auto": 0}
    assert replays["sse"].stdout == replays["nats"].stdout == replays["auto"].stdout
    assert replays["sse"].stdout.splitlines() == outputs["sse"][0].splitlines()[3:]


@pytest.mark.parametrize("transport", ["sse", "auto"])
def test_a_wrong_token_fails_with_a_clear_error_and_prints_nothing(e2e: E2E, transport: str) -> None:
    task_id = e2e.cli_json("submit", "--repo", "acme/never-cloned", "--task", "x")[0]["task_id"]
    done = _bgagent(
        e2e, "watch", task_id, "--transport", transport, "-o", "json", BGAGENT_TOKEN="wrong-token"
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert "UNAUTHORIZED" in done.stderr
    assert "hint:" in done.stderr
    e2e.cli("cancel", task_id)


def _read_lines(process: subprocess.Popen[str], into: list[str]) -> None:
    assert process.stdout is not None
    with process.stdout:
        for line in process.stdout:
            into.append(line)


class Proxy:
    """A TCP forwarder (threads) whose open connections can all be cut at once."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self._open |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def drop(self) -> None:
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._open.clear()

    def close(self) -> None:
        self.server.close()
        self.drop()


def test_sse_watch_resumes_after_the_connection_drops_and_prints_each_event_once(
    e2e: E2E, tmp_path: Path
) -> None:
    repo = make_demo_repo(tmp_path)
    slow = [{"text": "Waiting.", "tool_uses": [{"name": "bash", "input": {"command": "sleep 3"}}]}]
    token = e2e.script(slow + DEMO_SCRIPT[0]["turns"])
    task_id = e2e.cli_json("submit", "--repo", str(repo), "--task", f"fix the failing test {token}")[0][
        "task_id"
    ]
    query = urlsplit(e2e.client["query_url"])
    proxy = Proxy((query.hostname or "127.0.0.1", query.port or 80))
    try:
        exe = str(Path(sys.executable).parent / "bgagent")
        env = {**e2e.env, "BGAGENT_QUERY_URL": f"http://127.0.0.1:{proxy.port}"}
        with (tmp_path / "watch.err").open("w+") as errors:
            watcher = subprocess.Popen(
                [exe, "watch", task_id, "--transport", "sse", "-o", "json"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
            # One reader owns stdout: mixing readline() with communicate() loses what the
            # text wrapper has already buffered.
            printed: list[str] = []
            reader = threading.Thread(target=_read_lines, args=(watcher, printed))
            reader.start()
            wait_until(lambda: len(printed) >= 1, 30, "task_submitted: the stream is open")
            proxy.drop()  # mid-stream, while the task runs (its first tool call sleeps 3 s)
            wait_until(lambda: proxy.accepted >= 2, 15, "the watcher to reconnect")
            proxy.drop()
            wait_until(lambda: proxy.accepted >= 3, 15, "the watcher to reconnect again")
            watcher.wait(timeout=60)
            reader.join(timeout=10)
            errors.seek(0)
            err = errors.read()
    finally:
        proxy.close()
    assert watcher.returncode == 0, err
    assert "reconnecting after seq" in err
    assert proxy.accepted >= 3
    replay = _bgagent(e2e, "watch", task_id, "--transport", "nats", "-o", "json")
    assert replay.returncode == 0, replay.stderr
    assert "".join(printed) == replay.stdout
