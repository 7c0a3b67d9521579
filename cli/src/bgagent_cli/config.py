"""Where the CLI finds the services: environment first, then the dev stack's state file."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

from bgagent_contracts.subjects import DEFAULT_PREFIX, DEFAULT_STREAM
from bgagent_eventstore import NatsAuth
from bgagent_eventstore.nats_auth import auth_for

from .errors import CliError


def home_dir(env: Mapping[str, str] | None = None) -> Path:
    """BGAGENT_HOME, default ~/.bgagent: CLI state and the dev stack live here."""
    e = os.environ if env is None else env
    return Path(e.get("BGAGENT_HOME") or Path.home() / ".bgagent")


def stack_file(home: Path) -> Path:
    return home / "dev" / "stack.json"


# The CLI's API token lives in one file of its own (mode 0600), never in stack.json: these
# functions are the only place that knows where, so a managed token can replace the dev one here.


def token_file(home: Path) -> Path:
    """``<home>/dev/token``: the token of the stack ``bgagent dev up`` started in ``home``."""
    return home / "dev" / "token"


def read_token(home: Path) -> str | None:
    """The stored API token for ``home``, or None when there is none."""
    try:
        return token_file(home).read_text().strip() or None
    except OSError:
        return None


def write_token(home: Path, token: str) -> Path:
    """Store ``token`` for ``home``, readable by this user only (0600 from the moment it exists)."""
    path = token_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, token.encode() + b"\n")
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def remove_token(home: Path) -> None:
    token_file(home).unlink(missing_ok=True)


def _replicas(raw: str | None) -> int:
    """``BGAGENT_STREAM_REPLICAS`` as a number; 0 when it is not one (the NATS admin commands refuse it)."""
    if raw is None:
        return 1
    return int(raw.strip()) if raw.strip().isdigit() else 0


class CliConfig(msgspec.Struct, frozen=True, kw_only=True):
    api_url: str | None = None
    query_url: str | None = None
    token: str | None = None
    nats_url: str | None = None
    stream: str = DEFAULT_STREAM
    prefix: str = DEFAULT_PREFIX
    database_url: str | None = None
    replicas: int = 1
    """Stream and bucket replicas ``admin init`` provisions (``BGAGENT_STREAM_REPLICAS``, or the dev stack's:
    its node count with ``dev up --cluster N``): never fewer than the deployment's by accident."""
    nats_auth: NatsAuth = NatsAuth()
    """Who NATS commands connect as: ``NATS_USER`` + ``NATS_PASSWORD_FILE`` (or ``NATS_PASSWORD``),
    or ``NATS_CREDS``."""
    nats_auth_dir: str | None = None
    """The dev stack's NATS users folder, used when neither the NATS URL nor the credentials came from the
    environment: ``watch`` connects as ``operator``, ``admin`` commands as ``admin``."""
    nats_auth_error: str | None = None
    """Why the NATS credentials in the environment are unusable (reported by the NATS commands only)."""

    def nats_auth_as(self, user: str) -> NatsAuth:
        """Credentials for a NATS command that runs as ``user`` (``operator`` or ``admin``)."""
        if self.nats_auth_error is not None:
            raise CliError(self.nats_auth_error, hint="see 'NATS users' in docs/operations.md")
        if not self.nats_auth.anonymous or self.nats_auth_dir is None:
            return self.nats_auth
        return auth_for(self.nats_auth_dir, user)

    @classmethod
    def from_client(cls, client: Mapping[str, str]) -> CliConfig:
        """The config for a stack this process started (its ``StackState.client``)."""
        fields = {k: v for k, v in client.items() if k in cls.__struct_fields__}
        return msgspec.convert(fields, cls, strict=False)  # "replicas": "3" (the client map holds strings)

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None) -> CliConfig:
        """Environment variables win; anything unset comes from a running ``bgagent dev up`` stack.

        The stack's ``stack.json`` gives the URLs, stream, prefix and database; the token comes from
        its own file (:func:`read_token`), never from ``stack.json``.
        """
        e = os.environ if env is None else env
        stack: dict[str, str] = {}
        path = stack_file(home_dir(e))
        if path.exists():
            try:
                raw = json.loads(path.read_text())
                stack = {k: str(v) for k, v in raw.get("client", {}).items()}
            except (OSError, ValueError):
                stack = {}

        def pick(env_name: str, key: str) -> str | None:
            return e.get(env_name) or stack.get(key) or None

        nats_auth, nats_auth_error = NatsAuth(), None
        try:
            nats_auth = NatsAuth.from_env(e)
        except ValueError as exc:
            nats_auth_error = str(exc)
        own_nats = not e.get("NATS_URL") and nats_auth.anonymous  # the stack's server, as the stack's users
        return cls(
            api_url=pick("BGAGENT_API_URL", "api_url"),
            query_url=pick("BGAGENT_QUERY_URL", "query_url"),
            token=e.get("BGAGENT_TOKEN") or read_token(home_dir(e)),
            nats_url=pick("NATS_URL", "nats_url"),
            stream=pick("BGAGENT_STREAM", "stream") or DEFAULT_STREAM,
            prefix=pick("BGAGENT_PREFIX", "prefix") or DEFAULT_PREFIX,
            database_url=pick("DATABASE_URL", "database_url"),
            replicas=_replicas(pick("BGAGENT_STREAM_REPLICAS", "replicas")),
            nats_auth=nats_auth,
            nats_auth_dir=stack.get("nats_auth_dir") if own_nats and nats_auth_error is None else None,
            nats_auth_error=nats_auth_error,
        )
