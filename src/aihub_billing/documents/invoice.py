"""What an invoice document shows: plain frozen values, built by the invoicing domain.

Amounts are integer minor units of `currency`; unit prices are precise Decimals in major
units (a per-token price such as Decimal("0.0000015") is shown with all its digits).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from aihub_billing.kit.money import normalize_currency

__all__ = ["DocumentLine", "InvoiceDocument", "Party"]


@dataclass(frozen=True, slots=True)
class Party:
    """The seller or the customer as printed on the document."""

    name: str
    email: str | None = None
    address: tuple[str, ...] = ()
    tax_id: str | None = None


@dataclass(frozen=True, slots=True)
class DocumentLine:
    description: str
    quantity: Decimal
    unit_price: Decimal  # major units, unrounded
    amount_minor: int
    tax_rate: Decimal | None  # 0.19 for 19 %; None when the line is not taxed
    tax_minor: int
    period_start: datetime | None = None
    period_end: datetime | None = None  # exclusive, like every period in aihub-billing

    def __post_init__(self) -> None:
        for name in ("quantity", "unit_price", "tax_rate"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (Decimal, int)):
                raise TypeError(f"DocumentLine.{name} must be Decimal, not {type(value).__name__}")
        for name in ("amount_minor", "tax_minor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"DocumentLine.{name} must be int minor units")


@dataclass(frozen=True, slots=True)
class InvoiceDocument:
    """One invoice. A draft has no number yet and is printed with a DRAFT mark."""

    number: str | None
    status: str  # draft, open, paid, void, uncollectible
    currency: str
    issued_at: datetime | None
    due_at: datetime | None
    period_start: datetime
    period_end: datetime  # exclusive
    seller: Party
    customer: Party
    lines: tuple[DocumentLine, ...]
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    balance_applied_minor: int = 0
    amount_due_minor: int = 0
    amount_paid_minor: int = 0
    amount_credited_minor: int = 0  # credit notes against it
    memo: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "currency", normalize_currency(self.currency))
        object.__setattr__(self, "lines", tuple(self.lines))

    @property
    def is_draft(self) -> bool:
        return self.number is None or self.status == "draft"
