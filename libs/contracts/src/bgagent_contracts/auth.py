"""Bearer tokens from configuration: ``token=user[:admin]`` pairs, kept only as hashes."""

from __future__ import annotations

import hashlib
import hmac

import msgspec


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    admin: bool = False

    def may_see(self, owner: str) -> bool:
        """Users act on their own tasks; admins on all."""
        return self.admin or self.user_id == owner


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal for an ``Authorization: Bearer <token>`` header, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        digest = _digest(token.strip())
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return principal
        return None
