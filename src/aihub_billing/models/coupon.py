"""Coupons: a percent or fixed amount (per currency) off subscription fee lines."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from aihub_billing.models.base import Base, JSONType, id_column
from aihub_billing.models.types import PreciseDecimal


class Coupon(Base):
    __tablename__ = "coupons"
    __table_args__ = (
        CheckConstraint("duration IN ('once', 'repeating', 'forever')", name="duration"),
        CheckConstraint(
            "max_redemptions IS NULL OR times_redeemed <= max_redemptions", name="redemptions"
        ),
    )

    id: Mapped[str] = id_column()
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    percent_off: Mapped[Decimal | None] = mapped_column(PreciseDecimal(9, 6))
    # Currency -> minor units off; NULL for percent coupons.
    amounts_off: Mapped[dict[str, int] | None] = mapped_column(JSONType)
    duration: Mapped[str] = mapped_column(String(16))
    duration_cycles: Mapped[int | None] = mapped_column(Integer)
    max_redemptions: Mapped[int | None] = mapped_column(Integer)
    times_redeemed: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime | None]
    # NULL = every plan.
    plan_codes: Mapped[list[str] | None] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime]


class CouponRedemption(Base):
    """An account redeemed a coupon: once per account, on whichever subscription (so a coupon
    cannot be applied again, nor swapped out and back in, to restart its duration)."""

    __tablename__ = "coupon_redemptions"
    __table_args__ = (UniqueConstraint("coupon_id", "account_id"),)

    id: Mapped[str] = id_column()
    coupon_id: Mapped[str] = mapped_column(ForeignKey("coupons.id"))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    created_at: Mapped[datetime]
