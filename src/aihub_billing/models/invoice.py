"""Invoices and their lines, gapless number sequences, and stored PDF renderings.

An invoice closes one period of one subscription (or is issued by hand). Each line keeps the
precise amount and the amount rounded once; the invoice's figures are integer sums of lines.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from aihub_billing.models.base import Base, id_column
from aihub_billing.models.types import PreciseDecimal

INVOICE_STATUSES = ("draft", "open", "paid", "void", "uncollectible")
# Why an invoice exists: the first period billed in advance, a period close, or by hand.
BILLING_REASONS = (
    "subscription_create",
    "subscription_cycle",
    "subscription_final",
    "late_usage",
    "manual",
)
INVOICE_LINE_KINDS = (
    "subscription_fee",
    "proration_credit",
    "proration_charge",
    "setup_fee",
    "discount",
    "overage_calls",
    "overage_tokens",
    "storage",
    "adjustment",
)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Invoice(Base):
    __tablename__ = "invoices"
    __table_args__ = (
        CheckConstraint(_in("status", INVOICE_STATUSES), name="status"),
        CheckConstraint(_in("billing_reason", BILLING_REASONS), name="billing_reason"),
        # Exactly once: one invoice per subscription, reason and period, whatever reruns.
        UniqueConstraint("subscription_id", "billing_reason", "period_start"),
        UniqueConstraint("series", "sequence"),
        # Listings by account and status, newest first (status alone has its own index).
        Index("ix_invoices_account_status", "account_id", "status", "id"),
        CheckConstraint("balance_applied_minor >= 0", name="balance_applied"),
        CheckConstraint("amount_paid_minor >= 0", name="amount_paid"),
        CheckConstraint("amount_credited_minor >= 0", name="amount_credited"),
    )

    id: Mapped[str] = id_column()
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    subscription_id: Mapped[str | None] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    billing_reason: Mapped[str] = mapped_column(String(24))
    status: Mapped[str] = mapped_column(String(16), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    # Assigned at finalization from invoice_sequences: number = f"{series}-{sequence:06d}".
    series: Mapped[str | None] = mapped_column(String(32))
    sequence: Mapped[int | None] = mapped_column(BigInteger)
    number: Mapped[str | None] = mapped_column(String(48), unique=True)
    # Integer sums of the rounded lines; total = subtotal + tax.
    subtotal_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    tax_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    total_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    # Account credit consumed by this invoice; amount_due = total - balance_applied.
    balance_applied_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_due_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_paid_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    # Sum of the credit notes issued against it (never above total).
    amount_credited_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    memo: Mapped[str | None] = mapped_column(String(1000))
    # Payment collection and dunning.
    payment_provider: Mapped[str | None] = mapped_column(String(16))
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_payment_attempt_at: Mapped[datetime | None]
    due_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finalized_at: Mapped[datetime | None]
    paid_at: Mapped[datetime | None]
    voided_at: Mapped[datetime | None]
    marked_uncollectible_at: Mapped[datetime | None]


class InvoiceLine(Base):
    __tablename__ = "invoice_lines"
    __table_args__ = (
        CheckConstraint(_in("kind", INVOICE_LINE_KINDS), name="kind"),
        UniqueConstraint("invoice_id", "position"),
    )

    id: Mapped[str] = id_column()
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(24))
    description: Mapped[str] = mapped_column(String(500))
    # The pending invoice item this line collected, if any.
    invoice_item_id: Mapped[str | None] = mapped_column(ForeignKey("invoice_items.id"))
    # For usage lines: which model's tokens (None = all models / not usage).
    model: Mapped[str | None] = mapped_column(String(200))
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    quantity: Mapped[Decimal] = mapped_column(PreciseDecimal())
    unit_price: Mapped[Decimal] = mapped_column(PreciseDecimal())
    # Precise, unrounded; amount_minor is it rounded once, half-up.
    amount: Mapped[Decimal] = mapped_column(PreciseDecimal())
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    # The rate applied to this line (None = exempt); tax_minor rounded once from amount_minor.
    tax_rate: Mapped[Decimal | None] = mapped_column(PreciseDecimal(9, 6))
    tax_minor: Mapped[int] = mapped_column(BigInteger, default=0)


class InvoiceSequence(Base):
    """The next number per series; taken under a row lock at finalization, so gapless."""

    __tablename__ = "invoice_sequences"

    series: Mapped[str] = mapped_column(String(32), primary_key=True)
    next_value: Mapped[int] = mapped_column(BigInteger)


class InvoiceDocument(Base):
    """A rendered PDF of an invoice, written by the render job."""

    __tablename__ = "invoice_documents"

    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.id"), primary_key=True)
    template: Mapped[str] = mapped_column(String(64))
    locale: Mapped[str] = mapped_column(String(16))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    # The invoice's updated_at it was rendered from; a newer invoice is re-rendered.
    source_updated_at: Mapped[datetime]
    rendered_at: Mapped[datetime]
