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
    """Credit (<= 0) for the unused old price and charge (>= 0) for the rest of the new one."""

    credit: Decimal
    charge: Decimal
    lines: tuple[Line, ...]

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
    remaining, total = fraction_remaining(period, at)
    price = minor_to_decimal(amount_minor, currency)
    with localcontext() as ctx:
        ctx.prec = _DIGITS
        amount = tidy((sign * price * remaining / total).quantize(PRECISION))
        quantity = tidy((Decimal(remaining) / total).quantize(PRECISION))
    return Line(
        kind=kind,
        description=description,
        period_start=ensure_utc(at),
        period_end=period.end,
        quantity=quantity,
        unit_price=sign * price,
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
) -> Proration:
    """Credit the unused part of the old price of `period` and charge the new price from `at`.

    The new price runs to the end of `period`, or over `new_period` when the change also
    starts a new period (a change of billing cycle); `new_period` must contain `at` too.
    """
    credit = prorated_line(
        kind="proration_credit",
        description=f"Unused time on {old_label}",
        amount_minor=old_amount_minor,
        currency=currency,
        period=period,
        at=at,
        sign=-1,
    )
    charge = prorated_line(
        kind="proration_charge",
        description=f"Remaining time on {new_label}",
        amount_minor=new_amount_minor,
        currency=currency,
        period=new_period or period,
        at=at,
    )
    return Proration(credit=credit.amount, charge=charge.amount, lines=(credit, charge))
