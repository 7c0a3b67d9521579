"""The generated NATS authorization config and credential settings, without a server.

``test_nats_auth.py`` runs the same config on a real nats-server.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import bcrypt
import pytest

from bgagent_contracts import EVENT_TYPE_NAMES
from bgagent_contracts.writers import WRITERS, Role
from bgagent_eventstore import NatsAuth, NatsAuthError, NatsSettings, connect
from bgagent_eventstore.nats_auth import (
    ADMIN,
    CONFIG_FILE,
    OPERATOR,
    USERS,
    permissions_for,
    render_config,
    write_auth_dir,
)

TASK = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, ``>`` one or more at the end."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def may_publish(user: str, subject: str) -> bool:
    perms = permissions_for(user, stream="S", prefix="p")
    allowed = any(matches(a, subject) for a in perms.publish)
    return allowed and not any(matches(d, subject) for d in perms.publish_deny)


def test_matches_follows_nats_wildcards() -> None:
    assert matches("a.*.c", "a.b.c")
    assert not matches("a.*.c", "a.b.b.c")
    assert matches("a.>", "a.b.c")
    assert not matches("a.>", "a")
    assert not matches("a.b", "a.b.c")


@pytest.mark.parametrize("role", list(Role))
def test_each_service_may_publish_exactly_the_task_subjects_of_its_writer_row(role: Role) -> None:
    subject = f"p.task.{TASK}.{{}}"
    may = {t for t in EVENT_TYPE_NAMES if may_publish(role.value, subject.format(t))}
    assert may == WRITERS[role]
    assert not may_publish(role.value, subject.format("anything_else"))


def test_the_operator_may_publish_no_task_subject_and_admin_may_publish_all() -> None:
    subjects = [f"p.task.{TASK}.{t}" for t in EVENT_TYPE_NAMES]
    assert [s for s in subjects if may_publish(OPERATOR, s)] == []
    assert all(may_publish(ADMIN, s) for s in subjects)
    # nor take work from, reconfigure or delete a service's durable consumer
    for name in ("p_runner", "p_fanout"):
        for api in ("MSG.NEXT", "DELETE", "CREATE"):
            assert not may_publish(OPERATOR, f"$JS.API.CONSUMER.{api}.S.{name}")
        assert not may_publish(OPERATOR, f"$JS.API.CONSUMER.CREATE.S.{name}.p.task.*.*")
    # its own ordered consumers, named in the subject; never the unnamed form, whose name is in the body
    assert may_publish(OPERATOR, "$JS.API.CONSUMER.CREATE.S.follow_1a2b.p.task.*.*")
    assert not may_publish(OPERATOR, "$JS.API.CONSUMER.CREATE.S")


@pytest.mark.parametrize("user", ["query", OPERATOR])
def test_readers_may_not_create_an_unnamed_consumer_nor_touch_the_durables(user: str) -> None:
    assert may_publish(user, "$JS.API.CONSUMER.CREATE.S.follow_1a2b.p.task.01ARZ.*")
    assert not may_publish(user, "$JS.API.CONSUMER.CREATE.S")
    for name in ("p_runner", "p_fanout"):
        assert not may_publish(user, f"$JS.API.CONSUMER.CREATE.S.{name}")
        assert not may_publish(user, f"$JS.API.CONSUMER.CREATE.S.{name}.p.task.*.task_submitted")
        assert not may_publish(user, f"$JS.API.CONSUMER.MSG.NEXT.S.{name}")


def test_no_service_may_touch_another_stream_or_provision() -> None:
    for user in (*[r.value for r in Role], OPERATOR):
        for subject in (
            "$JS.API.STREAM.CREATE.S",
            "$JS.API.STREAM.DELETE.S",
            "$JS.API.STREAM.PURGE.S",
            "$JS.API.STREAM.INFO.OTHER",
            "$JS.API.DIRECT.GET.OTHER",
            "$JS.API.CONSUMER.DURABLE.CREATE.S.p_runner",
            f"other.task.{TASK}.task_submitted",
        ):
            assert not may_publish(user, subject), (user, subject)


def test_rendered_config_has_every_user_with_a_hash_and_no_anonymous_user() -> None:
    text = render_config({u: f"$2a$10$hash-of-{u}" for u in USERS}, stream="S", prefix="p")
    assert re.findall(r'user: "([^"]+)"', text) == list(USERS)
    assert "no_auth_user" not in text
    assert '"p.task.*.task_submitted"' in text  # subjects and hashes are quoted ($ is literal in quotes)
    assert '"$2a$10$hash-of-runner"' in text


def test_write_auth_dir_keeps_secrets_private_and_passwords_across_runs(tmp_path: Path) -> None:
    first = write_auth_dir(tmp_path / "auth", stream="S", prefix="p")
    assert sorted(first.rotated) == sorted(USERS)
    root = Path(first.directory)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    files = sorted(p.name for p in root.iterdir())
    assert files == sorted([CONFIG_FILE, *(f"{u}.password" for u in USERS)])
    assert {stat.S_IMODE(p.stat().st_mode) for p in root.iterdir()} == {0o600}
    config = Path(first.config).read_text()
    passwords = {u: Path(first.password_file(u)).read_text().strip() for u in USERS}
    for user, password in passwords.items():
        assert len(password) >= 43
        assert password not in config
        hashed = re.search(rf'user: "{user}"\n\s+password: "([^"]+)"', config)
        assert hashed is not None
        assert bcrypt.checkpw(password.encode(), hashed.group(1).encode())

    again = write_auth_dir(tmp_path / "auth", stream="S", prefix="p")
    assert again.rotated == ()
    assert {u: Path(again.password_file(u)).read_text().strip() for u in USERS} == passwords

    rotated = write_auth_dir(tmp_path / "auth", stream="S", prefix="p", rotate=True)
    assert sorted(rotated.rotated) == sorted(USERS)
    assert all(Path(rotated.password_file(u)).read_text().strip() != passwords[u] for u in USERS)
    assert {stat.S_IMODE(p.stat().st_mode) for p in root.iterdir()} == {0o600}


def test_auth_settings_come_from_the_environment_and_never_show_the_password() -> None:
    s = NatsSettings.from_env({"NATS_USER": "runner", "NATS_PASSWORD_FILE": "/run/secrets/runner"})
    assert s.auth == NatsAuth(user="runner", password_file="/run/secrets/runner")
    inline = NatsSettings.from_env({"NATS_USER": "runner", "NATS_PASSWORD": "s3cret-value"})
    assert "s3cret-value" not in repr(inline)
    assert "s3cret-value" not in str(inline)
    assert NatsSettings.from_env({"NATS_CREDS": "/x.creds"}).auth.creds_file == "/x.creds"
    assert NatsSettings.from_env({}).auth.anonymous


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NATS_USER": "runner"}, "needs NATS_PASSWORD_FILE"),
        ({"NATS_PASSWORD_FILE": "/p"}, "without NATS_USER"),
        ({"NATS_USER": "u", "NATS_PASSWORD_FILE": "/p", "NATS_PASSWORD": "x"}, "both set"),
        ({"NATS_CREDS": "/c", "NATS_USER": "u", "NATS_PASSWORD": "x"}, "own identity"),
        ({"NATS_URL": "nats://runner:pw@nats:4222"}, "must not carry credentials"),
    ],
)
def test_inconsistent_auth_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NatsSettings.from_env(env)


async def test_an_unreadable_password_file_fails_before_connecting(tmp_path: Path) -> None:
    auth = NatsAuth(user="runner", password_file=str(tmp_path / "missing"))
    with pytest.raises(NatsAuthError, match="cannot read the NATS password of user 'runner'"):
        await connect("nats://127.0.0.1:1", name="pytest", auth=auth)


def test_a_service_acks_only_its_own_durable_in_both_ack_subject_layouts() -> None:
    v1 = "$JS.ACK.S.p_runner.1.5.5.1700000000000000000.0"
    v2 = "$JS.ACK._.AccountHash.S.p_runner.1.5.5.1700000000000000000.0.token"
    assert may_publish("runner", v1)
    assert may_publish("runner", v2)
    assert not may_publish("fanout", v1)
    assert not may_publish("fanout", v2)
    assert not may_publish("runner", v2.replace("p_runner", "p_fanout"))
    assert not may_publish(OPERATOR, v1)
    assert not may_publish("query", v2)


async def test_a_creds_file_without_the_nkeys_package_fails_with_what_to_install() -> None:
    import importlib.util

    if importlib.util.find_spec("nkeys") is not None:
        pytest.skip("nkeys is installed here")
    with pytest.raises(NatsAuthError, match=r"nats-py\[nkeys\]"):
        await connect("nats://127.0.0.1:1", name="pytest", auth=NatsAuth(creds_file="/etc/x.creds"))


def test_admission_and_query_may_read_and_watch_the_tokens_bucket_but_never_write_it() -> None:
    for user in ("admission", "query"):
        assert may_publish(user, "$JS.API.STREAM.INFO.KV_p_tokens")
        assert may_publish(user, "$JS.API.DIRECT.GET.KV_p_tokens.$KV.p_tokens.0a1b2c3d4e5f")
        assert may_publish(user, "$JS.API.CONSUMER.CREATE.KV_p_tokens")  # kv.watchall(): unnamed, ordered
        assert may_publish(user, "$JS.API.CONSUMER.INFO.KV_p_tokens.abc")
        assert may_publish(user, "$JS.FC.KV_p_tokens.x.y")
        for write in (
            "$KV.p_tokens.0a1b2c3d4e5f",
            "$JS.API.STREAM.PURGE.KV_p_tokens",
            "$JS.API.STREAM.DELETE.KV_p_tokens",
            "$JS.API.STREAM.MSG.DELETE.KV_p_tokens",
        ):
            assert not may_publish(user, write), (user, write)
    for user in ("runner", "fanout", OPERATOR):
        assert not may_publish(user, "$JS.API.DIRECT.GET.KV_p_tokens.$KV.p_tokens.0a1b2c3d4e5f"), user
        assert not may_publish(user, "$KV.p_tokens.0a1b2c3d4e5f"), user
    assert may_publish(ADMIN, "$KV.p_tokens.0a1b2c3d4e5f")
