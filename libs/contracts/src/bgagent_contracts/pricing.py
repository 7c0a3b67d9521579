"""Dollar cost of model usage (list prices per million tokens)."""

from __future__ import annotations

import msgspec


class Price(msgspec.Struct, frozen=True):
    input: float
    output: float
    cache_write: float
    cache_read: float


# USD per million tokens; matched by model-name prefix, longest first.
_PRICES: dict[str, Price] = {
    "claude-opus-4": Price(15.0, 75.0, 18.75, 1.50),
    "claude-sonnet-4": Price(3.0, 15.0, 3.75, 0.30),
    "claude-3-7-sonnet": Price(3.0, 15.0, 3.75, 0.30),
    "claude-3-5-haiku": Price(0.80, 4.0, 1.0, 0.08),
    "claude-haiku-4": Price(1.0, 5.0, 1.25, 0.10),
}
_DEFAULT = Price(3.0, 15.0, 3.75, 0.30)


def price_for(model: str) -> Price:
    """The price row of a model; unknown models are charged at Sonnet rates."""
    for prefix in sorted(_PRICES, key=len, reverse=True):
        if model.startswith(prefix):
            return _PRICES[prefix]
    return _DEFAULT


def cost_usd(
    model: str,
    *,
    input_tokens: int,
    output_tokens: int,
    cache_write_tokens: int = 0,
    cache_read_tokens: int = 0,
) -> float:
    """Cost in dollars of one model call's usage."""
    p = price_for(model)
    total = (
        input_tokens * p.input
        + output_tokens * p.output
        + cache_write_tokens * p.cache_write
        + cache_read_tokens * p.cache_read
    )
    return total / 1_000_000
