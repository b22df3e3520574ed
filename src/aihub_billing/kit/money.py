"""Money as integer minor units plus an ISO 4217 code, and the project's one rounding function.

Floats never touch money: every entry point refuses them with TypeError.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from fractions import Fraction
from functools import lru_cache
from typing import Annotated

from babel.numbers import get_currency_precision, list_currencies
from pydantic import PlainSerializer

__all__ = [
    "CurrencyError",
    "CurrencyMismatch",
    "JsonDecimal",
    "Money",
    "currency_exponent",
    "minor_to_decimal",
    "normalize_currency",
    "round_fraction",
    "round_to_minor",
    "sum_money",
]

# Enough digits that realistic amounts are never rounded by the context; grown per value below.
_MIN_PRECISION = 50


class CurrencyError(ValueError):
    """Unknown or malformed ISO 4217 currency code."""


class CurrencyMismatch(ValueError):
    """Arithmetic or comparison between amounts in different currencies."""


@lru_cache(maxsize=1)
def _known_currencies() -> frozenset[str]:
    return frozenset(list_currencies())


def normalize_currency(code: str) -> str:
    """Return the upper-cased code if Babel knows it as an ISO 4217 currency."""
    if not isinstance(code, str) or len(code) != 3 or not code.isascii() or not code.isalpha():
        raise CurrencyError(f"invalid currency code: {code!r}")
    upper = code.upper()
    if upper not in _known_currencies():
        raise CurrencyError(f"unknown currency code: {code!r}")
    return upper


@lru_cache(maxsize=512)
def currency_exponent(code: str) -> int:
    """Number of minor-unit digits of the currency (USD 2, JPY 0, KWD 3), from Babel's CLDR data."""
    # Babel answers 2 for codes it does not know, so validate first.
    return int(get_currency_precision(normalize_currency(code)))


def _as_decimal(amount: Decimal | int) -> Decimal:
    # bool is an int subclass; True dollars is a bug, not an amount.
    if isinstance(amount, (bool, float)) or not isinstance(amount, (int, Decimal)):
        raise TypeError(f"money amounts must be Decimal or int, not {type(amount).__name__}")
    value = Decimal(amount)
    if not value.is_finite():
        raise ValueError(f"money amounts must be finite, got {value}")
    return value


def round_to_minor(amount: Decimal | int, currency: str) -> int:
    """Round a major-unit amount to integer minor units, half away from zero (ROUND_HALF_UP)."""
    value = _as_decimal(amount)
    exponent = currency_exponent(currency)
    with localcontext() as ctx:
        # scaleb keeps the coefficient, so a precision >= its length makes the shift exact.
        ctx.prec = max(_MIN_PRECISION, len(value.as_tuple().digits) + 1)
        scaled = value.scaleb(exponent)
        return int(scaled.to_integral_value(rounding=ROUND_HALF_UP))


def round_quotient(numerator: int, denominator: int) -> int:
    """numerator / denominator (denominator > 0), exactly, rounded to an integer half away from
    zero, as round_to_minor rounds: for a ratio of two integer amounts (no Decimal context in
    between to round first)."""
    if denominator <= 0:
        raise ValueError("the denominator must be positive")
    quotient = (abs(numerator) * 2 + denominator) // (denominator * 2)
    return quotient if numerator >= 0 else -quotient


def round_fraction(value: Fraction, places: int) -> Decimal:
    """An exact ratio (a time-weighted quantity) as a Decimal of at most `places` places,
    rounded once, half away from zero, and in its shortest form (10, not 10.000)."""
    scaled = round_quotient(value.numerator * 10**places, value.denominator)
    with localcontext() as ctx:
        # scaleb and normalize round to the context's precision: give them all the digits.
        ctx.prec = len(str(abs(scaled))) + places + 1
        result = Decimal(scaled).scaleb(-places)
        if result == result.to_integral_value():
            return result.quantize(Decimal(1))
        return result.normalize()


def minor_to_decimal(amount_minor: int, currency: str) -> Decimal:
    """Exact major-unit value of an integer minor-unit amount (1999 USD -> Decimal("19.99"))."""
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise TypeError(f"amount_minor must be int, not {type(amount_minor).__name__}")
    exponent = currency_exponent(currency)
    with localcontext() as ctx:
        ctx.prec = max(_MIN_PRECISION, len(str(abs(amount_minor))) + 1)
        return Decimal(amount_minor).scaleb(-exponent)


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount: integer minor units in one currency. Refuses to mix currencies."""

    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.amount_minor, bool) or not isinstance(self.amount_minor, int):
            raise TypeError(
                f"Money.amount_minor must be int, not {type(self.amount_minor).__name__}"
            )
        object.__setattr__(self, "currency", normalize_currency(self.currency))

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @classmethod
    def of(cls, amount: Decimal | int | str, currency: str) -> Money:
        """Build from a major-unit amount ("29.99", Decimal, int), rounded once, half-up."""
        if isinstance(amount, str):
            try:
                amount = Decimal(amount)
            except InvalidOperation:
                raise ValueError(f"not a decimal amount: {amount!r}") from None
        return cls(round_to_minor(amount, currency), currency)

    def _check(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatch(f"cannot combine {self.currency} and {other.currency}")

    def __add__(self, other: object) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._check(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: object) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._check(other)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def __abs__(self) -> Money:
        return Money(abs(self.amount_minor), self.currency)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._check(other)
        return self.amount_minor < other.amount_minor

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._check(other)
        return self.amount_minor <= other.amount_minor

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._check(other)
        return self.amount_minor > other.amount_minor

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._check(other)
        return self.amount_minor >= other.amount_minor

    def is_zero(self) -> bool:
        return self.amount_minor == 0

    def to_decimal(self) -> Decimal:
        return minor_to_decimal(self.amount_minor, self.currency)

    def __str__(self) -> str:
        # Format "f" so large or tiny values never switch to scientific notation.
        return f"{self.to_decimal():f} {self.currency}"

    def to_json(self) -> dict[str, object]:
        """JSON-ready form; the major-unit amount travels as a string, never a float."""
        return {
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "amount": f"{self.to_decimal():f}",
        }


def sum_money(items: Iterable[Money], currency: str) -> Money:
    """Sum amounts that must all be in `currency`; an empty iterable gives zero."""
    total = Money.zero(currency)
    for item in items:
        total = total + item
    return total


def _plain(value: Decimal) -> str:
    return format(value, "f")


# A Decimal that travels in JSON as a plain string ("0.0000000001", never "1E-10").
JsonDecimal = Annotated[Decimal, PlainSerializer(_plain, return_type=str, when_used="json")]
