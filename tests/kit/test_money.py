"""Tests for kit.money: currency exponents, the single rounding rule, and Money."""

from __future__ import annotations

import dataclasses
import operator
from decimal import Decimal

import pytest
from babel.numbers import list_currencies
from hypothesis import given
from hypothesis import strategies as st

from aihub_billing.kit.money import (
    CurrencyError,
    CurrencyMismatch,
    Money,
    currency_exponent,
    minor_to_decimal,
    normalize_currency,
    round_quotient,
    round_to_minor,
    sum_money,
)

CURRENCIES = ["USD", "EUR", "JPY", "KWD", "BHD"]


@pytest.mark.parametrize(
    ("code", "exponent"),
    [("USD", 2), ("EUR", 2), ("JPY", 0), ("KWD", 3), ("BHD", 3), ("usd", 2), ("jpy", 0)],
)
def test_currency_exponent(code: str, exponent: int) -> None:
    assert currency_exponent(code) == exponent


def test_clf_exponent_when_babel_knows_it() -> None:
    # CLF (Chilean unit of account) has 4 decimals in CLDR; only check it if Babel lists it.
    if "CLF" not in list_currencies():
        pytest.skip("this Babel does not list CLF")
    assert currency_exponent("CLF") == 4


@pytest.mark.parametrize(("code", "expected"), [("usd", "USD"), ("Eur", "EUR"), ("JPY", "JPY")])
def test_normalize_currency(code: str, expected: str) -> None:
    assert normalize_currency(code) == expected


@pytest.mark.parametrize("code", ["", "US", "USDD", "ZZZ", "12A", " usd", "US$", "ÜSD", "usd\n"])
def test_normalize_currency_refuses(code: str) -> None:
    with pytest.raises(CurrencyError):
        normalize_currency(code)
    with pytest.raises(CurrencyError):
        currency_exponent(code)


def test_normalize_currency_refuses_non_str() -> None:
    with pytest.raises(CurrencyError):
        normalize_currency(840)  # type: ignore[arg-type]


def test_currency_error_is_value_error() -> None:
    assert issubclass(CurrencyError, ValueError)
    assert issubclass(CurrencyMismatch, ValueError)


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        # USD, exponent 2
        ("12.345", "USD", 1235),
        ("12.344", "USD", 1234),
        ("0.005", "USD", 1),
        ("-0.005", "USD", -1),
        ("0.0049999", "USD", 0),
        ("-0.0049999", "USD", 0),
        ("0.015", "USD", 2),
        ("-0.015", "USD", -2),
        ("2.675", "USD", 268),  # the classic float trap: 2.675 is 2.67499999... as a float
        ("0", "USD", 0),
        ("-0", "USD", 0),
        ("19.99", "USD", 1999),
        ("0.0000015", "USD", 0),
        ("1.5E-3", "USD", 0),
        ("5E-3", "USD", 1),
        # JPY, exponent 0
        ("0.5", "JPY", 1),
        ("-0.5", "JPY", -1),
        ("1.5", "JPY", 2),
        ("2.5", "JPY", 3),  # half up, not banker's rounding
        ("2.4999", "JPY", 2),
        ("-2.5", "JPY", -3),
        ("1E+3", "JPY", 1000),
        # KWD, exponent 3
        ("1.2345", "KWD", 1235),
        ("-1.2345", "KWD", -1235),
        ("0.0005", "KWD", 1),
        ("-0.0005", "KWD", -1),
        ("0.00049", "KWD", 0),
        ("1.234", "KWD", 1234),
    ],
)
def test_round_to_minor_half_up(amount: str, currency: str, minor: int) -> None:
    assert round_to_minor(Decimal(amount), currency) == minor


@pytest.mark.parametrize(
    ("amount", "currency", "minor"), [(3, "USD", 300), (3, "JPY", 3), (-2, "KWD", -2000)]
)
def test_round_to_minor_accepts_int(amount: int, currency: str, minor: int) -> None:
    assert round_to_minor(amount, currency) == minor


