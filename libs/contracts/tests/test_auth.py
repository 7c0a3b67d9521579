"""Bearer tokens from configuration."""

from __future__ import annotations

import pytest

from bgagent_contracts.auth import Principal, TokenTable

SPEC = "tok-alice-123=alice, tok-bob-456=bob:admin,,"


@pytest.fixture
def table() -> TokenTable:
    return TokenTable.parse(SPEC)


def test_parse_maps_tokens_to_principals(table: TokenTable) -> None:
    assert table.authenticate("Bearer tok-alice-123") == Principal(user_id="alice", admin=False)
    assert table.authenticate("Bearer tok-bob-456") == Principal(user_id="bob", admin=True)


@pytest.mark.parametrize("header", ["bearer tok-alice-123", "BEARER tok-alice-123", "Bearer  tok-alice-123 "])
def test_scheme_is_case_insensitive_and_token_trimmed(table: TokenTable, header: str) -> None:
    who = table.authenticate(header)
    assert who is not None
    assert who.user_id == "alice"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "Basic tok-alice-123",
        "tok-alice-123",
        "Bearer tok-alice-12",
        "Bearer nope",
    ],
)
def test_anything_else_is_unauthenticated(table: TokenTable, header: str | None) -> None:
    assert table.authenticate(header) is None


@pytest.mark.parametrize(
    "entry",
    ["secretvalue", "secretvalue=", "=alice", "secretvalue=bob:root", "secretvalue=:admin"],
)
def test_a_bad_entry_is_named_without_leaking_the_token(entry: str) -> None:
    with pytest.raises(ValueError, match="bad token entry") as info:
        TokenTable.parse(f"good=alice,{entry}")
    message = str(info.value)
    assert "expected token=user or token=user:admin" in message
    assert entry.split("=")[0][:4] in message
    assert "secretvalue" not in message


def test_empty_spec_authenticates_nobody() -> None:
    assert TokenTable.parse("").authenticate("Bearer x") is None


def test_tokens_are_kept_only_as_digests(table: TokenTable) -> None:
    assert "tok-alice-123" not in repr(vars(table))


def test_users_see_their_own_tasks_and_admins_all() -> None:
    alice = Principal(user_id="alice")
    admin = Principal(user_id="root", admin=True)
    assert alice.may_see("alice")
    assert not alice.may_see("bob")
    assert admin.may_see("bob")
