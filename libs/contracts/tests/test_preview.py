"""Previews and secret redaction."""

from __future__ import annotations

import pytest

from bgagent_contracts.preview import (
    DEFAULT_PREVIEW_CHARS,
    TRACE_PREVIEW_CHARS,
    preview,
    preview_limit,
    redact,
)

GH_CLASSIC = "ghp_" + "A1b2C3d4E5" * 4  # 40 chars
GH_FINE = "github_pat_11ABCDEFG0" + "x" * 40
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----"
)


@pytest.mark.parametrize("length", [199, 200])
def test_text_up_to_the_limit_is_unchanged(length: int) -> None:
    text = "a" * length
    assert preview(text) == text


def test_text_over_the_limit_is_cut_with_an_ellipsis() -> None:
    text = "a" * 200 + "b"
    assert preview(text) == "a" * 200 + "..."


def test_preview_limits_per_task() -> None:
    assert preview_limit(trace=False) == DEFAULT_PREVIEW_CHARS == 200
    assert preview_limit(trace=True) == TRACE_PREVIEW_CHARS == 4096
    assert preview("x" * 5000, limit=TRACE_PREVIEW_CHARS) == "x" * 4096 + "..."


@pytest.mark.parametrize("token", [GH_CLASSIC, "ghs_" + "Z" * 36, "gho_" + "9" * 30, GH_FINE])
def test_github_tokens_are_redacted(token: str) -> None:
    out = redact(f"export GITHUB_TOKEN={token} && git push")
    assert token not in out
    assert "[REDACTED-GITHUB_TOKEN]" in out
    assert out.startswith("export GITHUB_TOKEN=")
    assert out.endswith(" && git push")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://alice:s3cret@github.com/acme/w.git",
            "https://[REDACTED-URL_CREDENTIALS]@github.com/acme/w.git",
        ),
        ("postgresql://app:pw@db:5432/x", "postgresql://[REDACTED-URL_CREDENTIALS]@db:5432/x"),
    ],
)
def test_credentials_in_urls_are_redacted(url: str, expected: str) -> None:
    assert redact(f"cloning {url} now") == f"cloning {expected} now"


def test_a_token_used_as_url_password_does_not_leak() -> None:
    out = redact(f"remote: https://x-access-token:{GH_CLASSIC}@github.com/acme/w")
    assert GH_CLASSIC not in out
    assert "x-access-token" not in out


def test_urls_without_credentials_are_kept() -> None:
    text = "see https://github.com/acme/w/pull/3 and mailto:a@b.c"
    assert redact(text) == text


def test_pem_private_keys_are_redacted_whole() -> None:
    out = redact(f"key:\n{PEM}\nafter")
    assert out == "key:\n[REDACTED-PRIVATE_KEY]\nafter"


def test_a_truncated_pem_key_is_redacted_to_the_end() -> None:
    cut = PEM[:90]
    out = redact(f"head {cut}")
    assert out == "head [REDACTED-PRIVATE_KEY]"


@pytest.mark.parametrize(
    ("secret", "label"),
    [
        ("sk-ant-api03-" + "k" * 40, "ANTHROPIC_KEY"),
        ("AKIAIOSFODNN7EXAMPLE", "AWS_ACCESS_KEY"),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.payload.signature", "JWT"),
        ("Bearer abc123xyz", "BEARER"),
    ],
)
def test_other_known_secret_shapes_are_redacted(secret: str, label: str) -> None:
    out = redact(f"value: {secret};")
    assert secret not in out
    assert f"[REDACTED-{label}]" in out


def test_exact_secrets_given_are_redacted_and_short_ones_ignored() -> None:
    out = redact("db password hunter22 and pin 123", extra_secrets=("hunter22", "123", ""))
    assert out == "db password [REDACTED-SECRET] and pin 123"


def test_redaction_happens_before_the_cut() -> None:
    text = "x" * 190 + GH_CLASSIC
    out = preview(text)
    assert out == "x" * 190 + "[REDACTED-"[:10] + "..."
    assert "ghp_" not in out


@pytest.mark.parametrize("template", ["TOKEN_{t}", "{t}_old", "x{t}", "path/to/{t}.txt"])
def test_github_tokens_glued_to_identifiers_are_redacted(template: str) -> None:
    out = redact(template.format(t=GH_CLASSIC))
    assert GH_CLASSIC not in out
    assert "A1b2C3d4E5" not in out
    assert "[REDACTED-GITHUB_TOKEN]" in out