@pytest.mark.parametrize(
    ("numerator", "denominator", "rounded"),
    [(7252, 296, 25), (7251, 296, 24), (5, 2, 3), (-5, 2, -3), (-7, 3, -2), (0, 9, 0),
     (10**40 + 1, 2, 10**40 // 2 + 1)],
)  # fmt: skip
def test_round_quotient_rounds_the_exact_ratio_half_away_from_zero(
    numerator: int, denominator: int, rounded: int
) -> None:
    # 7252 / 296 is exactly 24.5 (a credit's tax, 148 x 49 / 296): a Decimal ratio rounded to
    # 28 digits first made it 24.4999... and 24.
    assert round_quotient(numerator, denominator) == rounded


def test_round_quotient_refuses_a_denominator_below_one() -> None:
    with pytest.raises(ValueError):
        round_quotient(1, 0)


def test_round_to_minor_is_exact_beyond_default_precision() -> None:
    # 34 significant digits: the default 28-digit context would have rounded this silently.
    amount = Decimal("12345678901234567890123456789.005")
    assert round_to_minor(amount, "USD") == 1234567890123456789012345678901
    assert round_to_minor(Decimal("1E+40"), "USD") == 10**42


@pytest.mark.parametrize("bad", [0.1, 1.0, True, False, "1.00", None, [1]])
def test_round_to_minor_refuses_non_decimal(bad: object) -> None:
    with pytest.raises(TypeError):
        round_to_minor(bad, "USD")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "sNaN"])
def test_round_to_minor_refuses_non_finite(bad: str) -> None:
    with pytest.raises(ValueError, match="finite"):
        round_to_minor(Decimal(bad), "USD")


def test_round_to_minor_refuses_unknown_currency() -> None:
    with pytest.raises(CurrencyError):
        round_to_minor(Decimal(1), "ZZZ")


@pytest.mark.parametrize(
    ("minor", "currency", "expected"),
    [
        (1999, "USD", "19.99"),
        (-1999, "USD", "-19.99"),
        (5, "JPY", "5"),
        (1234, "KWD", "1.234"),
        (1, "USD", "0.01"),
        (100, "USD", "1.00"),
        (0, "USD", "0.00"),
        (10**40 + 1, "USD", "1" + "0" * 37 + "0.01"),
    ],
)
def test_minor_to_decimal(minor: int, currency: str, expected: str) -> None:
    value = minor_to_decimal(minor, currency)
    assert value == Decimal(expected)
    assert f"{value:f}" == expected


@pytest.mark.parametrize("bad", [1.0, True, Decimal(1), "1"])
def test_minor_to_decimal_refuses_non_int(bad: object) -> None:
    with pytest.raises(TypeError):
        minor_to_decimal(bad, "USD")  # type: ignore[arg-type]


