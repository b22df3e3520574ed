"""Proration of a price change inside an anchor-based period, by the second.

Pure: stdlib and kit only. Amounts stay unrounded Decimals until each line is rounded once
with `kit.money.round_to_minor`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, localcontext

from aihub_billing.kit.clock import ensure_utc
from aihub_billing.kit.money import minor_to_decimal, round_to_minor
from aihub_billing.kit.periods import Period

__all__ = [
    "PRECISION",
    "Line",
    "Proration",
    "fraction_remaining",
    "prorate",
    "prorated_line",
    "tidy",
]

# Unrounded amounts are kept to 18 decimal places, the scale of the database's PreciseDecimal.
# Prorated values are ratios with denominators of at most a few billion seconds, so a value
# this close to a half-minor-unit boundary is exactly on it: this step never changes a rounding.
PRECISION = Decimal("1e-18")
_SECOND = timedelta(seconds=1)
_DIGITS = 60


@dataclass(frozen=True, slots=True)
class Line:
    """A billable line: `amount` unrounded (quantity x unit_price); `amount_minor` rounded once."""

    kind: str
    description: str
    period_start: datetime
    period_end: datetime
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    amount_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class Proration:
    """Credit lines (net <= 0) for the unused old price, charge lines (net >= 0) for the new one.

    Each side is its gross line, then its coupon discount line when there is one, the way a
    fee line is followed by its discount line.
    """

    credit_lines: tuple[Line, ...]
    charge_lines: tuple[Line, ...]

    @property
    def lines(self) -> tuple[Line, ...]:
        return self.credit_lines + self.charge_lines

    @property
    def credit(self) -> Decimal:
        return sum((line.amount for line in self.credit_lines), Decimal(0))

    @property
    def charge(self) -> Decimal:
        return sum((line.amount for line in self.charge_lines), Decimal(0))

    @property
    def net(self) -> Decimal:
        return self.credit + self.charge

    @property
    def net_minor(self) -> int:
        return sum(line.amount_minor for line in self.lines)


def tidy(value: Decimal) -> Decimal:
    """Drops trailing zeros (14.9950 -> 14.995, 30.00 -> 30) without changing the value."""
    with localcontext() as ctx:
        ctx.prec = _DIGITS
        if value == value.to_integral_value():
            return value.quantize(Decimal(1))
        return value.normalize()


def _seconds(delta: timedelta) -> int:
    return delta // _SECOND


def fraction_remaining(period: Period, at: datetime) -> tuple[int, int]:
    """(remaining, total) whole seconds of `period` from `at` to its end; `at` must be inside."""
    at = ensure_utc(at)
    if not period.contains(at):
        raise ValueError(f"{at.isoformat()} is outside [{period.start}, {period.end})")
    return _seconds(period.end - at), _seconds(period.end - period.start)


def prorated_line(
    *,
    kind: str,
    description: str,
    amount_minor: int,
    currency: str,
    period: Period,
    at: datetime,
    sign: int = 1,
) -> Line:
    """`sign` x price x remaining/total for [at, period.end), rounded once to minor units."""
    if sign not in (1, -1):
        raise ValueError("sign is 1 (charge) or -1 (credit)")
    return _prorated(
        kind=kind,
        description=description,
        price=sign * minor_to_decimal(amount_minor, currency),
        currency=currency,
        period=period,
        at=at,
    )


def _prorated(
    *, kind: str, description: str, price: Decimal, currency: str, period: Period, at: datetime
) -> Line:
    """`price` (signed, unrounded) x remaining/total for [at, period.end), rounded once."""
    remaining, total = fraction_remaining(period, at)
    with localcontext() as ctx:
        ctx.prec = _DIGITS
        amount = tidy((price * remaining / total).quantize(PRECISION))
        quantity = tidy((Decimal(remaining) / total).quantize(PRECISION))
    return Line(
        kind=kind,
        description=description,
        period_start=ensure_utc(at),
        period_end=period.end,
        quantity=quantity,
        unit_price=tidy(price),
        amount=amount,
        amount_minor=round_to_minor(amount, currency),
        currency=currency,
    )


def prorate(
    *,
    old_amount_minor: int,
    new_amount_minor: int,
    currency: str,
    period: Period,
    at: datetime,
    new_period: Period | None = None,
    old_label: str = "old price",
    new_label: str = "new price",
    old_discount_minor: int = 0,
    new_discount: Decimal = Decimal(0),
    old_coupon_label: str = "Discount",
    new_coupon_label: str = "Discount",
) -> Proration:
    """Credit the unused part of what was charged for `period` and charge the new price from `at`.

    `old_amount_minor` was charged for `period` with `old_discount_minor` (<= 0) off it: the
    credit is prorated from both, so it never gives back more than was paid. `new_discount`
    (<= 0, unrounded) is the coupon's discount on a whole period of the new price. The new
    price runs to the end of `period`, or over `new_period` when that is given (a change of
    billing cycle starts one; a credit from a part-period charge keeps the whole period for
    the new price); `new_period` must contain `at` too.
    """
    if old_discount_minor > 0 or new_discount > 0:
        raise ValueError("discounts are <= 0")
    if -old_discount_minor > old_amount_minor or -new_discount > minor_to_decimal(
        new_amount_minor, currency
    ):
        raise ValueError("a discount never exceeds its price")
    charge_period = new_period or period
    credit_lines = [
        prorated_line(
            kind="proration_credit",
            description=f"Unused time on {old_label}",
            amount_minor=old_amount_minor,
            currency=currency,
            period=period,
            at=at,
            sign=-1,
        )
    ]
    if old_discount_minor:
        # The unused part of the discount is taken back from the credit.
        credit_lines.append(
            prorated_line(
                kind="discount",
                description=f"{old_coupon_label} on unused time on {old_label}",
                amount_minor=-old_discount_minor,
                currency=currency,
                period=period,
                at=at,
            )
        )
    charge_lines = [
        prorated_line(
            kind="proration_charge",
            description=f"Remaining time on {new_label}",
            amount_minor=new_amount_minor,
            currency=currency,
            period=charge_period,
            at=at,
        )
    ]
    if new_discount:
        charge_lines.append(
            _prorated(
                kind="discount",
                description=f"{new_coupon_label} on remaining time on {new_label}",
                price=new_discount,
                currency=currency,
                period=charge_period,
                at=at,
            )
        )
    return Proration(credit_lines=tuple(credit_lines), charge_lines=tuple(charge_lines))
