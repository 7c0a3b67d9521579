"""Bearer tokens: who a presented token is, kept only as SHA-256 digests.

Two sources of tokens, merged by :class:`TokenIndex`:

- static tokens from configuration (``BGAGENT_API_TOKENS``: ``token=user[:admin]`` pairs), for
  bootstrap and tests: :class:`TokenTable`;
- managed tokens (``bgagent admin token create``): ``bga_`` + 43 url-safe random characters + a
  6-character checksum, stored as :class:`TokenRecord` (digest, never the token) in the tokens KV
  bucket and applied to the index as the bucket changes.

Pure: the random bytes come from ``secrets`` unless given; nothing here talks to NATS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import zlib
from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

import msgspec

TOKEN_PREFIX = "bga_"
TOKEN_RANDOM_BYTES = 32
_BODY_CHARS = 43  # base64url of 32 bytes, unpadded
_CHECK_CHARS = 6
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
TOKEN_SHAPE = re.compile(rf"bga_[A-Za-z0-9_-]{{{_BODY_CHARS}}}[A-Za-z0-9]{{{_CHECK_CHARS}}}")
"""A managed token (the redaction rule in ``redact.py`` matches the same shape)."""
_TOKEN_ID = re.compile(r"^[a-f0-9]{12}$")


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    admin: bool = False

    def may_see(self, owner: str) -> bool:
        """Users act on their own tasks; admins on all."""
        return self.admin or self.user_id == owner


class Authenticator(Protocol):
    """What the HTTP services authenticate with (``bgagent_web.principal_dependency``)."""

    def authenticate(self, authorization: str | None) -> Principal | None: ...


def token_digest(token: str) -> str:
    """The SHA-256 hex digest a token is stored and looked up as."""
    return hashlib.sha256(token.encode()).hexdigest()


_digest = token_digest


def _checksum(body: str) -> str:
    value = zlib.crc32(body.encode())
    out = []
    for _ in range(_CHECK_CHARS):
        value, digit = divmod(value, 62)
        out.append(_BASE62[digit])
    return "".join(reversed(out))


def new_token(random: bytes | None = None) -> str:
    """A managed API token: ``bga_`` + base64url of 32 random bytes + a CRC32 checksum (base62)."""
    raw = secrets.token_bytes(TOKEN_RANDOM_BYTES) if random is None else random
    if len(raw) != TOKEN_RANDOM_BYTES:
        raise ValueError(f"a token needs {TOKEN_RANDOM_BYTES} random bytes, got {len(raw)}")
    body = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return f"{TOKEN_PREFIX}{body}{_checksum(body)}"


def is_managed_token(token: str) -> bool:
    """True when ``token`` has the managed shape and its checksum matches (catches typos offline)."""
    if not TOKEN_SHAPE.fullmatch(token):
        return False
    body = token[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + _BODY_CHARS]
    return hmac.compare_digest(token[-_CHECK_CHARS:], _checksum(body))


def new_token_id(random: bytes | None = None) -> str:
    """A short public token id (12 hex digits): safe to print, log and use as a KV key."""
    raw = secrets.token_bytes(6) if random is None else random
    if len(raw) != 6:
        raise ValueError(f"a token id needs 6 random bytes, got {len(raw)}")
    return raw.hex()


def is_token_id(value: str) -> bool:
    return bool(_TOKEN_ID.match(value))


class TokenRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One managed token as stored in the tokens bucket (key: ``token_id``). Never the token itself."""

    token_id: str
    digest: str
    """SHA-256 hex of the token."""
    user_id: str
    admin: bool = False
    name: str = ""
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def principal(self) -> Principal:
        return Principal(user_id=self.user_id, admin=self.admin)

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict[str, object]:
        """What ``admin token list`` shows: everything but the digest."""
        return {
            "token_id": self.token_id,
            "user_id": self.user_id,
            "admin": self.admin,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def issue_token(
    user_id: str,
    *,
    admin: bool = False,
    name: str = "",
    now: datetime,
    random: bytes | None = None,
    token_id: str | None = None,
    token: str | None = None,
) -> tuple[str, TokenRecord]:
    """A new token and the record to store for it (the token is shown once, then only its digest exists).

    ``token``: register a secret made earlier with :func:`new_token` instead of making one here (the
    dev stack knows its token before NATS runs).
    """
    if not user_id.strip() or len(user_id) > 200:
        raise ValueError("a token needs a user id of 1 to 200 characters")
    if len(name) > 200:
        raise ValueError("a token name has at most 200 characters")
    if token is not None and not is_managed_token(token):
        raise ValueError("not a managed token: make it with bgagent_contracts.auth.new_token")
    token = new_token(random) if token is None else token
    record = TokenRecord(
        token_id=token_id or new_token_id(),
        digest=token_digest(token),
        user_id=user_id.strip(),
        admin=admin,
        name=name,
        created_at=now,
    )
    return token, record


def _bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class TokenTable:
    """Maps a presented bearer token to its principal; tokens are stored as SHA-256 digests."""

    def __init__(self, entries: dict[str, Principal]) -> None:
        self._by_digest = {_digest(token): principal for token, principal in entries.items()}

    @classmethod
    def parse(cls, spec: str) -> TokenTable:
        """Parse ``tok1=alice,tok2=bob:admin``; ValueError names the bad entry."""
        entries: dict[str, Principal] = {}
        for raw in spec.split(","):
            item = raw.strip()
            if not item:
                continue
            token, sep, who = item.partition("=")
            user, _, role = who.partition(":")
            if not sep or not token or not user or role not in ("", "admin"):
                raise ValueError(
                    f"bad token entry {item.split('=')[0][:4]}…: expected token=user or token=user:admin"
                )
            entries[token] = Principal(user_id=user, admin=role == "admin")
        return cls(entries)

    def __len__(self) -> int:
        return len(self._by_digest)

    def _lookup(self, digest: str) -> Principal | None:
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return principal
        return None

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal for an ``Authorization: Bearer <token>`` header, or None."""
        token = _bearer(authorization)
        return None if token is None else self._lookup(_digest(token))


class TokenIndex(TokenTable):
    """Static tokens plus the managed tokens of the tokens bucket, kept current by a watcher.

    ``apply`` a record as it is stored (a revoked one stops authenticating at once), ``forget``
    a deleted key. Managed tokens are looked up by digest in a dict: the key is a SHA-256 of the
    presented token, so lookup timing tells an attacker nothing about any stored token.
    """

    def __init__(self, static: TokenTable | None = None) -> None:
        super().__init__({})
        if static is not None:
            self._by_digest = dict(static._by_digest)
        self._records: dict[str, TokenRecord] = {}
        self._active: dict[str, Principal] = {}

    @property
    def static_count(self) -> int:
        return len(self._by_digest)

    @property
    def managed_count(self) -> int:
        """Managed tokens that authenticate (not revoked)."""
        return len(self._active)

    def apply(self, record: TokenRecord) -> None:
        old = self._records.pop(record.token_id, None)
        if old is not None:
            self._active.pop(old.digest, None)
        self._records[record.token_id] = record
        if record.active:
            self._active[record.digest] = record.principal

    def forget(self, token_id: str) -> None:
        old = self._records.pop(token_id, None)
        if old is not None:
            self._active.pop(old.digest, None)

    def replace_all(self, records: Iterable[TokenRecord]) -> None:
        """Make the managed part exactly ``records`` (after a resync of the watch)."""
        self._records.clear()
        self._active.clear()
        for record in records:
            self.apply(record)

    def _lookup(self, digest: str) -> Principal | None:
        return self._active.get(digest) or super()._lookup(digest)