class TestMoney:
    def test_normalizes_currency(self) -> None:
        assert Money(100, "usd") == Money(100, "USD")
        assert Money(100, "usd").currency == "USD"

    @pytest.mark.parametrize("bad", [1.0, 1.5, True, Decimal(1), "100", None])
    def test_refuses_non_int_amount(self, bad: object) -> None:
        with pytest.raises(TypeError):
            Money(bad, "USD")  # type: ignore[arg-type]

    def test_refuses_unknown_currency(self) -> None:
        with pytest.raises(CurrencyError):
            Money(1, "XYZ")

    def test_is_frozen_and_hashable(self) -> None:
        money = Money(100, "USD")
        with pytest.raises(dataclasses.FrozenInstanceError):
            money.amount_minor = 5  # type: ignore[misc]
        assert len({Money(1, "USD"), Money(1, "usd"), Money(1, "EUR")}) == 2

    def test_zero(self) -> None:
        assert Money.zero("jpy") == Money(0, "JPY")
        assert Money.zero("USD").is_zero()
        assert not Money(1, "USD").is_zero()

    @pytest.mark.parametrize(
        ("amount", "currency", "minor"),
        [
            ("29.99", "USD", 2999),
            ("29.995", "USD", 3000),
            ("-29.995", "USD", -3000),
            (Decimal("1.2345"), "KWD", 1235),
            (7, "USD", 700),
            ("1000.4", "JPY", 1000),
            (" 1.5 ", "USD", 150),
        ],
    )
    def test_of_rounds_once(self, amount: Decimal | int | str, currency: str, minor: int) -> None:
        assert Money.of(amount, currency) == Money(minor, currency)

    @pytest.mark.parametrize("bad", [29.99, True])
    def test_of_refuses_float_and_bool(self, bad: object) -> None:
        with pytest.raises(TypeError):
            Money.of(bad, "USD")  # type: ignore[arg-type]

    @pytest.mark.parametrize("bad", ["", "abc", "1,00", "NaN", "Infinity"])
    def test_of_refuses_bad_strings(self, bad: str) -> None:
        with pytest.raises(ValueError, match="amount"):
            Money.of(bad, "USD")

    def test_arithmetic(self) -> None:
        a, b = Money(1050, "USD"), Money(250, "USD")
        assert a + b == Money(1300, "USD")
        assert a - b == Money(800, "USD")
        assert b - a == Money(-800, "USD")
        assert -a == Money(-1050, "USD")
        assert abs(Money(-5, "USD")) == Money(5, "USD")
        assert abs(Money(5, "USD")) == Money(5, "USD")

    def test_comparisons(self) -> None:
        small, big = Money(1, "USD"), Money(2, "USD")
        assert small < big
        assert small <= big
        assert big > small
        assert big >= small
        assert small <= Money(1, "USD")
        assert small >= Money(1, "USD")
        assert not small > big
        assert max([small, big]) == big

    @pytest.mark.parametrize(
        "op",
        [
            lambda a, b: a + b,
            lambda a, b: a - b,
            lambda a, b: a < b,
            lambda a, b: a <= b,
            lambda a, b: a > b,
            lambda a, b: a >= b,
        ],
    )
    def test_currency_mismatch(self, op: object) -> None:
        with pytest.raises(CurrencyMismatch):
            op(Money(1, "USD"), Money(1, "EUR"))  # type: ignore[operator]

    def test_equality_across_currencies_is_false_not_an_error(self) -> None:
        assert Money(1, "USD") != Money(1, "EUR")

    @pytest.mark.parametrize("other", [1, Decimal(1), 1.0, None, "1"])
    def test_mixing_with_non_money_is_a_type_error(self, other: object) -> None:
        money = Money(1, "USD")
        with pytest.raises(TypeError):
            money + other
        with pytest.raises(TypeError):
            other + money  # type: ignore[operator]
        with pytest.raises(TypeError):
            money - other
        with pytest.raises(TypeError):
            operator.lt(money, other)  # type: ignore[arg-type]
        assert money != other

    @pytest.mark.parametrize(
        ("money", "text", "amount"),
        [
            (Money(2999, "USD"), "29.99 USD", "29.99"),
            (Money(1234, "KWD"), "1.234 KWD", "1.234"),
            (Money(5, "JPY"), "5 JPY", "5"),
            (Money(-1, "USD"), "-0.01 USD", "-0.01"),
            (Money(0, "USD"), "0.00 USD", "0.00"),
            (Money(10**30, "USD"), "1" + "0" * 28 + ".00 USD", "1" + "0" * 28 + ".00"),
        ],
    )
    def test_str_and_json(self, money: Money, text: str, amount: str) -> None:
        assert str(money) == text
        assert money.to_json() == {
            "amount_minor": money.amount_minor,
            "currency": money.currency,
            "amount": amount,
        }
        assert money.to_decimal() == Decimal(amount)

    def test_to_json_example(self) -> None:
        assert Money(2999, "USD").to_json() == {
            "amount_minor": 2999,
            "currency": "USD",
            "amount": "29.99",
        }


class TestSumMoney:
    def test_empty_is_zero(self) -> None:
        assert sum_money([], "usd") == Money(0, "USD")

    def test_sums(self) -> None:
        items = (Money(n, "JPY") for n in [100, 250, -50])
        assert sum_money(items, "JPY") == Money(300, "JPY")

    def test_mismatch(self) -> None:
        with pytest.raises(CurrencyMismatch):
            sum_money([Money(1, "USD"), Money(1, "EUR")], "USD")
        with pytest.raises(CurrencyMismatch):
            sum_money([Money(1, "EUR")], "USD")


currencies = st.sampled_from(CURRENCIES)


@given(st.integers(min_value=-(10**30), max_value=10**30), currencies)
def test_minor_round_trip(n: int, currency: str) -> None:
    assert round_to_minor(minor_to_decimal(n, currency), currency) == n
    assert Money.of(Money(n, currency).to_decimal(), currency) == Money(n, currency)


@given(
    st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**15), max_value=10**15),
    currencies,
)
def test_rounding_error_is_at_most_half_a_minor_unit(amount: Decimal, currency: str) -> None:
    scaled = amount.scaleb(currency_exponent(currency))
    rounded = round_to_minor(amount, currency)
    error = abs(rounded - scaled)
    assert error <= Decimal("0.5")
    if error == Decimal("0.5"):
        # Ties go away from zero.
        assert abs(rounded) > abs(scaled)
    # Half-up is symmetric around zero.
    assert round_to_minor(-amount, currency) == -rounded
