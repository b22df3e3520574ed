"""Proration by the second over anchor-based periods: exact table cases and a property."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aihub_billing.kit.money import currency_exponent, minor_to_decimal, round_to_minor
from aihub_billing.kit.periods import Interval, Period, nth_period
from aihub_billing.pricing.discounts import CouponTerms, discount_amount
from aihub_billing.pricing.proration import fraction_remaining, prorate


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


MONTHLY = Interval.monthly()
YEARLY = Interval.yearly()

# (case, old minor, new minor, currency, period, change instant, new period or None,
#  credit exact, credit minor, charge exact, charge minor)
CASES = [
    (
        "Jan 31 anchor: period [Jan 31, Feb 28) 2026, change Feb 14 (14 of 28 days)",
        2999,
        9999,
        "USD",
        nth_period(utc(2026, 1, 31), MONTHLY, 0),
        utc(2026, 2, 14),
        None,
        "-14.995",
        -1500,
        "49.995",
        5000,
    ),
    (
        "leap year: period [Jan 31, Feb 29) 2028, change Feb 15 (14 of 29 days)",
        2999,
        9999,
        "USD",
        nth_period(utc(2028, 1, 31), MONTHLY, 0),
        utc(2028, 2, 15),
        None,
        "-14.477931034482758621",
        -1448,
        "48.27103448275862069",
        4827,
    ),
    (
        "Jan 31 anchor, next period [Feb 28, Mar 31), change Mar 15 (16 of 31 days)",
        2999,
        9999,
        "USD",
        nth_period(utc(2026, 1, 31), MONTHLY, 1),
        utc(2026, 3, 15),
        None,
        "-15.478709677419354839",
        -1548,
        "51.607741935483870968",
        5161,
    ),
    (
        "upgrade on the last day of the period, 12:00 (12 h of 28 days)",
        2999,
        9999,
        "USD",
        nth_period(utc(2026, 1, 31), MONTHLY, 0),
        utc(2026, 2, 27, 12),
        None,
        "-0.535535714285714286",
        -54,
        "1.785535714285714286",
        179,
    ),
    (
        "upgrade in the last second of the period",
        2999,
        9999,
        "USD",
        nth_period(utc(2026, 1, 31), MONTHLY, 0),
        utc(2026, 2, 27, 23, 59, 59),
        None,
        "-0.00001239666005291",
        0,
        "0.000041331845238095",
        0,
    ),
    (
        "monthly -> yearly on Feb 14: credit half a month, a new year starts at the change",
        2999,
        29990,
        "USD",
        nth_period(utc(2026, 1, 31), MONTHLY, 0),
        utc(2026, 2, 14),
        Period(utc(2026, 2, 14), utc(2027, 2, 14)),
        "-14.995",
        -1500,
        "299.9",
        29990,
    ),
    (
        "yearly -> monthly immediately on Jul 31 (184 of 365 days left)",
        29990,
        2999,
        "USD",
        nth_period(utc(2026, 1, 31), YEARLY, 0),
        utc(2026, 7, 31),
        Period(utc(2026, 7, 31), utc(2026, 8, 31)),
        "-151.182465753424657534",
        -15118,
        "29.99",
        2999,
    ),
    (
        "JPY (no minor digits), change Feb 10 08:00",
        3000,
        9800,
        "JPY",
        nth_period(utc(2026, 1, 31), MONTHLY, 0),
        utc(2026, 2, 10, 8),
        None,
        "-1892.857142857142857143",
        -1893,
        "6183.333333333333333333",
        6183,
    ),
    (
        "KWD (3 minor digits), leap February, change Feb 20",
        15250,
        30500,
        "KWD",
        nth_period(utc(2028, 1, 31), MONTHLY, 0),
        utc(2028, 2, 20),
        None,
        "-4.732758620689655172",
        -4733,
        "9.465517241379310345",
        9466,
    ),
]


@pytest.mark.parametrize(
    (
        "old",
        "new",
        "currency",
        "period",
        "at",
        "new_period",
        "credit",
        "credit_minor",
        "charge",
        "charge_minor",
    ),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_proration_cases(
    old: int,
    new: int,
    currency: str,
    period: Period,
    at: datetime,
    new_period: Period | None,
    credit: str,
    credit_minor: int,
    charge: str,
    charge_minor: int,
) -> None:
    result = prorate(
        old_amount_minor=old,
        new_amount_minor=new,
        currency=currency,
        period=period,
        at=at,
        new_period=new_period,
    )
    credit_line, charge_line = result.lines
    assert (credit_line.kind, charge_line.kind) == ("proration_credit", "proration_charge")
    assert result.credit == credit_line.amount == Decimal(credit)
    assert result.charge == charge_line.amount == Decimal(charge)
    assert (credit_line.amount_minor, charge_line.amount_minor) == (credit_minor, charge_minor)
    assert result.net_minor == credit_minor + charge_minor
    assert credit_line.period_start == at == charge_line.period_start
    assert credit_line.period_end == period.end
    assert charge_line.period_end == (new_period or period).end


def test_periods_follow_the_anchor_over_month_ends() -> None:
    anchor = utc(2026, 1, 31)
    assert nth_period(anchor, MONTHLY, 0) == Period(utc(2026, 1, 31), utc(2026, 2, 28))
    assert nth_period(anchor, MONTHLY, 1) == Period(utc(2026, 2, 28), utc(2026, 3, 31))
    leap = utc(2028, 1, 31)
    assert nth_period(leap, MONTHLY, 0).end == utc(2028, 2, 29)
    assert fraction_remaining(nth_period(leap, MONTHLY, 0), utc(2028, 2, 15)) == (
        14 * 86400,
        29 * 86400,
    )


def test_a_change_outside_the_period_is_refused() -> None:
    period = nth_period(utc(2026, 1, 31), MONTHLY, 0)
    with pytest.raises(ValueError):
        prorate(
            old_amount_minor=1, new_amount_minor=2, currency="USD", period=period, at=period.end
        )


def test_the_change_instant_counts_by_the_whole_second() -> None:
    period = nth_period(utc(2026, 1, 31), MONTHLY, 0)
    at = utc(2026, 2, 14) + timedelta(microseconds=999_999)
    # A started second is not credited: 14 days minus one second remain.
    assert fraction_remaining(period, at) == (14 * 86400 - 1, 28 * 86400)


def _half_up(value: Fraction) -> int:
    magnitude = math.floor(abs(value) + Fraction(1, 2))
    return magnitude if value >= 0 else -magnitude


intervals = st.one_of(
    st.just(MONTHLY),
    st.just(YEARLY),
    st.builds(Interval, st.just("month"), st.integers(1, 24)),
    st.builds(Interval, st.just("day"), st.integers(1, 400)),
)


@given(
    old=st.integers(0, 10**9),
    new=st.integers(0, 10**9),
    currency=st.sampled_from(["USD", "JPY", "KWD", "EUR"]),
    anchor=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
    ).map(lambda d: d.replace(microsecond=0)),
    interval=intervals,
    n=st.integers(0, 40),
    offset=st.floats(0, 1, exclude_max=True),
)
def test_credit_plus_charge_is_the_exact_prorated_difference(
    old: int,
    new: int,
    currency: str,
    anchor: datetime,
    interval: Interval,
    n: int,
    offset: float,
) -> None:
    """ "Exact" is the rational (new - old) x remaining / total seconds, in minor units.

    Each line is the rational value rounded once half-up to minor units; so the two rounded
    lines sum to the exact difference to within one minor unit (each rounding is off by at
    most half a unit), and when old == new they cancel exactly. The unrounded Decimals sum to
    the exact difference within 1e-17 (two quantizations to 18 places).
    """
    period = nth_period(anchor, interval, n)
    at = period.start + timedelta(seconds=int(period.seconds * offset))
    result = prorate(
        old_amount_minor=old, new_amount_minor=new, currency=currency, period=period, at=at
    )
    remaining, total = fraction_remaining(period, at)
    ratio = Fraction(remaining, total)
    exact_credit = -Fraction(old) * ratio  # in minor units
    exact_charge = Fraction(new) * ratio
    credit_line, charge_line = result.lines
    assert credit_line.amount_minor == _half_up(exact_credit)
    assert charge_line.amount_minor == _half_up(exact_charge)
    exact_difference = exact_charge + exact_credit
    assert abs(result.net_minor - exact_difference) < 2
    if old == new:
        assert result.net_minor == 0
    scale = Fraction(10) ** currency_exponent(currency)
    unrounded = Fraction(result.credit + result.charge) * scale
    assert abs(unrounded - exact_difference) <= Fraction(2, 10**18) * scale


def test_a_50_percent_coupon_halves_both_sides_of_an_upgrade() -> None:
    """Pro 29.99 billed with 15.00 off (50%, rounded), upgrade to 99.99 with 14 of 28 days left."""
    result = prorate(
        old_amount_minor=2999,
        old_discount_minor=-1500,
        new_amount_minor=9999,
        new_discount=Decimal("-49.995"),
        currency="USD",
        period=nth_period(utc(2026, 1, 31), MONTHLY, 0),
        at=utc(2026, 2, 14),
        old_coupon_label="Coupon HALF",
        new_coupon_label="Coupon HALF",
    )
    assert [(ln.kind, ln.amount, ln.amount_minor) for ln in result.lines] == [
        ("proration_credit", Decimal("-14.995"), -1500),
        ("discount", Decimal("7.5"), 750),
        ("proration_charge", Decimal("49.995"), 5000),
        ("discount", Decimal("-24.9975"), -2500),
    ]
    assert (result.credit, result.charge) == (Decimal("-7.495"), Decimal("24.9975"))
    assert result.net_minor == 1750
    assert result.lines[1].description == "Coupon HALF on unused time on old price"
    assert (result.lines[3].quantity, result.lines[3].unit_price) == (
        Decimal("0.5"),
        Decimal("-49.995"),
    )


def test_a_credit_from_a_part_period_charge_keeps_the_whole_period_for_the_new_price() -> None:
    """The running price was charged from Feb 10 (proration); a second change on Feb 21."""
    period = nth_period(utc(2026, 1, 31), MONTHLY, 0)  # [Jan 31, Feb 28)
    result = prorate(
        old_amount_minor=6428,  # 99.99 x 18/28, charged on Feb 10
        new_amount_minor=19999,
        currency="USD",
        period=Period(utc(2026, 2, 10), period.end),
        at=utc(2026, 2, 21),
        new_period=period,
    )
    credit, charge = result.lines
    # 7 of the 18 charged days are unused; 7 of 28 days of the new price remain.
    assert (credit.amount, credit.amount_minor) == (Decimal("-24.997777777777777778"), -2500)
    assert (charge.amount, charge.amount_minor) == (Decimal("49.9975"), 5000)


def test_discounts_are_never_positive_nor_above_their_price() -> None:
    period = nth_period(utc(2026, 1, 31), MONTHLY, 0)
    common = {"currency": "USD", "period": period, "at": utc(2026, 2, 14)}
    for bad in (
        {"old_amount_minor": 100, "new_amount_minor": 100, "old_discount_minor": 1},
        {"old_amount_minor": 100, "new_amount_minor": 100, "new_discount": Decimal("0.01")},
        {"old_amount_minor": 100, "new_amount_minor": 100, "old_discount_minor": -101},
        {"old_amount_minor": 100, "new_amount_minor": 100, "new_discount": Decimal("-1.01")},
    ):
        with pytest.raises(ValueError):
            prorate(**common, **bad)  # type: ignore[arg-type]


coupon_terms = st.one_of(
    st.builds(
        CouponTerms,
        percent_off=st.decimals(min_value="0.000001", max_value=100, places=6),
    ),
    st.builds(
        CouponTerms,
        amounts_off=st.dictionaries(
            st.sampled_from(["USD", "JPY", "KWD", "EUR"]), st.integers(1, 10**10), min_size=1
        ),
    ),
)


@given(
    old=st.integers(0, 10**9),
    new=st.integers(0, 10**9),
    terms=coupon_terms,
    old_discounted=st.booleans(),
    currency=st.sampled_from(["USD", "JPY", "KWD", "EUR"]),
    anchor=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
    ).map(lambda d: d.replace(microsecond=0)),
    interval=intervals,
    n=st.integers(0, 40),
    covered_from=st.floats(0, 1, exclude_max=True),
    offset=st.floats(0, 1, exclude_max=True),
)
def test_discounted_credit_plus_charge_is_the_exact_discounted_difference(
    old: int,
    new: int,
    terms: CouponTerms,
    old_discounted: bool,
    currency: str,
    anchor: datetime,
    interval: Interval,
    n: int,
    covered_from: float,
    offset: float,
) -> None:
    """ "Exact" is what was paid for the covered span x its unused share, and the new price net
    of the coupon x the period's remaining share, as rationals in minor units.

    The old side is what was charged: a fee line and its discount line, each already whole
    minor units. Every line is its rational value rounded once half-up, so each side (a line
    and its discount line) is within one minor unit of its exact value, and the whole within
    two: four lines, each off by at most half a unit. The unrounded Decimals sum to the exact
    difference within 4e-18 (four quantizations to 18 places).
    """
    period = nth_period(anchor, interval, n)
    covered = Period(
        period.start + timedelta(seconds=int(period.seconds * covered_from)), period.end
    )
    at = covered.start + timedelta(seconds=int(covered.seconds * offset))
    old_discount = (
        round_to_minor(discount_amount(minor_to_decimal(old, currency), currency, terms), currency)
        if old_discounted
        else 0
    )
    new_discount = discount_amount(minor_to_decimal(new, currency), currency, terms)
    result = prorate(
        old_amount_minor=old,
        old_discount_minor=old_discount,
        new_amount_minor=new,
        new_discount=new_discount,
        currency=currency,
        period=covered,
        at=at,
        new_period=period,
    )
    scale = Fraction(10) ** currency_exponent(currency)
    unused = Fraction(*fraction_remaining(covered, at))
    remaining = Fraction(*fraction_remaining(period, at))
    exact_credit = -Fraction(old + old_discount) * unused  # in minor units
    exact_charge = (Fraction(new) + Fraction(new_discount) * scale) * remaining
    for line in result.lines:
        ratio = unused if line in result.credit_lines else remaining
        assert line.amount_minor == _half_up(Fraction(line.unit_price) * scale * ratio)
    credit_minor = sum(line.amount_minor for line in result.credit_lines)
    charge_minor = sum(line.amount_minor for line in result.charge_lines)
    assert abs(credit_minor - exact_credit) < 1
    assert abs(charge_minor - exact_charge) < 1
    exact_difference = exact_charge + exact_credit
    assert abs(result.net_minor - exact_difference) < 2
    # Never more credit than was paid for the unused span, give or take the line's rounding.
    assert -credit_minor <= (old + old_discount) * unused + 1
    unrounded = Fraction(result.credit + result.charge) * scale
    assert abs(unrounded - exact_difference) <= Fraction(4, 10**18) * scale
