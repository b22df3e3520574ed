"""Credit notes against invoices, and the account balance they can credit."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from aihub_billing.models.base import Base, id_column

CREDIT_NOTE_REASONS = (
    "duplicate",
    "fraudulent",
    "order_change",
    "product_unsatisfactory",
    "other",
)
CREDIT_NOTE_OUTCOMES = ("refund", "credit")
# refund_failed: a credit note's refund that the provider failed or canceled, credited instead.
BALANCE_KINDS = (
    "credit_note",
    "refund_failed",
    "invoice_applied",
    "invoice_voided",
    "adjustment",
)


class CreditNote(Base):
    __tablename__ = "credit_notes"
    __table_args__ = (
        CheckConstraint(
            "reason IN ('duplicate', 'fraudulent', 'order_change', "
            "'product_unsatisfactory', 'other')",
            name="reason",
        ),
        CheckConstraint("outcome IN ('refund', 'credit')", name="outcome"),
        CheckConstraint("total_minor > 0", name="total_positive"),
        UniqueConstraint("series", "sequence"),
    )

    id: Mapped[str] = id_column()
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.id"), index=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    series: Mapped[str] = mapped_column(String(32))
    sequence: Mapped[int] = mapped_column(BigInteger)
    number: Mapped[str] = mapped_column(String(48), unique=True)
    reason: Mapped[str] = mapped_column(String(32))
    memo: Mapped[str | None] = mapped_column(String(1000))
    outcome: Mapped[str] = mapped_column(String(8))
    currency: Mapped[str] = mapped_column(String(3))
    subtotal_minor: Mapped[int] = mapped_column(BigInteger)
    tax_minor: Mapped[int] = mapped_column(BigInteger)
    total_minor: Mapped[int] = mapped_column(BigInteger)
    # outcome=refund: the refund through the processor that took the payment.
    refund_id: Mapped[str | None] = mapped_column(String(40))
    refund_status: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime]


class CreditNoteLine(Base):
    __tablename__ = "credit_note_lines"

    id: Mapped[str] = id_column()
    credit_note_id: Mapped[str] = mapped_column(ForeignKey("credit_notes.id"), index=True)
    # None when the note credits an amount rather than specific lines.
    invoice_line_id: Mapped[str | None] = mapped_column(ForeignKey("invoice_lines.id"), index=True)
    description: Mapped[str] = mapped_column(String(500))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    tax_minor: Mapped[int] = mapped_column(BigInteger)


class BalanceTransaction(Base):
    """Account credit ledger per currency: positive adds credit, negative consumes it.

    The balance is the sum per (account, currency) and never goes below zero.
    """

    __tablename__ = "balance_transactions"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('credit_note', 'refund_failed', 'invoice_applied', 'invoice_voided', "
            "'adjustment', 'overpayment', 'refunded')",
            name="kind",
        ),
    )

    id: Mapped[str] = id_column()
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    credit_note_id: Mapped[str | None] = mapped_column(ForeignKey("credit_notes.id"))
    invoice_id: Mapped[str | None] = mapped_column(ForeignKey("invoices.id"))
    # An `overpayment` names the payment whose money its invoice could not take; a
    # `refunded` debit (and a `refund_failed` giving it back) the payment and its refund.
    payment_id: Mapped[str | None] = mapped_column(ForeignKey("payments.id"), index=True)
    refund_id: Mapped[str | None] = mapped_column(ForeignKey("refunds.id"))
    description: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
