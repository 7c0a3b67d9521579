"""Model prices and the cost of one call."""

from __future__ import annotations

import pytest

from bgagent_contracts.pricing import cost_usd, price_for

MILLION = 1_000_000


@pytest.mark.parametrize(
    ("model", "input_price", "output_price"),
    [
        ("claude-opus-4-1-20250805", 15.0, 75.0),
        ("claude-sonnet-4-5", 3.0, 15.0),
        ("claude-3-7-sonnet-latest", 3.0, 15.0),
        ("claude-3-5-haiku-20241022", 0.80, 4.0),
        ("claude-haiku-4-5", 1.0, 5.0),
    ],
)
def test_models_are_priced_by_prefix(model: str, input_price: float, output_price: float) -> None:
    assert cost_usd(model, input_tokens=MILLION, output_tokens=0) == pytest.approx(input_price)
    assert cost_usd(model, input_tokens=0, output_tokens=MILLION) == pytest.approx(output_price)


def test_cache_tokens_have_their_own_prices() -> None:
    model = "claude-sonnet-4-20250514"
    assert cost_usd(model, input_tokens=0, output_tokens=0, cache_write_tokens=MILLION) == pytest.approx(3.75)
    assert cost_usd(model, input_tokens=0, output_tokens=0, cache_read_tokens=MILLION) == pytest.approx(0.30)


def test_a_call_adds_every_kind_of_token() -> None:
    cost = cost_usd(
        "claude-sonnet-4",
        input_tokens=1000,
        output_tokens=500,
        cache_write_tokens=2000,
        cache_read_tokens=10_000,
    )
    assert cost == pytest.approx((1000 * 3 + 500 * 15 + 2000 * 3.75 + 10_000 * 0.30) / MILLION)


def test_no_tokens_cost_nothing() -> None:
    assert cost_usd("claude-opus-4", input_tokens=0, output_tokens=0) == 0.0


def test_unknown_models_are_charged_at_sonnet_rates() -> None:
    assert price_for("scripted-model") == price_for("claude-sonnet-4")
