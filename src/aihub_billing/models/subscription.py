"""Subscriptions (one open per account) and their append-only history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, false, text
from sqlalchemy.orm import Mapped, mapped_column

from aihub_billing.models.base import Base, id_column

SUBSCRIPTION_STATUSES = ("trialing", "active", "past_due", "paused", "canceled", "incomplete")


class Subscription(Base):
    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint(
            "status IN ('trialing', 'active', 'past_due', 'paused', 'canceled', 'incomplete')",
            name="status",
        ),
        # At most one subscription per account that is not canceled, enforced by the database.
        Index(
            "uq_subscriptions_open_account",
            "account_id",
            unique=True,
            sqlite_where=text("status != 'canceled'"),
            postgresql_where=text("status <> 'canceled'"),
        ),
        # Period close and the scheduler look subscriptions up by status.
        Index("ix_subscriptions_status", "status"),
    )

    id: Mapped[str] = id_column()
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id"))
    price_id: Mapped[str] = mapped_column(ForeignKey("plan_prices.id"))
    status: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    # Periods are anchor + N intervals; a change of billing cycle starts a new anchor.
    billing_anchor: Mapped[datetime]
    current_period_start: Mapped[datetime]
    current_period_end: Mapped[datetime]
    # End of the last period whose fee was recorded (a paused period is not billed).
    billed_through: Mapped[datetime | None]
    trial_start: Mapped[datetime | None]
    trial_end: Mapped[datetime | None]
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    canceled_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    paused_at: Mapped[datetime | None]
    # A change scheduled for the period end (a downgrade by default).
    pending_plan_id: Mapped[str | None] = mapped_column(ForeignKey("plans.id"))
    pending_price_id: Mapped[str | None] = mapped_column(ForeignKey("plan_prices.id"))
    coupon_id: Mapped[str | None] = mapped_column(ForeignKey("coupons.id"))
    # Fee lines the coupon still discounts; NULL = forever.
    coupon_cycles_left: Mapped[int | None] = mapped_column(Integer)
    setup_fee_billed: Mapped[bool] = mapped_column(Boolean, default=False)
    payment_provider: Mapped[str | None] = mapped_column(String(16))
    payment_method_id: Mapped[str | None] = mapped_column(String(255))
    # The provider-side subscription (Stripe sub_…, PayPal I-…) whose webhooks update this one.
    provider_subscription_id: Mapped[str | None] = mapped_column(String(255), index=True)
    # The provider bills it (its price maps to a provider price): no local fees or invoices.
    provider_billed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # When the provider set the newest status applied here (its event's creation time):
    # providers deliver out of order, and an older status arriving late is ignored.
    provider_status_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SubscriptionEvent(Base):
    """One row per change of a subscription, never updated."""

    __tablename__ = "subscription_events"

    id: Mapped[str] = id_column()
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    type: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    from_plan_id: Mapped[str | None] = mapped_column(String(40))
    to_plan_id: Mapped[str] = mapped_column(String(40))
    # The price after the change (None on rows older than the column): which overage rates
    # a period was on when its invoice is refreshed or adjusted after the price moved on.
    to_price_id: Mapped[str | None] = mapped_column(String(40))
    data: Mapped[dict[str, Any]]
    actor_key_id: Mapped[str | None] = mapped_column(String(40))
    request_id: Mapped[str | None] = mapped_column(String(64))
