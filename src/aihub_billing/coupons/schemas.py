"""Coupons as the API reads and returns them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aihub_billing.kit.clock import TimeInRange, ensure_utc
from aihub_billing.kit.money import JsonDecimal, normalize_currency

Duration = Literal["once", "repeating", "forever"]
MAX_INT32 = 2**31 - 1  # the INTEGER columns' bound on PostgreSQL


class CouponCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    name: str | None = Field(default=None, max_length=200)
    percent_off: JsonDecimal | None = Field(default=None, gt=0, le=100, decimal_places=6)
    amounts_off: dict[str, Annotated[int, Field(strict=True, gt=0, le=10**15)]] | None = Field(
        default=None, description="Currency -> minor units off each fee line"
    )
    duration: Duration = "once"
    duration_cycles: int | None = Field(
        strict=True,
        default=None,
        ge=1,
        le=1200,
        description="Fee lines discounted, for `repeating`",
    )
    max_redemptions: int | None = Field(strict=True, default=None, ge=1, le=MAX_INT32)
    expires_at: TimeInRange | None = None
    # A plan's code (plans/schemas.py): anything else would never match a plan.
    plan_codes: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]] | None = Field(
        default=None, max_length=100, description="null = every plan"
    )

    @field_validator("amounts_off")
    @classmethod
    def _currencies(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("amounts_off needs at least one currency")
        normalized = {normalize_currency(k): v for k, v in value.items()}
        if len(normalized) != len(value):
            raise ValueError("a currency appears twice")
        return normalized

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return None if value is None else ensure_utc(value)

    @model_validator(mode="after")
    def _consistent(self) -> CouponCreate:
        if (self.percent_off is None) == (self.amounts_off is None):
            raise ValueError("give exactly one of percent_off and amounts_off")
        if (self.duration == "repeating") != (self.duration_cycles is not None):
            raise ValueError("duration_cycles is required for, and only for, 'repeating'")
        return self


class Coupon(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    code: str
    name: str | None
    percent_off: JsonDecimal | None
    amounts_off: dict[str, int] | None
    duration: Duration
    duration_cycles: int | None
    max_redemptions: int | None
    times_redeemed: int
    expires_at: datetime | None
    plan_codes: list[str] | None
    status: str
    created_at: datetime
