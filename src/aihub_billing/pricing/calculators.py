"""Usage price models as small pure calculators: flat, per-unit, graduated, volume, package.

Quantities and prices are `Decimal` in major units; results are unrounded. Rounding to minor
units happens once per invoice line, later, through `kit.money.round_to_minor`.

Tier bounds follow Stripe: `up_to` is inclusive, so units (previous up_to, up_to] fall in a tier,
and the last tier is unbounded (`up_to=None`). A tier's flat fee is charged when at least one
billable unit falls in it (graduated) or when the total lands in it (volume); zero usage costs
nothing in either model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal

ZERO = Decimal(0)

__all__ = [
    "Charge",
    "Flat",
    "Graduated",
    "Package",
    "PerUnit",
    "PriceModel",
    "Tier",
    "TierLine",
    "Volume",
    "calculate",
]


def _check_amount(name: str, value: Decimal) -> None:
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} must be a Decimal, not {type(value).__name__}")
    if not value.is_finite() or value < 0:
        raise ValueError(f"{name} must be a finite, non-negative Decimal, got {value}")


@dataclass(frozen=True, slots=True)
class Tier:
    up_to: Decimal | None
    unit_price: Decimal
    flat_fee: Decimal = ZERO

    def __post_init__(self) -> None:
        if self.up_to is not None:
            _check_amount("up_to", self.up_to)
            if self.up_to == 0:
                raise ValueError("a tier's up_to must be above zero")
        _check_amount("unit_price", self.unit_price)
        _check_amount("flat_fee", self.flat_fee)


def _check_tiers(tiers: tuple[Tier, ...]) -> None:
    if not tiers:
        raise ValueError("tiered prices need at least one tier")
    bounds = [t.up_to for t in tiers[:-1]]
    if any(b is None for b in bounds) or tiers[-1].up_to is not None:
        raise ValueError("only the last tier is unbounded (up_to=None), and it must be")
    finite = [b for b in bounds if b is not None]
    if any(a >= b for a, b in zip(finite, finite[1:], strict=False)):
        raise ValueError("tier bounds must be strictly ascending")


@dataclass(frozen=True, slots=True)
class Flat:
    """A fixed amount per period, whatever the usage."""

    amount: Decimal

    def __post_init__(self) -> None:
        _check_amount("amount", self.amount)


@dataclass(frozen=True, slots=True)
class PerUnit:
    unit_price: Decimal

    def __post_init__(self) -> None:
        _check_amount("unit_price", self.unit_price)


@dataclass(frozen=True, slots=True)
class Graduated:
    """Each unit is priced by the tier it falls in (like income tax brackets)."""

    tiers: tuple[Tier, ...]

    def __post_init__(self) -> None:
        _check_tiers(self.tiers)


@dataclass(frozen=True, slots=True)
class Volume:
    """Every unit is priced by the one tier the total quantity lands in."""

    tiers: tuple[Tier, ...]

    def __post_init__(self) -> None:
        _check_tiers(self.tiers)


@dataclass(frozen=True, slots=True)
class Package:
    """`price` per started block of `size` units (1,001 tokens in blocks of 1,000 = 2 blocks)."""

    size: Decimal
    price: Decimal

    def __post_init__(self) -> None:
        _check_amount("size", self.size)
        _check_amount("price", self.price)
        if self.size == 0:
            raise ValueError("a package size must be above zero")


PriceModel = Flat | PerUnit | Graduated | Volume | Package


@dataclass(frozen=True, slots=True)
class TierLine:
    """One tier's share of a charge: which units, at what price, for how much."""

    tier: int
    above: Decimal  # units in (above, up_to] fall in this tier
    up_to: Decimal | None
    quantity: Decimal
    unit_price: Decimal
    flat_fee: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Charge:
    quantity: Decimal
    free_units: Decimal
    billable: Decimal
    amount: Decimal
    lines: tuple[TierLine, ...] = field(default=())


def calculate(model: PriceModel, quantity: Decimal, free_units: Decimal = ZERO) -> Charge:
    """The unrounded amount for `quantity` units, after `free_units` are taken off the top."""
    _check_amount("quantity", quantity)
    _check_amount("free_units", free_units)
    billable = max(quantity - free_units, ZERO)
    lines: tuple[TierLine, ...]
    match model:
        case Flat(amount=amount):
            lines = (TierLine(0, ZERO, None, billable, ZERO, amount, amount),)
        case PerUnit(unit_price=price):
            lines = (TierLine(0, ZERO, None, billable, price, ZERO, billable * price),)
        case Graduated(tiers=tiers):
            lines = _graduated(tiers, billable)
        case Volume(tiers=tiers):
            lines = _volume(tiers, billable)
        case Package(size=size, price=price):
            blocks = (billable / size).to_integral_value(rounding=ROUND_CEILING)
            lines = (TierLine(0, ZERO, None, blocks, price, ZERO, blocks * price),)
    total = sum((line.amount for line in lines), ZERO)
    return Charge(quantity, free_units, billable, total, lines)


def _graduated(tiers: tuple[Tier, ...], billable: Decimal) -> tuple[TierLine, ...]:
    lines = []
    floor = ZERO
    for index, tier in enumerate(tiers):
        if billable <= floor:
            break
        ceiling = billable if tier.up_to is None else min(billable, tier.up_to)
        units = ceiling - floor
        amount = units * tier.unit_price + tier.flat_fee
        lines.append(
            TierLine(index, floor, tier.up_to, units, tier.unit_price, tier.flat_fee, amount)
        )
        floor = ceiling
    return tuple(lines)


def _volume(tiers: tuple[Tier, ...], billable: Decimal) -> tuple[TierLine, ...]:
    if billable == 0:
        return ()
    floor = ZERO
    for index, tier in enumerate(tiers):
        if tier.up_to is None or billable <= tier.up_to:
            price, fee = tier.unit_price, tier.flat_fee
            return (
                TierLine(index, floor, tier.up_to, billable, price, fee, billable * price + fee),
            )
        floor = tier.up_to
    raise AssertionError("the last tier is unbounded")  # pragma: no cover
