"""Settings from the environment, and how GitHub's rate-limit answers turn into waits."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bgagent_eventstore import NatsSettings
from bgagent_fanout.__main__ import serve
from bgagent_fanout.github import rate_limit_wait
from bgagent_fanout.settings import Settings


def test_settings_from_env_with_defaults_and_overrides() -> None:
    s = Settings.from_env({})
    assert s.github_api_url == "https://api.github.com"
    assert s.batch_max == 100
    assert s.ready_file is None
    assert s.auto_provision is False
    s = Settings.from_env(
        {
            "GITHUB_TOKEN": "ghs_secret_value",
            "BGAGENT_GITHUB_API_URL": "http://127.0.0.1:9/",
            "BGAGENT_PREFIX": "p1",
            "BGAGENT_FANOUT_LINGER_S": "0",
            "BGAGENT_AUTO_PROVISION": "true",
            "BGAGENT_READY_FILE": "/tmp/x",
        }
    )
    assert s.github_api_url == "http://127.0.0.1:9"
    assert s.nats.prefix == "p1"
    assert s.linger_s == 0.0
    assert s.auto_provision is True
    assert s.ready_file == "/tmp/x"
    assert "ghs_secret_value" not in repr(s)
    with pytest.raises(ValueError, match="expected true or false"):
        Settings.from_env({"BGAGENT_AUTO_PROVISION": "maybe"})


def _response(status: int, headers: dict[str, str], message: str = "x") -> httpx.Response:
    return httpx.Response(status, headers=headers, json={"message": message})


def test_rate_limit_waits() -> None:
    now = 1_000_000.0
    wait = rate_limit_wait
    assert wait(_response(403, {"Retry-After": "7"}), secondary_wait_s=60, now=now) == 7
    assert wait(_response(429, {"Retry-After": "0"}), secondary_wait_s=60, now=now) == 0
    primary = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(now) + 10)}
    assert wait(_response(403, primary), secondary_wait_s=60, now=now) == pytest.approx(10.5)
    assert wait(_response(429, {}), secondary_wait_s=60, now=now) == 60
    secondary = _response(403, {}, "You have exceeded a secondary rate limit")
    assert wait(secondary, secondary_wait_s=60, now=now) == 60
    forbidden = _response(403, {}, "Resource not accessible by integration")
    assert wait(forbidden, secondary_wait_s=60, now=now) is None
    assert wait(_response(404, {"Retry-After": "5"}), secondary_wait_s=60, now=now) is None
    assert wait(_response(500, {}), secondary_wait_s=60, now=now) is None


@pytest.mark.integration
async def test_refuses_to_start_without_provisioned_assets(nats_url: str) -> None:
    settings = Settings(nats=NatsSettings(url=nats_url, stream="NOPE_NOT_THERE", prefix="nope"))
    with pytest.raises(SystemExit, match="admin init"):
        await serve(settings, asyncio.Event())
