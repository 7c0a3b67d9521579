"""The nats-server authorization config, generated from the writer table.

One user per service (``admission``, ``runner``, ``query``, ``fanout``, ``reconciler``; rights from
``bgagent_contracts.writers.ACCESS``), a read-only ``operator`` (``bgagent watch``, ``nats stream
view``) and ``admin`` (``bgagent admin init|rebuild|poison|token``, break-glass; the only writer
of the managed API tokens). A service may publish only the task subjects of the event types it
writes and only the JetStream API calls it makes; nobody connects without a password
(``no_auth_user`` is never set).

``write_auth_dir`` keeps everything in one folder, each file 0600 in a 0700 folder:
``nats-auth.conf`` (the ``authorization`` block with bcrypt hashes, for nats-server ``-c`` or
``include``) and ``<user>.password`` (the plain password, for ``NATS_PASSWORD_FILE``).
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import msgspec

from bgagent_contracts.subjects import advisory_stream, reconciler_consumer
from bgagent_contracts.writers import ACCESS, Durable, Role

from .connect import inbox_prefix
from .settings import NatsAuth

OPERATOR = "operator"
ADMIN = "admin"
SERVICE_USERS: tuple[str, ...] = tuple(role.value for role in Role)
USERS: tuple[str, ...] = (*SERVICE_USERS, OPERATOR, ADMIN)
CONFIG_FILE = "nats-auth.conf"
BCRYPT_COST = 10
"""Work factor of the hashes in the config. The passwords are 256-bit random tokens, so stretching
adds nothing against guessing; the hash only keeps a leaked config from being a list of passwords.
Each connect costs the server one bcrypt check (~70 ms at 10, twice that at nats' default 11)."""


class Permissions(msgspec.Struct, frozen=True, kw_only=True):
    """One user's subject permissions (deny wins over allow; anything not allowed is refused)."""

    publish: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    subscribe: tuple[str, ...]


def _inbox(user: str) -> str:
    """The user's own reply subjects (bgagent's ``connect()`` sets the inbox prefix; for the ``nats``
    CLI pass ``--inbox-prefix _INBOX_<user>``)."""
    return f"{inbox_prefix(user)}.>"


def _stream_read(stream: str) -> list[str]:
    """Stream info and batched direct get: how every bgagent process reads a task's log."""
    return [f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.DIRECT.GET.{stream}"]


def _durable(stream: str, name: str) -> list[str]:
    """Pull from and ack one durable consumer (ack subjects in the v1 and the 2.14+ v2 layout)."""
    return [
        f"$JS.API.CONSUMER.INFO.{stream}.{name}",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}",
        f"$JS.ACK.{stream}.{name}.>",
        f"$JS.ACK.*.*.{stream}.{name}.>",
    ]


def _ordered(stream: str) -> list[str]:
    """Ordered consumers (``follow()``): named ephemeral push consumers and their flow-control replies.

    Only the named form, whose name is in the subject: the unnamed ``$JS.API.CONSUMER.CREATE.<stream>``
    takes the name from the request body, so it could update a durable consumer (the runner's filter,
    say) whatever the deny list says. ``_durables_denied`` keeps the named form off the durables.
    """
    return [
        f"$JS.API.CONSUMER.CREATE.{stream}.*",
        f"$JS.API.CONSUMER.CREATE.{stream}.*.>",
        f"$JS.FC.{stream}.>",
    ]


def _durables_denied(stream: str, prefix: str) -> list[str]:
    """No reader may create (= update), delete or pull from the services' durable consumers."""
    deny = []
    for durable in Durable:
        name = durable.consumer_name(prefix)
        deny += [
            f"$JS.API.CONSUMER.CREATE.{stream}.{name}",
            f"$JS.API.CONSUMER.CREATE.{stream}.{name}.>",
            f"$JS.API.CONSUMER.DELETE.{stream}.{name}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}",
        ]
    return deny


def _kv(bucket: str, key_prefix: str | None = None) -> list[str]:
    """A KV bucket: read and write every key, or (``key_prefix``) only write keys under it."""
    if key_prefix is not None:
        return [f"$JS.API.STREAM.INFO.KV_{bucket}", f"$KV.{bucket}.{key_prefix}.>"]
    return [
        f"$JS.API.STREAM.INFO.KV_{bucket}",
        f"$JS.API.DIRECT.GET.KV_{bucket}.>",
        f"$JS.API.STREAM.MSG.GET.KV_{bucket}",
        f"$KV.{bucket}.>",
    ]


def _kv_read(bucket: str) -> list[str]:
    """Read and watch a KV bucket, never write it: get, and ordered consumers on the bucket's stream
    (``kv.watchall()`` creates them unnamed; the KV stream has no durable consumer to protect)."""
    stream = f"KV_{bucket}"
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.*",
        f"$JS.API.CONSUMER.DELETE.{stream}.*",
        f"$JS.FC.{stream}.>",
    ]


