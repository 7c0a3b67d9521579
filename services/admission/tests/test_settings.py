"""Settings come from the environment; every bad value names its variable."""

from __future__ import annotations

import pytest

from bgagent_admission.settings import Settings, SettingsError


def test_settings_from_env() -> None:
    s = Settings.from_env(
        {
            "BGAGENT_API_TOKENS": "a=alice,b=bob:admin",
            "BGAGENT_ADMISSION_PORT": "9001",
            "BGAGENT_ALLOW_LOCAL_REPOS": "true",
            "BGAGENT_PREFIX": "dev",
        }
    )
    assert (s.port, s.allow_local_repos, s.nats.prefix, s.host) == (9001, True, "dev", "127.0.0.1")
    who = s.tokens.authenticate("Bearer b")
    assert who is not None
    assert who.admin


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, "BGAGENT_API_TOKENS"),
        ({"BGAGENT_API_TOKENS": "broken"}, "BGAGENT_API_TOKENS"),
        ({"BGAGENT_API_TOKENS": "a=b", "BGAGENT_ADMISSION_PORT": "http"}, "BGAGENT_ADMISSION_PORT"),
        ({"BGAGENT_API_TOKENS": "a=b", "BGAGENT_ALLOW_LOCAL_REPOS": "maybe"}, "BGAGENT_ALLOW_LOCAL_REPOS"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        Settings.from_env(env)
