"""The fake GitHub behaves like GitHub where bgagent depends on it: git over HTTP, REST shapes, faults."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bgagent_testing.fake_github import FakeGitHub

TOKEN = "ghs_test_token"


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.invalid",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.invalid",
    )
    return subprocess.run(
        ["git", "-c", "credential.helper=", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


@pytest.fixture
def gh(tmp_path: Path) -> Iterator[FakeGitHub]:
    with FakeGitHub(tmp_path / "github", token=TOKEN) as server:
        server.create_repo("acme", "widgets", {"README.md": "# widgets\n", "src/app.py": "print('hi')\n"})
        yield server


@pytest.fixture
def api(gh: FakeGitHub) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/vnd.github+json"}
    with httpx.Client(base_url=gh.api_url, headers=headers, timeout=10) as client:
        yield client


def test_clone_push_and_open_pull_request(gh: FakeGitHub, api: httpx.Client, tmp_path: Path) -> None:
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", gh.clone_url("acme", "widgets", with_token=True), str(work))
    assert (work / "src" / "app.py").read_text() == "print('hi')\n"

    git(work, "checkout", "-q", "-b", "bgagent/feature")
    (work / "NEW.md").write_text("new\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "add new")
    git(work, "push", "-q", "origin", "bgagent/feature")
    local_sha = git(work, "rev-parse", "HEAD").stdout.strip()
    assert gh.branch_sha("acme", "widgets", "bgagent/feature") == local_sha

    repo = api.get("/repos/acme/widgets").json()
    assert repo["default_branch"] == "main"
    created = api.post(
        "/repos/acme/widgets/pulls",
        json={"title": "Feature", "head": "bgagent/feature", "base": "main", "body": "hello"},
    )
    assert created.status_code == 201, created.text
    pr = created.json()
    assert pr["head"]["ref"] == "bgagent/feature"
    assert pr["base"]["ref"] == "main"
    assert pr["head"]["sha"] == local_sha
    assert pr["html_url"].endswith(f"/acme/widgets/pull/{pr['number']}")

    again = api.post(
        "/repos/acme/widgets/pulls", json={"title": "Again", "head": "acme:bgagent/feature", "base": "main"}
    )
    assert again.status_code == 422
    assert "already exists" in again.json()["errors"][0]["message"]

    found = api.get("/repos/acme/widgets/pulls", params={"head": "acme:bgagent/feature", "state": "open"})
    assert [p["number"] for p in found.json()] == [pr["number"]]
    assert api.get("/repos/acme/widgets/pulls", params={"head": "acme:other"}).json() == []
    assert api.get(f"/repos/acme/widgets/pulls/{pr['number']}").json()["title"] == "Feature"

    review = api.post(
        f"/repos/acme/widgets/pulls/{pr['number']}/reviews", json={"body": "LGTM", "event": "COMMENT"}
    )
    assert review.status_code == 200
    assert review.json()["state"] == "COMMENTED"
    assert gh.state()["reviews"][0]["body"] == "LGTM"


def test_git_without_token_is_refused(gh: FakeGitHub, tmp_path: Path) -> None:
    done = git(tmp_path, "clone", "-q", gh.clone_url("acme", "widgets"), str(tmp_path / "x"), check=False)
    assert done.returncode != 0
    assert gh.request_log()[-1]["status"] == 401
    wrong = gh.clone_url("acme", "widgets", with_token=True).replace(TOKEN, "nope")
    assert git(tmp_path, "clone", "-q", wrong, str(tmp_path / "y"), check=False).returncode != 0


def test_rest_requires_a_token(gh: FakeGitHub) -> None:
    assert httpx.get(f"{gh.api_url}/repos/acme/widgets").status_code == 401
    bad = httpx.get(f"{gh.api_url}/repos/acme/widgets", headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401
    assert bad.json()["message"] == "Bad credentials"
    assert httpx.get(
        f"{gh.api_url}/repos/acme/widgets", headers={"Authorization": f"token {TOKEN}"}
    ).is_success


def test_comment_lifecycle_with_history(gh: FakeGitHub, api: httpx.Client) -> None:
    issue = gh.create_issue("acme", "widgets", "Bug")
    posted = api.post(f"/repos/acme/widgets/issues/{issue}/comments", json={"body": "one"})
    assert posted.status_code == 201
    cid = posted.json()["id"]
    assert api.patch(f"/repos/acme/widgets/issues/comments/{cid}", json={"body": "two"}).status_code == 200
    listed = api.get(f"/repos/acme/widgets/issues/{issue}/comments").json()
    assert [c["body"] for c in listed] == ["two"]
    (comment,) = gh.comments()
    assert [h["body"] for h in comment["history"]] == ["one", "two"]

    conditional = api.patch(
        f"/repos/acme/widgets/issues/comments/{cid}", json={"body": "three"}, headers={"If-Match": '"x"'}
    )
    assert conditional.status_code == 400

    assert api.delete(f"/repos/acme/widgets/issues/comments/{cid}").status_code == 204
    assert api.patch(f"/repos/acme/widgets/issues/comments/{cid}", json={"body": "four"}).status_code == 404
    assert api.get(f"/repos/acme/widgets/issues/{issue}/comments").json() == []
    assert api.post("/repos/acme/widgets/issues/999/comments", json={"body": "x"}).status_code == 404
    assert gh.request_count("PATCH /repos/{owner}/{repo}/issues/comments/{id}") == 3


def test_injected_rate_limit_then_recovers(gh: FakeGitHub, api: httpx.Client) -> None:
    gh.inject(429, retry_after=1, times=1, path_prefix="/repos/acme/widgets")
    limited = api.get("/repos/acme/widgets")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1"
    assert api.get("/repos/acme/widgets").status_code == 200

    gh.inject(403, reset_in=2, times=1, method="GET")
    primary = api.get("/repos/acme/widgets")
    assert primary.status_code == 403
    assert primary.headers["x-ratelimit-remaining"] == "0"
    assert int(primary.headers["x-ratelimit-reset"]) >= int(time.time())
    assert gh.request_counts()["GET /repos/{owner}/{repo}"] == 3


def test_process_mode_with_admin_controls(tmp_path: Path) -> None:
    args = ["--port", "0", "--root", str(tmp_path / "gh"), "--token", TOKEN]
    with subprocess.Popen(
        [sys.executable, "-m", "bgagent_testing.fake_github", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("listening on "), line
            url = line.split()[-1]
            assert httpx.post(f"{url}/_admin/repos", json={"owner": "o", "name": "r"}).status_code == 201
            number = httpx.post(f"{url}/_admin/issues", json={"owner": "o", "repo": "r"}).json()["number"]
            auth = {"Authorization": f"Bearer {TOKEN}"}
            httpx.post(f"{url}/repos/o/r/issues/{number}/comments", json={"body": "hi"}, headers=auth)
            state = httpx.get(f"{url}/_admin/state").json()
            assert [c["body"] for c in state["comments"]] == ["hi"]
            clone = url.replace("http://", f"http://x-access-token:{TOKEN}@") + "/o/r.git"
            git(tmp_path, "clone", "-q", clone, str(tmp_path / "c"))
            assert (tmp_path / "c" / "README.md").exists()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert proc.returncode == 0


def test_large_push_uses_chunked_body(gh: FakeGitHub, tmp_path: Path) -> None:
    work = tmp_path / "big"
    git(tmp_path, "clone", "-q", gh.clone_url("acme", "widgets", with_token=True), str(work))
    (work / "blob.bin").write_bytes(os.urandom(2_500_000))  # above git's 1 MiB http.postBuffer
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "big")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/big")
    assert gh.branch_sha("acme", "widgets", "big") == git(work, "rev-parse", "HEAD").stdout.strip()