def _object_store(bucket: str) -> list[str]:
    """Put objects in an object store (a replaced object's old chunks are purged)."""
    return [
        f"$JS.API.STREAM.INFO.OBJ_{bucket}",
        f"$JS.API.STREAM.MSG.GET.OBJ_{bucket}",
        f"$JS.API.DIRECT.GET.OBJ_{bucket}.>",
        f"$JS.API.STREAM.PURGE.OBJ_{bucket}",
        f"$O.{bucket}.>",
    ]


def _task_subjects(prefix: str, event_types: Iterable[str]) -> list[str]:
    return [f"{prefix}.task.*.{t}" for t in sorted(event_types)]


def service_permissions(role: Role, *, stream: str, prefix: str) -> Permissions:
    """What ``role`` may publish and subscribe to, from its row of the writer table."""
    a = ACCESS[role]
    publish = _task_subjects(prefix, a.appends) + _stream_read(stream)
    if a.durable is not None:
        publish += _durable(stream, a.durable.consumer_name(prefix))
    if a.follows:
        publish += _ordered(stream)
    for durable in sorted(a.inspects):
        publish.append(f"$JS.API.CONSUMER.INFO.{stream}.{durable.consumer_name(prefix)}")
    if a.advisories:
        publish += _durable(advisory_stream(stream), reconciler_consumer(prefix))
    for bucket in sorted(a.kv):
        publish += _kv(bucket.bucket_name(prefix))
    for bucket in sorted(a.kv_reads):
        publish += _kv_read(bucket.bucket_name(prefix))
    for bucket in sorted(a.kv_own_keys):
        publish += _kv(bucket.bucket_name(prefix), key_prefix=role.value)
    for bucket in sorted(a.object_stores):
        publish += _object_store(bucket.bucket_name(prefix))
    subscribe = [_inbox(role.value), *_task_subjects(prefix, a.listens)]
    deny = _durables_denied(stream, prefix) if a.follows else []
    return Permissions(publish=_unique(publish), publish_deny=tuple(deny), subscribe=_unique(subscribe))


def operator_permissions(*, stream: str, prefix: str) -> Permissions:
    """Read the stream (direct get, message get, ephemeral and ordered consumers, core subscriptions).

    Publishing any task subject is denied, and so is touching the services' durable consumers: a
    fetch from the runner's would steal a delivery (and count towards its redelivery limit).
    """
    publish = [
        *_stream_read(stream),
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        *_ordered(stream),
        f"$JS.API.CONSUMER.INFO.{stream}.*",
        f"$JS.API.CONSUMER.DELETE.{stream}.*",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*",
    ]
    deny = [f"{prefix}.task.>", *_durables_denied(stream, prefix)]
    subscribe = (_inbox(OPERATOR), f"{prefix}.task.>")
    return Permissions(publish=tuple(publish), publish_deny=tuple(deny), subscribe=subscribe)


def admin_permissions() -> Permissions:
    """Everything: provisioning creates streams, consumers and buckets, rebuild replays the stream."""
    return Permissions(publish=(">",), subscribe=(">",))


def permissions_for(user: str, *, stream: str, prefix: str) -> Permissions:
    if user == ADMIN:
        return admin_permissions()
    if user == OPERATOR:
        return operator_permissions(stream=stream, prefix=prefix)
    return service_permissions(Role(user), stream=stream, prefix=prefix)


def _unique(subjects: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(subjects))


