"""Settings come from the environment; every bad value names its variable."""

from __future__ import annotations

import pytest

from bgagent_admission.settings import Settings, SettingsError, local_repo_roots


def test_settings_from_env() -> None:
    s = Settings.from_env(
        {
            "BGAGENT_API_TOKENS": "a=alice,b=bob:admin",
            "BGAGENT_ADMISSION_PORT": "9001",
            "BGAGENT_LOCAL_REPO_ROOTS": "/srv/repos",
            "BGAGENT_PREFIX": "dev",
        }
    )
    assert (s.port, s.local_repo_roots, s.nats.prefix, s.host) == (9001, ("/srv/repos",), "dev", "127.0.0.1")
    who = s.tokens.authenticate("Bearer b")
    assert who is not None
    assert who.admin


def test_local_repos_are_disabled_by_default() -> None:
    assert Settings.from_env({"BGAGENT_API_TOKENS": "a=b"}).local_repo_roots == ()


@pytest.mark.parametrize(
    ("raw", "roots"),
    [
        ("", ()),
        ("  ", ()),
        ("/srv/repos", ("/srv/repos",)),
        ("/srv/repos/:/home/me/code", ("/srv/repos", "/home/me/code")),
        (" /a/./b ::/a/b/ : /c/../d", ("/a/b", "/d")),
        ("//srv//x", ("/srv/x",)),
    ],
)
def test_roots_are_absolute_normalised_and_separated_by_colons(raw: str, roots: tuple[str, ...]) -> None:
    assert local_repo_roots({"BGAGENT_LOCAL_REPO_ROOTS": raw}) == roots


@pytest.mark.parametrize("raw", ["repos", "/srv/repos:./here", "~/code", "file:///srv/repos"])
def test_a_relative_root_is_refused_at_start(raw: str) -> None:
    with pytest.raises(SettingsError, match=r"BGAGENT_LOCAL_REPO_ROOTS: .* is not an absolute path"):
        Settings.from_env({"BGAGENT_API_TOKENS": "a=b", "BGAGENT_LOCAL_REPO_ROOTS": raw})


def test_the_old_boolean_is_refused_with_a_pointer_to_the_roots() -> None:
    env = {"BGAGENT_API_TOKENS": "a=b", "BGAGENT_ALLOW_LOCAL_REPOS": "true"}
    with pytest.raises(SettingsError, match="replaced by BGAGENT_LOCAL_REPO_ROOTS"):
        Settings.from_env(env)
    # "false" asked for what is now the default: nothing to refuse
    env["BGAGENT_ALLOW_LOCAL_REPOS"] = "false"
    assert Settings.from_env(env).local_repo_roots == ()


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"BGAGENT_MANAGED_TOKENS": "false"}, "BGAGENT_API_TOKENS"),
        ({"BGAGENT_API_TOKENS": "broken"}, "BGAGENT_API_TOKENS"),
        ({"BGAGENT_API_TOKENS": "a=b", "BGAGENT_ADMISSION_PORT": "http"}, "BGAGENT_ADMISSION_PORT"),
        ({"BGAGENT_API_TOKENS": "a=b", "BGAGENT_ALLOW_LOCAL_REPOS": "maybe"}, "BGAGENT_ALLOW_LOCAL_REPOS"),
        ({"BGAGENT_API_TOKENS": "a=b", "BGAGENT_LOCAL_REPO_ROOTS": "x"}, "BGAGENT_LOCAL_REPO_ROOTS"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        Settings.from_env(env)
