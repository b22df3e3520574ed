"""Plans and prices as the API reads and returns them. Decimals travel as strings."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    computed_field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from aihub_billing.kit.money import JsonDecimal, minor_to_decimal, normalize_currency

Policy = Literal["block", "bill"]
NonNegativeDecimal = Annotated[JsonDecimal, Field(ge=0, max_digits=38, decimal_places=18)]
# A `bill` limit needs this overage price on every price of the plan.
OVERAGE_PRICES = (
    ("included_api_calls", "calls_policy", "overage_per_1k_calls"),
    ("included_tokens", "tokens_policy", "overage_per_1m_tokens"),
    ("included_storage_gb", "storage_policy", "overage_per_gb_month"),
)
OVERAGE_PRICE_MISSING = "overage_price_missing"


class PlanPriceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    currency: str = Field(description="ISO 4217 code")
    interval_unit: Literal["day", "month"] = "month"
    interval_count: int = Field(strict=True, default=1, ge=1, le=36500)
    amount_minor: int = Field(
        strict=True, ge=0, le=10**15, description="Price per cycle in minor units"
    )
    setup_fee_minor: int = Field(strict=True, default=0, ge=0, le=10**15)
    overage_per_1k_calls: NonNegativeDecimal | None = None
    overage_per_1m_tokens: NonNegativeDecimal | None = None
    overage_per_gb_month: NonNegativeDecimal | None = None
    stripe_price_id: str | None = Field(
        default=None,
        pattern=r"^price_[A-Za-z0-9]{1,200}$",
        description="Bill subscriptions paid at Stripe through this Stripe price",
    )
    paypal_plan_id: str | None = Field(
        default=None,
        pattern=r"^P-[A-Z0-9]{1,200}$",
        description="Bill subscriptions paid at PayPal through this PayPal billing plan",
    )

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        return normalize_currency(value)


class PlanPrice(PlanPriceCreate):
    model_config = ConfigDict(from_attributes=True, extra="ignore")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def amount(self) -> str:
        return str(minor_to_decimal(self.amount_minor, self.currency))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def billing_cycle(self) -> Literal["monthly", "yearly", "custom"]:
        if self.interval_unit == "month" and self.interval_count == 1:
            return "monthly"
        if self.interval_unit == "month" and self.interval_count == 12:
            return "yearly"
        return "custom"


class PlanLimits(BaseModel):
    """Included quotas and rate limits; null means unlimited."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    included_api_calls: int | None = Field(strict=True, default=None, ge=0, le=10**15)
    included_tokens: int | None = Field(strict=True, default=None, ge=0, le=10**18)
    # The column's NUMERIC(20, 6): a value it cannot hold is a 422 here, not a 500 at the bind.
    included_storage_gb: (
        Annotated[JsonDecimal, Field(ge=0, max_digits=20, decimal_places=6)] | None
    ) = None
    rpm_limit: int | None = Field(strict=True, default=None, ge=1, le=10**9)
    tpm_limit: int | None = Field(strict=True, default=None, ge=1, le=10**15)
    concurrency_limit: int | None = Field(strict=True, default=None, ge=1, le=10**6)
    allowed_models: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=1000, description="null = every model"
    )
    calls_policy: Policy = "block"
    tokens_policy: Policy = "block"
    storage_policy: Policy = "block"


class PlanCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    trial_days: int = Field(strict=True, default=0, ge=0, le=365)
    limits: PlanLimits = PlanLimits()
    prices: list[PlanPriceCreate] = Field(min_length=1, max_length=100)

    @field_validator("prices")
    @classmethod
    def _unique_prices(cls, prices: list[PlanPriceCreate]) -> list[PlanPriceCreate]:
        keys = [(p.currency, p.interval_unit, p.interval_count) for p in prices]
        if len(set(keys)) != len(keys):
            raise ValueError("two prices for the same currency and billing cycle")
        return prices

    @model_validator(mode="after")
    def _billed_limits_have_prices(self) -> PlanCreate:
        problem = missing_overage_price(self.limits, self.prices)
        if problem is not None:
            raise PydanticCustomError(OVERAGE_PRICE_MISSING, problem)
        return self


def missing_overage_price(limits: PlanLimits, prices: Sequence[PlanPriceCreate]) -> str | None:
    """Why the plan would admit usage past a `bill` limit that no invoice bills (SPEC §3:
    `bill` invoices the overage at the plan's overage price), or None when it would not."""
    for limit, policy, overage in OVERAGE_PRICES:
        if getattr(limits, policy) != "bill" or getattr(limits, limit) is None:
            continue  # blocked, or no limit to go past
        for price in prices:
            if getattr(price, overage) is None:
                cycle = f"{price.interval_count} {price.interval_unit}(s)"
                return (
                    f"{policy} is bill but the {price.currency} price every {cycle} has no "
                    f"{overage}: usage past {limit} would be admitted and never invoiced"
                )
    return None


class PlanUpdate(BaseModel):
    """A new version of the plan: omitted fields keep their values; `prices` replaces all."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    trial_days: int | None = Field(strict=True, default=None, ge=0, le=365)
    limits: PlanLimits | None = None
    prices: list[PlanPriceCreate] | None = Field(default=None, min_length=1, max_length=100)

    @field_validator("prices")
    @classmethod
    def _unique_prices(cls, prices: list[PlanPriceCreate] | None) -> list[PlanPriceCreate] | None:
        return None if prices is None else PlanCreate._unique_prices(prices)


class Plan(BaseModel):
    id: str
    code: str
    version: int
    name: str
    description: str | None
    status: str
    trial_days: int
    limits: PlanLimits
    prices: list[PlanPrice]
    created_at: datetime
