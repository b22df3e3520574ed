"""Coupon discounts on a fee line: exact values, never below zero."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aihub_billing.pricing.discounts import CouponTerms, discount_amount


@pytest.mark.parametrize(
    ("fee", "currency", "terms", "expected"),
    [
        ("29.99", "USD", CouponTerms(percent_off=Decimal(20)), "-5.998"),
        ("29.99", "USD", CouponTerms(percent_off=Decimal(100)), "-29.99"),
        ("29.99", "USD", CouponTerms(percent_off=Decimal("12.5")), "-3.74875"),
        ("29.99", "USD", CouponTerms(amounts_off={"USD": 500}), "-5"),
        ("3.00", "USD", CouponTerms(amounts_off={"USD": 500}), "-3"),
        ("29.99", "EUR", CouponTerms(amounts_off={"USD": 500}), "0"),
        ("3000", "JPY", CouponTerms(amounts_off={"JPY": 500}), "-500"),
        ("0", "USD", CouponTerms(percent_off=Decimal(50)), "0"),
    ],
)
def test_discount_table(fee: str, currency: str, terms: CouponTerms, expected: str) -> None:
    assert discount_amount(Decimal(fee), currency, terms) == Decimal(expected)


def test_terms_are_validated() -> None:
    with pytest.raises(ValueError):
        CouponTerms()
    with pytest.raises(ValueError):
        CouponTerms(percent_off=Decimal(10), amounts_off={"USD": 1})
    with pytest.raises(ValueError):
        CouponTerms(percent_off=Decimal(101))
    with pytest.raises(ValueError):
        CouponTerms(amounts_off={"USD": 0})
    assert CouponTerms(amounts_off={"USD": 1}).applies_to("usd")
    assert not CouponTerms(amounts_off={"USD": 1}).applies_to("EUR")


@given(
    fee=st.decimals(min_value=0, max_value=10**9, places=2),
    percent=st.decimals(min_value="0.01", max_value=100, places=2),
    fixed=st.integers(1, 10**11),
)
def test_a_discount_never_takes_a_fee_below_zero(
    fee: Decimal, percent: Decimal, fixed: int
) -> None:
    for terms in (CouponTerms(percent_off=percent), CouponTerms(amounts_off={"USD": fixed})):
        off = discount_amount(fee, "USD", terms)
        assert off <= 0
        assert fee + off >= 0
