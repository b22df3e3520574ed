"""Pending invoice items: every billable consequence, appended, collected by invoicing later."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from aihub_billing.models.base import Base, id_column
from aihub_billing.models.types import PreciseDecimal

INVOICE_ITEM_KINDS = (
    "subscription_fee",
    "proration_credit",
    "proration_charge",
    "setup_fee",
    "discount",
)


class InvoiceItem(Base):
    __tablename__ = "invoice_items"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('subscription_fee', 'proration_credit', 'proration_charge', "
            "'setup_fee', 'discount')",
            name="kind",
        ),
    )

    id: Mapped[str] = id_column()
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    subscription_id: Mapped[str | None] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(String(500))
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    quantity: Mapped[Decimal] = mapped_column(PreciseDecimal())
    unit_price: Mapped[Decimal] = mapped_column(PreciseDecimal())
    # Unrounded; amount_minor is it rounded once, half-up.
    amount: Mapped[Decimal] = mapped_column(PreciseDecimal())
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[datetime]
    # Set by the invoice generator when it collects the item (no invoices table yet).
    invoice_id: Mapped[str | None] = mapped_column(String(40), index=True)
    # A proration credit's lines: the invoice whose charge they give back, so that it and
    # that invoice's credit notes together never return more than the invoice holds.
    credited_invoice_id: Mapped[str | None] = mapped_column(String(40), index=True)
