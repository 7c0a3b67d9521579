"""The client tools: bash (timeouts, output cap, scrubbed env, cancel) and the text editor."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from bgagent_runner.tools import BashTool, TextEditor, scrubbed_env


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "a.py").write_text("one\ntwo\nthree\n")
    (root / "pkg").mkdir()
    (root / "pkg" / "mod.py").write_text("x = 1\n")
    (root / ".hidden").write_text("secret")
    return root


def make_bash(ws: Path, *, timeout_s: float = 10.0, cap: int = 10_000) -> BashTool:
    return BashTool(ws, scrubbed_env(ws.parent / "home"), timeout_s=timeout_s, output_cap=cap)


async def test_bash_runs_in_the_workspace_and_merges_stderr(ws: Path) -> None:
    out = await make_bash(ws).run({"command": "pwd; echo err >&2; ls"})
    assert not out.is_error
    lines = out.text.splitlines()
    assert lines[0] == str(ws)
    assert "err" in lines
    assert "a.py" in lines


async def test_bash_nonzero_exit_is_an_error_result(ws: Path) -> None:
    out = await make_bash(ws).run({"command": "echo failing; exit 3"})
    assert out.is_error
    assert "failing" in out.text
    assert "[exit code 3]" in out.text


def _alive(pid: int) -> bool:
    """The process runs (a zombie's command line is empty; a reaped one has no /proc entry)."""
    try:
        return bool((Path("/proc") / str(pid) / "cmdline").read_bytes())
    except OSError:
        return False


async def test_bash_timeout_kills_the_process_group(ws: Path) -> None:
    command = "(sleep 30 & echo $! > bg.pid) ; echo $$ > fg.pid; echo started; sleep 30"
    out = await make_bash(ws, timeout_s=0.5).run({"command": command})
    assert out.is_error
    assert "started" in out.text
    assert "timed out after 0.5s" in out.text
    pids = [int((ws / name).read_text()) for name in ("fg.pid", "bg.pid")]
    deadline = time.monotonic() + 5  # a failure bound: the orphaned sleep is reaped by init, not by us
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"still running after the timeout: {pids}"
        await asyncio.sleep(0.01)


async def test_bash_output_cap_keeps_head_and_tail(ws: Path) -> None:
    command = "echo FIRST; head -c 200000 /dev/zero | tr '\\0' 'x'; echo; echo LAST"
    out = await make_bash(ws, cap=1000).run({"command": command})
    assert not out.is_error
    assert out.text.startswith("FIRST")
    assert out.text.rstrip().endswith("LAST")
    assert "bytes cut from the middle of" in out.text
    assert len(out.text) < 1200


async def test_bash_env_is_scrubbed_of_secrets(ws: Path) -> None:
    env = scrubbed_env(ws.parent / "home", {"PATH": os.environ["PATH"], "GITHUB_TOKEN": "ghp_x", "FOO": "1"})
    tool = BashTool(ws, env, timeout_s=5, output_cap=10_000)
    out = await tool.run({"command": "env"})
    assert "GITHUB_TOKEN" not in out.text
    assert "FOO=" not in out.text
    assert f"HOME={ws.parent / 'home'}" in out.text
    assert "PYTHONDONTWRITEBYTECODE=1" in out.text


async def test_bash_cancel_kills_the_running_command(ws: Path) -> None:
    pid_file = ws / "pid"
    task = asyncio.create_task(make_bash(ws).run({"command": f"echo $$ > {pid_file}; sleep 30"}))
    deadline = time.monotonic() + 5
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    pid = int(pid_file.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_bash_restart_and_bad_input(ws: Path) -> None:
    tool = make_bash(ws)
    assert not (await tool.run({"restart": True})).is_error
    assert (await tool.run({})).is_error


def test_editor_view_file_with_line_numbers_and_range(ws: Path) -> None:
    editor = TextEditor(ws)
    out = editor.run({"command": "view", "path": "a.py"})
    assert not out.is_error
    assert "     1\tone\n     2\ttwo\n     3\tthree" in out.text
    ranged = editor.run({"command": "view", "path": str(ws / "a.py"), "view_range": [2, 3]})
    assert "     2\ttwo\n     3\tthree" in ranged.text
    assert "one" not in ranged.text
    assert editor.run({"command": "view", "path": "a.py", "view_range": [3, 99]}).is_error


def test_editor_view_directory_lists_two_levels_without_hidden(ws: Path) -> None:
    out = TextEditor(ws).run({"command": "view", "path": "."})
    assert not out.is_error
    assert "a.py" in out.text
    assert "pkg/mod.py" in out.text
    assert ".hidden" not in out.text


def test_editor_create_str_replace_insert(ws: Path) -> None:
    editor = TextEditor(ws)
    assert not editor.run({"command": "create", "path": "new/dir/f.txt", "file_text": "alpha\nbeta"}).is_error
    assert (ws / "new/dir/f.txt").read_text() == "alpha\nbeta"
    out = editor.run(
        {"command": "str_replace", "path": "new/dir/f.txt", "old_str": "beta", "new_str": "gamma"}
    )
    assert not out.is_error
    assert (ws / "new/dir/f.txt").read_text() == "alpha\ngamma"
    out = editor.run({"command": "insert", "path": "new/dir/f.txt", "insert_line": 1, "insert_text": "mid"})
    assert not out.is_error
    assert (ws / "new/dir/f.txt").read_text() == "alpha\nmid\ngamma"


def test_editor_str_replace_needs_exactly_one_occurrence(ws: Path) -> None:
    editor = TextEditor(ws)
    (ws / "dup.txt").write_text("x\nx\n")
    missing = editor.run({"command": "str_replace", "path": "dup.txt", "old_str": "y", "new_str": "z"})
    assert missing.is_error
    assert "did not appear verbatim" in missing.text
    twice = editor.run({"command": "str_replace", "path": "dup.txt", "old_str": "x", "new_str": "z"})
    assert twice.is_error
    assert "occurs 2 times" in twice.text
    assert (ws / "dup.txt").read_text() == "x\nx\n"


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/passwd", "pkg/../../outside.txt", "link/passwd"])
def test_editor_refuses_paths_outside_the_workspace(ws: Path, path: str) -> None:
    (ws / "link").symlink_to("/etc")
    editor = TextEditor(ws)
    for command in ({"command": "view"}, {"command": "create", "file_text": "x"}):
        out = editor.run({**command, "path": path})
        assert out.is_error
        assert "outside the workspace" in out.text
    assert not (ws.parent / "outside.txt").exists()


def test_editor_unknown_command_is_an_error_result(ws: Path) -> None:
    out = TextEditor(ws).run({"command": "undo_edit", "path": "a.py"})
    assert out.is_error
    assert "unknown command" in out.text


# --- symlinks and .git: the editor runs as the runner, outside the sandbox -------------------------

EDITS: list[dict[str, object]] = [
    {"command": "view"},
    {"command": "create", "file_text": "planted"},
    {"command": "str_replace", "old_str": "root", "new_str": "planted"},
    {"command": "insert", "insert_line": 0, "insert_text": "planted"},
]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file and a folder next to the workspace, which no editor command may read or change."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text("root:x:0:0\n")
    return folder


@pytest.mark.parametrize("edit", EDITS, ids=lambda e: str(e["command"]))
def test_editor_refuses_a_symlinked_file_pointing_out_of_the_workspace(
    ws: Path, outside: Path, edit: dict[str, object]
) -> None:
    (ws / "innocent.txt").symlink_to(outside / "secret.txt")
    out = TextEditor(ws).run({**edit, "path": "innocent.txt"})
    assert out.is_error
    assert "outside the workspace" in out.text
    assert "root:x" not in out.text
    assert (outside / "secret.txt").read_text() == "root:x:0:0\n"


@pytest.mark.parametrize("edit", EDITS, ids=lambda e: str(e["command"]))
def test_editor_refuses_a_path_through_a_symlinked_directory_out_of_the_workspace(
    ws: Path, outside: Path, edit: dict[str, object]
) -> None:
    (ws / "docs").symlink_to(outside)
    out = TextEditor(ws).run({**edit, "path": str(ws / "docs" / "secret.txt")})
    assert out.is_error
    assert "outside the workspace" in out.text
    assert (outside / "secret.txt").read_text() == "root:x:0:0\n"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_editor_create_through_a_dangling_symlink_out_of_the_workspace_is_refused(
    ws: Path, outside: Path
) -> None:
    (ws / "later.txt").symlink_to(outside / "not-yet.txt")
    out = TextEditor(ws).run({"command": "create", "path": "later.txt", "file_text": "planted"})
    assert out.is_error
    assert "outside the workspace" in out.text
    assert not (outside / "not-yet.txt").exists()


def test_editor_follows_symlinks_that_stay_inside_the_workspace(ws: Path) -> None:
    (ws / "alias.py").symlink_to(ws / "a.py")
    out = TextEditor(ws).run({"command": "str_replace", "path": "alias.py", "old_str": "two", "new_str": "2"})
    assert not out.is_error, out.text
    assert (ws / "a.py").read_text() == "one\n2\nthree\n"


def test_editor_reports_a_symlink_loop_as_a_tool_error(ws: Path) -> None:
    (ws / "loop-a").symlink_to(ws / "loop-b")
    (ws / "loop-b").symlink_to(ws / "loop-a")
    out = TextEditor(ws).run({"command": "view", "path": "loop-a"})
    assert out.is_error


@pytest.mark.parametrize("edit", EDITS[1:], ids=lambda e: str(e["command"]))
def test_editor_never_writes_inside_git(ws: Path, edit: dict[str, object]) -> None:
    (ws / ".git").mkdir()
    (ws / ".git" / "config").write_text("[core]\n\tbare = false # root\n")
    out = TextEditor(ws).run({**edit, "path": ".git/config"})
    assert out.is_error
    assert "inside .git" in out.text
    assert (ws / ".git" / "config").read_text() == "[core]\n\tbare = false # root\n"
    assert not TextEditor(ws).run({"command": "view", "path": ".git/config"}).is_error


def test_agent_path_is_the_workspace_home_and_system_never_the_runners(ws: Path) -> None:
    home = ws.parent / "home"
    env = scrubbed_env(home, {"PATH": "/root/.venv/bin:/usr/bin", "VIRTUAL_ENV": "/root/.venv"}, workspace=ws)
    assert env["PATH"] == f"{ws}/.venv/bin:{home}/.local/bin:/usr/local/bin:/usr/bin:/bin"
    assert "VIRTUAL_ENV" not in env
