"""Local repositories from the CLI: relative paths become absolute, slugs stay slugs, dev roots."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bgagent_cli.commands_ops import _repo_roots
from bgagent_cli.errors import CliError
from bgagent_cli.main import app, resolve_repo
from bgagent_cli.stack import Stack, StackSpec

CWD = "/home/me/work/project"


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("./x", f"{CWD}/x"),
        (".", CWD),
        ("./", CWD),
        ("..", "/home/me/work"),
        ("../x", "/home/me/work/x"),
        ("../../a/./b/", "/home/me/a/b"),
        ("x/", f"{CWD}/x"),
        ("acme/widgets/", f"{CWD}/acme/widgets"),
        ("./acme/widgets", f"{CWD}/acme/widgets"),
        (".hidden", f"{CWD}/.hidden"),
        ("~", "/home/me"),
        ("~/code/x", "/home/me/code/x"),
        ("/srv/repos/x/../y", "/srv/repos/y"),
        ("  ./x  ", f"{CWD}/x"),
    ],
)
def test_paths_are_made_absolute(given: str, sent: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/me")
    assert resolve_repo(given, cwd=CWD) == sent


@pytest.mark.parametrize(
    "given",
    ["acme/widgets", "widgets", "file:///srv/x", "file://./x", "https://github.com/acme/widgets", "a.b/c_d"],
)
def test_slugs_and_urls_are_sent_as_given(
    given: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "acme" / "widgets").mkdir(parents=True)  # a same-named folder here changes nothing
    (tmp_path / "widgets").mkdir(exist_ok=True)
    assert resolve_repo(given) == given


def test_an_unknown_user_home_is_an_error() -> None:
    with pytest.raises(CliError, match="cannot expand '~no-such-user-bgagent'"):
        resolve_repo("~no-such-user-bgagent/x", cwd=CWD)


# --- through the command: what reaches the server ----------------------------------------


class _Admission(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]] = []
    reply: tuple[int, dict[str, Any]] = (201, {})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        status, body = type(self).reply
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def admission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Admission]]:
    handler = type("Handler", (_Admission,), {"bodies": [], "reply": (201, {"data": {"task_id": "T1"}})})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for name in ("BGAGENT_QUERY_URL", "NATS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BGAGENT_API_URL", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("BGAGENT_TOKEN", "t")
    monkeypatch.setenv("BGAGENT_HOME", str(tmp_path / "home"))
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_submit_sends_a_relative_repo_as_an_absolute_path(
    admission: type[_Admission], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work" / "here"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    runner = CliRunner()
    for given in ("../repo", "./acme/widgets", "acme/widgets"):
        result = runner.invoke(app, ["submit", "--repo", given, "--task", "t", "-o", "json"])
        assert result.exit_code == 0, result.output
    assert [b["repo"] for b in admission.bodies] == [
        str(tmp_path / "work" / "repo"),
        str(work / "acme" / "widgets"),
        "acme/widgets",
    ]


def test_a_repo_outside_the_roots_gets_a_hint_about_them(admission: type[_Admission], tmp_path: Path) -> None:
    message = "repo: is not under a local repository root this server allows"
    admission.reply = (400, {"error": {"code": "VALIDATION_ERROR", "message": message, "request_id": "r"}})
    result = CliRunner().invoke(app, ["submit", "--repo", "/etc", "--task", "t"])
    assert result.exit_code == 2
    assert message in result.output
    assert "BGAGENT_LOCAL_REPO_ROOTS" in result.output
    assert str(tmp_path / "home" / "repos") in result.output

    missing = "repo: does not exist (or is not a directory) under the local repository roots"
    admission.reply = (400, {"error": {"code": "VALIDATION_ERROR", "message": missing, "request_id": "r"}})
    result = CliRunner().invoke(app, ["submit", "--repo", str(tmp_path / "home" / "repos" / "x"), "-t", "t"])
    assert result.exit_code == 2
    assert "BGAGENT_LOCAL_REPO_ROOTS" not in result.output


# --- the dev stack's roots -----------------------------------------------------------------


def test_the_stack_always_allows_its_own_repos_folder(tmp_path: Path) -> None:
    extra = tmp_path / "code"
    extra.mkdir()
    link = tmp_path / "link"
    link.symlink_to(extra)
    spec = StackSpec(home=str(tmp_path / "home"), database_url="postgresql://x/y", repo_roots=(str(link),))
    assert spec.local_repo_roots == (str(tmp_path / "home" / "repos"), str(link), str(extra))
    env = Stack(spec)._service_env("nats://127.0.0.1:1")
    assert env["BGAGENT_LOCAL_REPO_ROOTS"] == os.pathsep.join(spec.local_repo_roots)
    assert "BGAGENT_ALLOW_LOCAL_REPOS" not in env


def test_repo_roots_are_absolute_existing_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "code").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    code = str(tmp_path / "code")
    assert _repo_roots([Path("code"), Path("~/code/"), Path("./code/../code")]) == (code, code, code)
    with pytest.raises(CliError, match="not a directory"):
        _repo_roots([Path("missing")])


def test_dev_up_refuses_a_missing_root_before_starting_anything(tmp_path: Path) -> None:
    env = {"BGAGENT_HOME": str(tmp_path / "home")}
    result = CliRunner().invoke(app, ["dev", "up", "--repo-root", str(tmp_path / "nope")], env=env)
    assert result.exit_code == 2
    assert "not a directory" in result.output
    assert not (tmp_path / "home").exists()
