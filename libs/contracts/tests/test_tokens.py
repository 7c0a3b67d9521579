"""Managed API tokens: their shape, digest, record and the live index (static + managed)."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

import msgspec
import pytest

from bgagent_contracts.auth import (
    TOKEN_SHAPE,
    Principal,
    TokenIndex,
    TokenRecord,
    TokenTable,
    is_managed_token,
    is_token_id,
    issue_token,
    new_token,
    new_token_id,
    token_digest,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_a_token_is_bga_43_url_safe_random_characters_and_a_checksum() -> None:
    token = new_token(bytes(32))
    assert token.startswith("bga_")
    assert len(token) == 4 + 43 + 6
    assert re.fullmatch(r"bga_[A-Za-z0-9_-]{43}[A-Za-z0-9]{6}", token)
    assert TOKEN_SHAPE.fullmatch(token)
    assert new_token(bytes(32)) == token, "pure: the same random bytes give the same token"
    assert new_token() != new_token()


def test_the_checksum_catches_a_typo() -> None:
    token = new_token(bytes(range(32)))
    assert is_managed_token(token)
    body_typo = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    assert not is_managed_token(body_typo)
    check_typo = token[:-1] + ("0" if token[-1] != "0" else "1")
    assert not is_managed_token(check_typo)
    assert not is_managed_token("bga_short")
    assert not is_managed_token("tok-alice")


def test_random_bytes_of_the_wrong_length_are_refused() -> None:
    with pytest.raises(ValueError, match="32 random bytes"):
        new_token(b"short")
    with pytest.raises(ValueError, match="6 random bytes"):
        new_token_id(b"x")


def test_ids_are_short_public_hex() -> None:
    assert new_token_id(bytes.fromhex("0a1b2c3d4e5f")) == "0a1b2c3d4e5f"
    assert is_token_id(new_token_id())
    for bad in ("", "0A1B2C3D4E5F", "0a1b2c3d4e5", "../etc", "0a1b2c3d4e5f0"):
        assert not is_token_id(bad)


def test_the_record_holds_the_sha256_digest_never_the_token() -> None:
    token, record = issue_token(
        "alice", admin=True, name="ci", now=NOW, random=bytes(32), token_id="00aa11bb22cc"
    )
    assert record.digest == hashlib.sha256(token.encode()).hexdigest() == token_digest(token)
    stored = msgspec.json.encode(record)
    assert token.encode() not in stored
    assert (record.user_id, record.admin, record.name, record.created_at) == ("alice", True, "ci", NOW)
    assert record.active
    assert record.revoked_at is None
    assert msgspec.json.decode(stored, type=TokenRecord) == record
    public = record.public()
    assert set(public) == {"token_id", "user_id", "admin", "name", "created_at", "revoked_at"}
    assert token not in str(public)
    assert record.digest not in str(public)


def test_a_given_token_is_registered_only_when_it_has_the_managed_shape() -> None:
    made = new_token()
    token, record = issue_token("dev", now=NOW, token=made)
    assert token == made
    assert record.digest == token_digest(made)
    with pytest.raises(ValueError, match="not a managed token"):
        issue_token("dev", now=NOW, token="plain-secret")


@pytest.mark.parametrize(("user", "name"), [("", ""), ("  ", ""), ("x" * 201, ""), ("bob", "n" * 201)])
def test_bad_users_and_names_are_refused(user: str, name: str) -> None:
    with pytest.raises(ValueError):
        issue_token(user, name=name, now=NOW)


def _issue(user: str, admin: bool = False) -> tuple[str, TokenRecord]:
    return issue_token(user, admin=admin, now=NOW)


def test_the_index_merges_static_and_managed_tokens_and_forgets_revoked_ones_at_once() -> None:
    index = TokenIndex(TokenTable.parse("static-tok=ops:admin"))
    alice_token, alice = _issue("alice")
    root_token, root = _issue("root", admin=True)
    assert index.authenticate(f"Bearer {alice_token}") is None
    index.apply(alice)
    index.apply(root)
    assert index.authenticate(f"Bearer {alice_token}") == Principal(user_id="alice")
    assert index.authenticate(f"bearer  {root_token} ") == Principal(user_id="root", admin=True)
    assert index.authenticate("Bearer static-tok") == Principal(user_id="ops", admin=True)
    assert (index.static_count, index.managed_count) == (1, 2)

    index.apply(msgspec.structs.replace(alice, revoked_at=NOW))
    assert index.authenticate(f"Bearer {alice_token}") is None
    assert index.authenticate(f"Bearer {root_token}") is not None
    index.forget(root.token_id)
    assert index.authenticate(f"Bearer {root_token}") is None
    index.forget("000000000000")  # unknown: nothing happens
    assert index.authenticate("Bearer static-tok") is not None, "static tokens stay"
    assert index.managed_count == 0


def test_replace_all_makes_the_managed_part_exactly_the_given_records() -> None:
    index = TokenIndex()
    old_token, old = _issue("old")
    new_token_, new = _issue("new")
    index.apply(old)
    index.replace_all([new])
    assert index.authenticate(f"Bearer {old_token}") is None
    assert index.authenticate(f"Bearer {new_token_}") == Principal(user_id="new")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic abc", "Token x"])
def test_the_index_authenticates_nothing_without_a_bearer_token(header: str | None) -> None:
    index = TokenIndex(TokenTable.parse("t=u"))
    _token, record = _issue("alice")
    index.apply(record)
    assert index.authenticate(header) is None


def test_the_index_is_a_token_table_for_the_services_create_app() -> None:
    assert isinstance(TokenIndex(), TokenTable)