def _q(value: str) -> str:
    """A double-quoted config string (``$`` and ``>`` stay literal inside quotes)."""
    return json.dumps(value)


def _list(key: str, values: Iterable[str], indent: str) -> list[str]:
    """``key: [`` one quoted value per line ``]``."""
    items = [_q(v) for v in values]
    return [
        f"{indent}{key}: [",
        *(f"{indent}  {item}," for item in items[:-1]),
        f"{indent}  {items[-1]}",
        f"{indent}]",
    ]


def render_config(password_hashes: Mapping[str, str], *, stream: str, prefix: str) -> str:
    """The ``authorization`` block for ``password_hashes`` (user → bcrypt hash), in nats-server syntax."""
    lines = [
        f"# bgagent NATS users for stream {stream}, subject prefix {prefix}.",
        "# Generated by `bgagent admin nats-config`; regenerate instead of editing. Permissions follow",
        "# the writer table in bgagent_contracts/writers.py (docs/security.md#nats-permissions).",
        "authorization {",
        "  users = [",
    ]
    for user, password_hash in password_hashes.items():
        p = permissions_for(user, stream=stream, prefix=prefix)
        deny = _list("deny", p.publish_deny, " " * 10) if p.publish_deny else []
        lines += [
            "    {",
            f"      user: {_q(user)}",
            f"      password: {_q(password_hash)}",
            "      permissions: {",
            "        publish: {",
            *_list("allow", p.publish, " " * 10),
            *deny,
            "        }",
            "        subscribe: {",
            *_list("allow", p.subscribe, " " * 10),
            "        }",
            "      }",
            "    }",
        ]
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def hash_password(password: str, cost: int = BCRYPT_COST) -> str:
    """A bcrypt hash nats-server accepts in place of a plain password (``$2a$`` form)."""
    import bcrypt  # only the generator needs it

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost, prefix=b"2a")).decode()


def new_password() -> str:
    """256 random bits, URL-safe (no quoting trouble in config files or environments)."""
    return secrets.token_urlsafe(32)


def password_path(directory: str | os.PathLike[str], user: str) -> Path:
    return Path(directory) / f"{user}.password"


def auth_for(directory: str | os.PathLike[str], user: str) -> NatsAuth:
    """How a process connects as ``user`` with the files of ``directory``."""
    return NatsAuth(user=user, password_file=str(password_path(directory, user)))


class AuthDir(msgspec.Struct, frozen=True, kw_only=True):
    """What ``write_auth_dir`` wrote: the config and which users got a new password."""

    directory: str
    config: str
    rotated: tuple[str, ...]
    """Users whose password is new (every user the first time, or with ``rotate``)."""

    def password_file(self, user: str) -> str:
        return str(password_path(self.directory, user))

    def auth(self, user: str) -> NatsAuth:
        return auth_for(self.directory, user)


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with a 0600 file (a reader sees the old or the new content)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_auth_dir(
    directory: str | os.PathLike[str],
    *,
    stream: str,
    prefix: str,
    rotate: bool = False,
) -> AuthDir:
    """Write the config and one password file per user; keep existing passwords unless ``rotate``.

    Idempotent: run again after an upgrade (or a stream/prefix change) to re-render permissions
    with the same passwords, and reload the server. After ``rotate``, restart it instead: bgagent
    processes reconnect reading their new password files, whereas a reload drops each connection
    whose password changed with an authorization error that nats-py treats as final.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    hashes: dict[str, str] = {}
    rotated: list[str] = []
    passwords: dict[str, str] = {}
    for user in USERS:
        path = password_path(root, user)
        existing = None if rotate or not path.exists() else path.read_text(encoding="utf-8").strip()
        if existing:
            passwords[user] = existing
        else:
            passwords[user] = new_password()
            rotated.append(user)
        hashes[user] = hash_password(passwords[user])
    config = root / CONFIG_FILE
    _write_private(config, render_config(hashes, stream=stream, prefix=prefix))
    for user in rotated:
        _write_private(password_path(root, user), passwords[user] + "\n")
    for user in passwords:
        password_path(root, user).chmod(0o600)
    return AuthDir(directory=str(root), config=str(config), rotated=tuple(rotated))
