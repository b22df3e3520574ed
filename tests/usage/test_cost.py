"""token_cost and ScaledPrices: exact cost from per-1M-token prices."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aihub_billing.models.types import canonical_decimal
from aihub_billing.usage.cost import ScaledPrices, token_cost


@pytest.mark.parametrize(
    ("tokens", "prices", "expected"),
    [
        ((100, 0, 50), ("0.50", "1.50", None), "0.000125"),
        ((1000, 400, 50), ("2.50", "10.00", "1.25"), "0.0025"),
        # No cached price: cached tokens cost the input price.
        ((1000, 400, 0), ("2.50", "10.00", None), "0.0025"),
        ((1, 0, 0), ("0.000000000001", "0", None), "0.000000000000000001"),
        ((10**12, 0, 10**12), ("999999", "999999", None), "1999998000000"),
        ((0, 0, 0), ("3", "15", "0.3"), "0"),
    ],
)
def test_token_cost(
    tokens: tuple[int, int, int], prices: tuple[str, str, str | None], expected: str
) -> None:
    input_tokens, cached, output = tokens
    cost = token_cost(
        input_tokens=input_tokens,
        cached_input_tokens=cached,
        output_tokens=output,
        input_per_1m=Decimal(prices[0]),
        output_per_1m=Decimal(prices[1]),
        cached_input_per_1m=None if prices[2] is None else Decimal(prices[2]),
    )
    assert cost == Decimal(expected)


def test_cached_tokens_cannot_exceed_input() -> None:
    with pytest.raises(ValueError):
        token_cost(
            input_tokens=1,
            cached_input_tokens=2,
            output_tokens=0,
            input_per_1m=Decimal(1),
            output_per_1m=Decimal(1),
            cached_input_per_1m=None,
        )


prices_12 = st.decimals(min_value=0, max_value=10**6, places=12, allow_nan=False)


@given(
    tokens=st.tuples(st.integers(0, 10**12), st.integers(0, 10**12), st.integers(0, 10**12)),
    prices=st.tuples(prices_12, prices_12, st.none() | prices_12),
)
def test_scaled_prices_equal_token_cost_in_canonical_form(
    tokens: tuple[int, int, int], prices: tuple[Decimal, Decimal, Decimal | None]
) -> None:
    input_tokens, cached, output = max(tokens[0], tokens[1]), min(tokens[0], tokens[1]), tokens[2]
    expected = canonical_decimal(
        token_cost(
            input_tokens=input_tokens,
            cached_input_tokens=cached,
            output_tokens=output,
            input_per_1m=prices[0],
            output_per_1m=prices[1],
            cached_input_per_1m=prices[2],
        )
    )
    got = ScaledPrices(*prices).cost(input_tokens, cached, output)
    assert (got, str(got)) == (expected, str(expected))


@given(
    tokens=st.tuples(st.integers(0, 10**12), st.integers(0, 10**12), st.integers(0, 10**12)),
    prices=st.tuples(prices_12, prices_12, st.none() | prices_12),
)
def test_cost_text_is_the_exact_cost_in_plain_notation(
    tokens: tuple[int, int, int], prices: tuple[Decimal, Decimal, Decimal | None]
) -> None:
    input_tokens, cached, output = max(tokens[0], tokens[1]), min(tokens[0], tokens[1]), tokens[2]
    scaled = ScaledPrices(*prices)
    text = scaled.cost_text(input_tokens, cached, output)
    assert text == format(scaled.cost(input_tokens, cached, output), "f")
    assert Decimal(text) == token_cost(
        input_tokens=input_tokens,
        cached_input_tokens=cached,
        output_tokens=output,
        input_per_1m=prices[0],
        output_per_1m=prices[1],
        cached_input_per_1m=prices[2],
    )


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ((0, 0, 0), "0"),
        ((1, 0, 0), "0.0000025"),  # below 1e-6: str() would say 2.5E-6
        ((400_000, 0, 0), "1"),
        ((1_000_000, 0, 100_000), "3.5"),
        ((10**12, 10**12, 10**12), "11250000"),
    ],
)
def test_cost_text_examples(tokens: tuple[int, int, int], expected: str) -> None:
    scaled = ScaledPrices(Decimal("2.50"), Decimal("10.00"), Decimal("1.25"))
    assert scaled.cost_text(*tokens) == expected


def test_scaled_prices_refuse_what_token_cost_refuses() -> None:
    with pytest.raises(ValueError):
        ScaledPrices(Decimal(1), Decimal(1), None).cost_text(1, 2, 0)
    with pytest.raises(ValueError):
        ScaledPrices(Decimal(1), Decimal(1), None).cost(1, 2, 0)
    with pytest.raises(ValueError):
        ScaledPrices(Decimal(-1), Decimal(1), None)
