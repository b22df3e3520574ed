"""Plans (versioned limits and policies) and their prices per currency and billing cycle."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from aihub_billing.models.base import Base, JSONType, id_column
from aihub_billing.models.types import PreciseDecimal


class Plan(Base):
    """One version of a plan. A change makes a new row; subscriptions keep their version."""

    __tablename__ = "plans"
    __table_args__ = (
        UniqueConstraint("code", "version"),
        CheckConstraint("calls_policy IN ('block', 'bill')", name="calls_policy"),
        CheckConstraint("tokens_policy IN ('block', 'bill')", name="tokens_policy"),
        CheckConstraint("storage_policy IN ('block', 'bill')", name="storage_policy"),
    )

    id: Mapped[str] = id_column()
    code: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(String(2000))
    status: Mapped[str] = mapped_column(String(16), default="active")
    trial_days: Mapped[int] = mapped_column(Integer, default=0)
    # NULL limit = unlimited.
    included_api_calls: Mapped[int | None] = mapped_column(BigInteger)
    included_tokens: Mapped[int | None] = mapped_column(BigInteger)
    included_storage_gb: Mapped[Decimal | None] = mapped_column(PreciseDecimal(20, 6))
    rpm_limit: Mapped[int | None] = mapped_column(Integer)
    tpm_limit: Mapped[int | None] = mapped_column(BigInteger)
    concurrency_limit: Mapped[int | None] = mapped_column(Integer)
    # NULL = every model allowed.
    allowed_models: Mapped[list[str] | None] = mapped_column(JSONType)
    calls_policy: Mapped[str] = mapped_column(String(8), default="block")
    tokens_policy: Mapped[str] = mapped_column(String(8), default="block")
    storage_policy: Mapped[str] = mapped_column(String(8), default="block")
    created_at: Mapped[datetime]


class PlanPrice(Base):
    """What a plan version costs in one currency for one billing cycle, overage included."""

    __tablename__ = "plan_prices"
    __table_args__ = (
        UniqueConstraint("plan_id", "currency", "interval_unit", "interval_count"),
        CheckConstraint("interval_unit IN ('day', 'month')", name="interval_unit"),
        CheckConstraint("interval_count >= 1", name="interval_count"),
        CheckConstraint("amount_minor >= 0", name="amount_minor"),
        CheckConstraint("setup_fee_minor >= 0", name="setup_fee_minor"),
    )

    id: Mapped[str] = id_column()
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id"), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    interval_unit: Mapped[str] = mapped_column(String(8))
    interval_count: Mapped[int] = mapped_column(Integer)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    setup_fee_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    # Unit prices in major units of `currency`; NULL = no overage price set.
    overage_per_1k_calls: Mapped[Decimal | None] = mapped_column(PreciseDecimal())
    overage_per_1m_tokens: Mapped[Decimal | None] = mapped_column(PreciseDecimal())
    overage_per_gb_month: Mapped[Decimal | None] = mapped_column(PreciseDecimal())
    # Provider billing: the provider's own price (Stripe price_…) or plan (PayPal P-…). A
    # subscription at that provider is then created and charged there, not invoiced here.
    stripe_price_id: Mapped[str | None] = mapped_column(String(255))
    paypal_plan_id: Mapped[str | None] = mapped_column(String(255))
