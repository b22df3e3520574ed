"""Invariants of the pure line arithmetic (Hypothesis): sums of rounded lines, tax per line,
exact allocation, never a float."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aihub_billing.invoices import calc
from aihub_billing.kit.money import currency_exponent, minor_to_decimal, round_to_minor

START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2026, 2, 1, tzinfo=UTC)
CURRENCIES = st.sampled_from(["USD", "JPY", "KWD", "EUR"])
PRICES = st.decimals(min_value=0, max_value=10_000, places=6, allow_nan=False)
RATES = st.none() | st.decimals(min_value=0, max_value=Decimal("0.999999"), places=6)


@st.composite
def lines(draw: st.DrawFn, currency: str) -> list[calc.DraftLine]:
    out = []
    for _ in range(draw(st.integers(0, 12))):
        # Within the 10^15 minor units a line holds (KWD: 10^8 x 10,000 x 1,000).
        quantity = draw(st.decimals(min_value=-1000, max_value=10**8, places=6))
        price = draw(PRICES)
        out.append(calc.line("adjustment", "x", START, END, quantity, price, currency))
    return out


@settings(max_examples=300, deadline=None)
@given(st.data(), CURRENCIES, RATES)
def test_total_is_the_sum_of_rounded_lines_plus_their_tax(
    data: st.DataObject, currency: str, rate: Decimal | None
) -> None:
    drafts = calc.with_tax(data.draw(lines(currency)), rate, currency)
    figures = calc.totals(drafts)
    assert figures.subtotal_minor == sum(x.amount_minor for x in drafts)
    assert figures.tax_minor == sum(x.tax_minor for x in drafts)
    assert figures.total_minor == figures.subtotal_minor + figures.tax_minor
    for x in drafts:
        # Rounded once from the precise amount; tax rounded once from the rounded line.
        assert x.amount_minor == round_to_minor(x.amount, currency)
        expected_tax = (
            0
            if not rate
            else round_to_minor(minor_to_decimal(x.amount_minor, currency) * rate, currency)
        )
        assert x.tax_minor == expected_tax
        assert x.tax_rate == rate
        for value in (x.quantity, x.unit_price, x.amount, x.tax_rate):
            assert value is None or isinstance(value, Decimal)
        for value in (x.amount_minor, x.tax_minor):
            assert type(value) is int
        # The precise amount is exact (or kept to the 18 stored places).
        assert abs(x.amount - x.quantity * x.unit_price) <= Decimal("0.5e-18")
    assert type(figures.total_minor) is int


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 10**12),
    st.dictionaries(st.text(min_size=1, max_size=8), st.integers(0, 10**9), max_size=12),
)
def test_allocation_sums_exactly_and_follows_the_shares(
    total: int, weights: dict[str, int]
) -> None:
    parts = calc.allocate(total, weights)
    weight_sum = sum(w for w in weights.values() if w > 0)
    if weight_sum == 0:
        assert parts == {}
        return
    assert sum(parts.values()) == total
    for key, part in parts.items():
        exact = Decimal(total) * weights[key] / weight_sum
        assert abs(Decimal(part) - exact) < 1  # each part within one unit of its share


@settings(max_examples=200, deadline=None)
@given(
    calls=st.integers(0, 10**9),
    tokens=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 10**10)),
    included_calls=st.integers(0, 10**6),
    included_tokens=st.integers(0, 10**8),
    per_1k=PRICES,
    per_1m=PRICES,
    currency=CURRENCIES,
)
def test_overage_bills_exactly_what_exceeds_the_allowance(
    calls: int,
    tokens: dict[str, int],
    included_calls: int,
    included_tokens: int,
    per_1k: Decimal,
    per_1m: Decimal,
    currency: str,
) -> None:
    terms = calc.OverageTerms(
        included_calls, included_tokens, None, "bill", "bill", "block", per_1k, per_1m, None
    )
    total_tokens = sum(tokens.values())
    use = calc.PeriodUse(calls, total_tokens, tokens, Decimal(0))
    out = calc.overage_lines(terms, [use], currency, START, END)
    token_lines = [x for x in out if x.kind == "overage_tokens"]
    over_tokens = max(total_tokens - included_tokens, 0)
    if per_1m > 0 and over_tokens > 0:
        # Per-model quantities (in millions) add up to the overage exactly.
        assert sum(x.quantity for x in token_lines) * 1_000_000 == over_tokens
    [call_line] = [x for x in out if x.kind == "overage_calls"] or [None]
    if calls > included_calls and per_1k > 0:
        assert call_line is not None
        assert call_line.quantity * 1000 == calls - included_calls
        assert call_line.amount == (calls - included_calls) * per_1k / 1000
    else:
        assert call_line is None
    assert all(x.amount_minor == round_to_minor(x.amount, currency) for x in out)
    assert currency_exponent(currency) in (0, 2, 3)


@pytest.mark.parametrize(
    ("quantity", "unit_price", "currency", "amount_minor"),
    [
        # 0.004999999999999999995 USD exactly: 0 cents. Rounded to the 18 stored places
        # first, it would become 0.005 and then 1 cent.
        (Decimal("0.001"), Decimal("4.999999999999999995"), "USD", 0),
        (Decimal("0.001"), Decimal("5"), "USD", 1),
        (Decimal("0.001"), Decimal("499.999999999999999995"), "JPY", 0),
    ],
)
def test_a_line_is_rounded_once_from_the_exact_product(
    quantity: Decimal, unit_price: Decimal, currency: str, amount_minor: int
) -> None:
    drafted = calc.line("overage_calls", "x", START, END, quantity, unit_price, currency)
    assert drafted.amount_minor == amount_minor
    # The stored amount keeps the 18 places of its column.
    assert -int(drafted.amount.as_tuple().exponent) <= calc.PLACES
