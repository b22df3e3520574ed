"""Coupon discounts on a fee line: percent or a fixed amount per currency, never below zero.

Pure: stdlib and kit only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, localcontext

from aihub_billing.kit.money import minor_to_decimal, normalize_currency
from aihub_billing.pricing.proration import PRECISION, tidy

__all__ = ["CouponTerms", "discount_amount"]

_HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class CouponTerms:
    """Exactly one of `percent_off` (0 < p <= 100) or `amounts_off` (currency -> minor units)."""

    percent_off: Decimal | None = None
    amounts_off: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.percent_off is None) == (not self.amounts_off):
            raise ValueError("a coupon has either percent_off or amounts_off")
        if self.percent_off is not None and not Decimal(0) < self.percent_off <= _HUNDRED:
            raise ValueError("percent_off must be in (0, 100]")
        if any(v <= 0 for v in self.amounts_off.values()):
            raise ValueError("amounts_off must be positive")

    def applies_to(self, currency: str) -> bool:
        return self.percent_off is not None or normalize_currency(currency) in self.amounts_off


def discount_amount(fee: Decimal, currency: str, terms: CouponTerms) -> Decimal:
    """The discount (<= 0, unrounded) on a fee line: the fee minus it is never below zero."""
    if fee <= 0:
        return Decimal(0)
    if terms.percent_off is not None:
        with localcontext() as ctx:
            ctx.prec = 60
            off = tidy((fee * terms.percent_off / _HUNDRED).quantize(PRECISION))
    else:
        currency = normalize_currency(currency)
        if currency not in terms.amounts_off:
            return Decimal(0)
        off = minor_to_decimal(terms.amounts_off[currency], currency)
    return -min(off, fee)
