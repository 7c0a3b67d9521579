"""Anthropic's client tools, executed in the task workspace.

- ``bash`` (type ``bash_20250124``): every command is ``bash -c`` in the
  workspace, in its own process group, with a scrubbed environment, a
  per-command timeout and an output cap that keeps head and tail; with a
  :class:`~bgagent_runner.sandbox.Sandbox`, inside bubblewrap with resource limits.
- ``str_replace_based_edit_tool`` (type ``text_editor_20250728``): view,
  create, str_replace, insert; every path must resolve (symlinks followed) inside
  the workspace, and nothing under its ``.git`` is written.

A tool never raises for the model's mistakes: the result says what went wrong
and carries ``is_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from .cgroups import CommandCgroup
from .sandbox import BASH, SYSTEM_PATH, Sandbox, agent_path, etc_snapshot, explain_limit

BASH_TOOL: dict[str, Any] = {"type": "bash_20250124", "name": "bash"}
EDITOR_TOOL: dict[str, Any] = {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}

_ENV_PASSTHROUGH = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")
LIMIT_POLL_S = 0.1
_SNIPPET_LINES = 4
_WRITES = ("create", "str_replace", "insert")


class ToolOutput(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    is_error: bool = False


class ToolInputError(Exception):
    """The model called a tool wrongly; becomes an is_error tool result."""


def scrubbed_env(
    home: Path, base: Mapping[str, str] | None = None, *, workspace: Path | None = None
) -> dict[str, str]:
    """A minimal environment for agent commands: no tokens, keys or service settings.

    ``PATH`` is never the runner's (which may lead to its own virtualenv): the workspace's
    ``.venv/bin``, ``$HOME/.local/bin``, then the system toolchain; ``VIRTUAL_ENV`` is not set.
    """
    source = os.environ if base is None else base
    env = {k: source[k] for k in _ENV_PASSTHROUGH if k in source}
    env.update(
        PATH=agent_path(workspace, home),
        HOME=str(home),
        TERM="dumb",
        GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME="bgagent",
        GIT_AUTHOR_EMAIL="bgagent@localhost",
        GIT_COMMITTER_NAME="bgagent",
        GIT_COMMITTER_EMAIL="bgagent@localhost",
        PAGER="cat",
        # No .pyc files: they would be committed in repos without a .gitignore, and a same-size
        # edit within one second would leave a stale cache that hides the fix from the tests.
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


class _CappedBuffer:
    """Keeps the first and last ``cap // 2`` bytes of a stream and counts the rest."""

    def __init__(self, cap: int) -> None:
        self._half = max(1, cap // 2)
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self._half - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self._tail += chunk
            if len(self._tail) > 2 * self._half:
                del self._tail[: len(self._tail) - self._half]

    def text(self) -> str:
        tail = bytes(self._tail[-self._half :]) if self._tail else b""
        cut = self.total - len(self._head) - len(tail)
        head = self._head.decode("utf-8", errors="replace")
        if cut <= 0:
            return head + tail.decode("utf-8", errors="replace")
        return (
            head
            + f"\n\n[... {cut} bytes cut from the middle of {self.total} bytes of output ...]\n\n"
            + tail.decode("utf-8", errors="replace")
        )


class BashTool:
    """Runs each command with ``bash -c`` in the workspace (no state kept between calls).

    With a ``sandbox`` every command runs in bubblewrap: ``home`` (default: ``env["HOME"]``) and
    ``tmp`` (default: next to ``home``) are host directories of the attempt, created on demand and
    mounted as the agent's HOME and ``/tmp``, and ``etc`` next to them holds the sandbox's copy of
    ``/etc`` (made at the first command); ``network`` keeps the host's network namespace.
    """

    def __init__(
        self,
        cwd: Path,
        env: Mapping[str, str],
        *,
        timeout_s: float,
        output_cap: int,
        sandbox: Sandbox | None = None,
        home: Path | None = None,
        tmp: Path | None = None,
        network: bool = False,
    ) -> None:
        self.cwd = cwd
        self.env = dict(env)
        self.timeout_s = timeout_s
        self.output_cap = output_cap
        self.sandbox = sandbox
        self.home = home or Path(self.env.get("HOME") or cwd.parent / "home")
        self.tmp = tmp or self.home.parent / "tmp"
        self.etc = self.home.parent / "etc"
        self.network = network
        self._etc_ready = False

    async def run(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        if tool_input.get("restart"):
            return ToolOutput(text="The bash tool has been restarted (every command runs in a fresh shell).")
        command = tool_input.get("command")
        if not isinstance(command, str) or not command.strip():
            return ToolOutput(text="Error: the bash tool needs a non-empty 'command' string.", is_error=True)
        return await self.execute(command)

    def _prepare(self) -> CommandCgroup | None:
        """HOME and /tmp exist; in the sandbox, its /etc and the command's pids cgroup (blocking I/O)."""
        self.home.mkdir(parents=True, exist_ok=True)
        if self.sandbox is None:
            return None
        self.tmp.mkdir(parents=True, exist_ok=True)
        if not self._etc_ready:
            etc_snapshot(self.etc)
            self._etc_ready = True
        return self.sandbox.open_cgroup()

    async def execute(self, command: str) -> ToolOutput:
        prepare = asyncio.ensure_future(asyncio.to_thread(self._prepare))
        try:
            cgroup = await asyncio.shield(prepare)
        except asyncio.CancelledError:
            # The thread runs on when cancelled (it copies /etc into the workspace): let it finish,
            # so the workspace can be removed after us, and drop the cgroup it made.
            with contextlib.suppress(Exception):
                made = await prepare
                if made is not None:
                    await asyncio.to_thread(made.remove)
            raise
        if self.sandbox is None:
            argv, env = [BASH, "-c", command], self.env
        else:
            argv = self.sandbox.argv(
                command,
                workspace=self.cwd,
                home=self.home,
                tmp=self.tmp,
                etc=self.etc,
                env=self.env,
                network=self.network,
                cgroup=cgroup,
            )
            env = {"PATH": SYSTEM_PATH}  # for the prelude; bwrap gives the command self.env only
        try:
            return await self._run(argv, env, cgroup)
        finally:
            if cgroup is not None:
                await asyncio.shield(asyncio.to_thread(cgroup.remove))

    async def _run(self, argv: list[str], env: Mapping[str, str], cgroup: CommandCgroup | None) -> ToolOutput:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=self.cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        buffer = _CappedBuffer(self.output_cap)
        timed_out = False
        limited = asyncio.Event()
        watch = asyncio.create_task(_watch_pids(proc, cgroup, limited)) if cgroup is not None else None
        try:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await _pump(proc, buffer)
                    await proc.wait()
            except TimeoutError:
                timed_out = True
                _kill(proc, cgroup)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        await _pump(proc, buffer)
                await proc.wait()
        finally:
            if watch is not None:
                watch.cancel()
            if proc.returncode is None:  # cancelled (task cancel) or an unexpected error
                _kill(proc, cgroup)
                with contextlib.suppress(ProcessLookupError):
                    await asyncio.shield(proc.wait())
        if cgroup is not None and cgroup.limit_hits():  # e.g. a fork bomb whose shell had already exited
            limited.set()
        return self._result(buffer.text(), proc.returncode, timed_out=timed_out, limited=limited.is_set())

    def _result(self, text: str, code: int | None, *, timed_out: bool, limited: bool) -> ToolOutput:
        if limited and self.sandbox is not None:
            limit = self.sandbox.settings.max_procs
            return ToolOutput(
                text=f"{text}\n[the command hit the process limit of {limit} processes and threads "
                "(BGAGENT_SANDBOX_MAX_PROCS) and was stopped]".lstrip("\n"),
                is_error=True,
            )
        if timed_out:
            return ToolOutput(
                text=f"{text}\n[command timed out after {self.timeout_s:g}s (BGAGENT_TOOL_TIMEOUT_S); "
                "it was killed with every process it started]",
                is_error=True,
            )
        limit_hit = explain_limit(code, text, self.sandbox.settings) if self.sandbox else None
        if code != 0:
            note = f"[exit code {code}]"
            if limit_hit:
                note = f"[exit code {code}: the command ran into {limit_hit}]"
            return ToolOutput(text=f"{text}\n{note}".lstrip("\n"), is_error=True)
        if limit_hit:  # a process of the command was killed by a limit, though the command went on
            return ToolOutput(text=f"{text}\n[a process of this command ran into {limit_hit}]", is_error=True)
        return ToolOutput(text=text if text else "(no output)")


async def _pump(proc: asyncio.subprocess.Process, buffer: _CappedBuffer) -> None:
    assert proc.stdout is not None
    while True:
        chunk = await proc.stdout.read(65536)
        if not chunk:
            return
        buffer.feed(chunk)


async def _watch_pids(
    proc: asyncio.subprocess.Process, cgroup: CommandCgroup, limited: asyncio.Event
) -> None:
    """Stop the command as soon as its pids cgroup refuses a fork (a fork bomb ends in ~0.1 s)."""
    while proc.returncode is None:
        await asyncio.sleep(LIMIT_POLL_S)
        if cgroup.limit_hits():
            limited.set()
            _kill(proc, cgroup)
            return


def _kill(proc: asyncio.subprocess.Process, cgroup: CommandCgroup | None) -> None:
    """SIGKILL the process group; in the sandbox bwrap's death takes its pid namespace along. The
    cgroup's members are killed too: that also ends a sandbox caught while bwrap was still setting
    up, whose pid 1 has not yet asked to die with bwrap."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if cgroup is not None:
        cgroup.kill()


class TextEditor:
    """The text editor tool over one workspace directory (sync: call it in a thread)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def run(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        try:
            return ToolOutput(text=self._dispatch(tool_input))
        except ToolInputError as exc:
            return ToolOutput(text=f"Error: {exc}", is_error=True)
        except OSError as exc:
            return ToolOutput(text=f"Error: {exc.strerror or exc}", is_error=True)

    def resolve(self, raw: Any) -> Path:
        if not isinstance(raw, str) or not raw:
            raise ToolInputError("'path' must be a non-empty string")
        path = Path(raw)
        candidate = path if path.is_absolute() else self.root / path
        try:
            resolved = candidate.resolve()
        except RuntimeError:  # a symlink loop (Python 3.11 raises RuntimeError for it)
            raise ToolInputError(f"{raw} is a symlink loop") from None
        if resolved != self.root and not resolved.is_relative_to(self.root):
            raise ToolInputError(
                f"{raw} is outside the workspace {self.root}; only paths inside it are allowed"
            )
        return resolved

    def _dispatch(self, tool_input: Mapping[str, Any]) -> str:
        command = tool_input.get("command")
        path = self.resolve(tool_input.get("path"))
        git_dir = self.root / ".git"
        if command in _WRITES and (path == git_dir or path.is_relative_to(git_dir)):
            raise ToolInputError(
                f"{self._rel(path)} is inside .git, which the agent may not change (the platform commits)"
            )
        if command == "view":
            return self._view(path, tool_input.get("view_range"))
        if command == "create":
            return self._create(path, tool_input.get("file_text"))
        if command == "str_replace":
            return self._str_replace(path, tool_input.get("old_str"), tool_input.get("new_str", ""))
        if command == "insert":
            text = tool_input.get("insert_text", tool_input.get("new_str"))
            return self._insert(path, tool_input.get("insert_line"), text)
        raise ToolInputError(
            f"unknown command {command!r}; use one of view, create, str_replace, insert"
            " (undo_edit is not available in text_editor_20250728)"
        )

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.root)) if path != self.root else "."

    def _view(self, path: Path, view_range: Any) -> str:
        if path.is_dir():
            if view_range is not None:
                raise ToolInputError("view_range is not allowed when viewing a directory")
            return self._listing(path)
        text = _read_text(path)
        lines = text.split("\n")
        start, end = 1, len(lines)
        if view_range is not None:
            ok = isinstance(view_range, list) and len(view_range) == 2
            if not ok or not all(isinstance(n, int) and not isinstance(n, bool) for n in view_range):
                raise ToolInputError("view_range must be a list of two integers [start, end]")
            start, end = view_range[0], (len(lines) if view_range[1] == -1 else view_range[1])
            if start < 1 or start > len(lines) or end < start or end > len(lines):
                raise ToolInputError(
                    f"invalid view_range {view_range}: the file has {len(lines)} lines "
                    "(start ≥ 1, end ≥ start, end ≤ line count or -1)"
                )
        numbered = _numbered(lines[start - 1 : end], start)
        return f"Here's the result of running `cat -n` on {self._rel(path)}:\n{numbered}"

    def _listing(self, root: Path) -> str:
        entries: list[str] = []
        for dirpath, dirnames, filenames in os.walk(root):
            depth = len(Path(dirpath).relative_to(root).parts)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            if depth >= 2:
                dirnames[:] = []
            for name in [*dirnames, *sorted(f for f in filenames if not f.startswith("."))]:
                entries.append(self._rel(Path(dirpath) / name) + ("/" if name in dirnames else ""))
        body = "\n".join(sorted(entries)) or "(empty directory)"
        return (
            f"Files and directories up to 2 levels deep in {self._rel(root)}, hidden items excluded:\n{body}"
        )

    def _create(self, path: Path, file_text: Any) -> str:
        if not isinstance(file_text, str):
            raise ToolInputError("'file_text' is required for create")
        if path.is_dir():
            raise ToolInputError(f"{self._rel(path)} is a directory")
        existed = path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(file_text, encoding="utf-8")
        return f"File {'overwritten' if existed else 'created'}: {self._rel(path)}"

    def _str_replace(self, path: Path, old: Any, new: Any) -> str:
        if not isinstance(old, str) or not old:
            raise ToolInputError("'old_str' is required for str_replace and must not be empty")
        if new is None:
            new = ""
        if not isinstance(new, str):
            raise ToolInputError("'new_str' must be a string")
        text = _read_text(path)
        count = text.count(old)
        if count == 0:
            raise ToolInputError(
                f"no replacement was performed: old_str did not appear verbatim in {self._rel(path)}"
            )
        if count > 1:
            lines = [i + 1 for i, line in enumerate(text.split("\n")) if old.split("\n")[0] in line]
            raise ToolInputError(
                f"no replacement was performed: old_str occurs {count} times in {self._rel(path)} "
                f"(lines {lines}); include more context to make it unique"
            )
        first_line = text[: text.index(old)].count("\n")
        updated = text.replace(old, new, 1)
        path.write_text(updated, encoding="utf-8")
        return self._snippet(path, updated, first_line, new.count("\n"))

    def _insert(self, path: Path, line: Any, text: Any) -> str:
        if not isinstance(line, int) or isinstance(line, bool):
            raise ToolInputError("'insert_line' must be an integer")
        if not isinstance(text, str):
            raise ToolInputError("'insert_text' is required for insert")
        lines = _read_text(path).split("\n")
        if line < 0 or line > len(lines):
            raise ToolInputError(
                f"insert_line {line} is out of range: the file has {len(lines)} lines (0..{len(lines)})"
            )
        new_lines = text.split("\n")
        updated = "\n".join([*lines[:line], *new_lines, *lines[line:]])
        path.write_text(updated, encoding="utf-8")
        return self._snippet(path, updated, line, len(new_lines) - 1)

    def _snippet(self, path: Path, text: str, first_line: int, extra: int) -> str:
        lines = text.split("\n")
        start = max(0, first_line - _SNIPPET_LINES)
        end = min(len(lines), first_line + extra + _SNIPPET_LINES + 1)
        return (
            f"The file {self._rel(path)} has been edited. "
            "Here's the result of running `cat -n` on a snippet:\n"
            f"{_numbered(lines[start:end], start + 1)}\nReview the changes and edit again if needed."
        )


def _read_text(path: Path) -> str:
    if not path.exists():
        raise ToolInputError(f"{path.name}: no such file")
    if path.is_dir():
        raise ToolInputError(f"{path.name} is a directory")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ToolInputError(f"{path.name} is not a UTF-8 text file") from exc


def _numbered(lines: list[str], first: int) -> str:
    return "\n".join(f"{n:6}\t{line}" for n, line in enumerate(lines, start=first))
