"""Provider customers, payment methods (tokens only), payments, refunds and disputes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from aihub_billing.models.base import Base, id_column


class PaymentCustomer(Base):
    """The provider-side customer of an account, one per provider."""

    __tablename__ = "payment_customers"
    __table_args__ = (
        UniqueConstraint("account_id", "provider"),
        UniqueConstraint("provider", "provider_customer_id"),
    )

    id: Mapped[str] = id_column()
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    provider: Mapped[str] = mapped_column(String(16))
    provider_customer_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]


class PaymentSettings(Base):
    """An account's payment preferences: the provider used when a payment names none."""

    __tablename__ = "payment_settings"

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    default_provider: Mapped[str | None] = mapped_column(String(16))
    updated_at: Mapped[datetime]


class PaymentMethodRecord(Base):
    """A provider token with what may be shown: brand, last 4 digits, expiry. Never a PAN."""

    __tablename__ = "payment_methods"
    __table_args__ = (UniqueConstraint("provider", "provider_method_id"),)

    id: Mapped[str] = id_column()
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    provider: Mapped[str] = mapped_column(String(16))
    provider_method_id: Mapped[str] = mapped_column(String(255))
    brand: Mapped[str | None] = mapped_column(String(32))
    last4: Mapped[str | None] = mapped_column(String(4))
    exp_month: Mapped[int | None]
    exp_year: Mapped[int | None]
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | detached
    created_at: Mapped[datetime]
    detached_at: Mapped[datetime | None]


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("provider", "provider_payment_id"),
        Index("ix_payments_account_id_id", "account_id", "id"),
        CheckConstraint("amount_minor > 0", name="amount_minor"),
        CheckConstraint(
            "refunded_minor >= 0 AND refunded_minor <= amount_minor", name="refunded_minor"
        ),
    )

    id: Mapped[str] = id_column()
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    provider: Mapped[str] = mapped_column(String(16))
    # Stripe PaymentIntent id / PayPal order id; NULL until the provider answered.
    provider_payment_id: Mapped[str | None] = mapped_column(String(255))
    # Stripe charge id / PayPal capture id, once money moved.
    provider_charge_id: Mapped[str | None] = mapped_column(String(255), index=True)
    payment_method_id: Mapped[str | None] = mapped_column(ForeignKey("payment_methods.id"))
    invoice_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # The subscription the payment is for, named by the request or found from the invoice.
    subscription_id: Mapped[str | None] = mapped_column(ForeignKey("subscriptions.id"))
    description: Mapped[str | None] = mapped_column(String(500))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    refunded_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    # Confirmations that ended without moving money (3-D Secure, approval pending): each next
    # one is a new attempt with a new provider idempotency key.
    confirm_attempts: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(32))
    # The provider's time of the event that set `status`: older events never overwrite it.
    status_at: Mapped[datetime | None]
    failure_code: Mapped[str | None] = mapped_column(String(100))
    failure_message: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class RefundRecord(Base):
    __tablename__ = "refunds"
    __table_args__ = (
        UniqueConstraint("provider", "provider_refund_id"),
        CheckConstraint("amount_minor > 0", name="amount_minor"),
    )

    id: Mapped[str] = id_column()
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    provider: Mapped[str] = mapped_column(String(16))
    provider_refund_id: Mapped[str | None] = mapped_column(String(255))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))  # pending | succeeded | failed | canceled
    reason: Mapped[str | None] = mapped_column(String(200))
    # The credit note this refund pays out, when a note made it (a note refunded through
    # several payments has one refund per payment).
    credit_note_id: Mapped[str | None] = mapped_column(ForeignKey("credit_notes.id"), index=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class DisputeRecord(Base):
    __tablename__ = "disputes"
    __table_args__ = (UniqueConstraint("provider", "provider_dispute_id"),)

    id: Mapped[str] = id_column()
    # NULL when the disputed payment is not one of ours (still recorded, for the operator).
    payment_id: Mapped[str | None] = mapped_column(ForeignKey("payments.id"), index=True)
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    provider: Mapped[str] = mapped_column(String(16))
    provider_dispute_id: Mapped[str] = mapped_column(String(255))
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(32))  # open | closed
    outcome: Mapped[str | None] = mapped_column(String(64))  # provider's status/outcome
    reason: Mapped[str | None] = mapped_column(String(200))
    opened_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
