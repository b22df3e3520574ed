"""Subscriptions, their history and invoice items as the API reads and returns them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)

from aihub_billing.kit.money import JsonDecimal, normalize_currency

BillingCycle = Literal["monthly", "yearly", "custom"]
When = Literal["immediate", "period_end"]


class _Cycle(BaseModel):
    billing_cycle: BillingCycle | None = None
    interval_unit: Literal["day", "month"] | None = Field(
        default=None, description="With billing_cycle=custom: pick the plan's custom price"
    )
    interval_count: int | None = Field(strict=True, default=None, ge=1, le=36500)

    @model_validator(mode="after")
    def _custom(self) -> Any:
        if (self.interval_unit is None) != (self.interval_count is None):
            raise ValueError("give interval_unit and interval_count together")
        if self.interval_unit is not None and self.billing_cycle != "custom":
            raise ValueError("interval_unit/interval_count go with billing_cycle=custom")
        return self

    def interval(self) -> tuple[str, int] | None:
        if self.interval_unit is None or self.interval_count is None:
            return None
        return (self.interval_unit, self.interval_count)


class SubscriptionCreate(_Cycle):
    model_config = ConfigDict(extra="forbid")

    plan_type: str = Field(min_length=1, max_length=64, description="Plan code")
    billing_cycle: BillingCycle | None = "monthly"
    payment_provider: Literal["stripe", "paypal"] | None = None
    payment_method_id: str | None = Field(default=None, min_length=1, max_length=255)
    provider_subscription_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9_\-]+$",
        description="The provider-side subscription whose webhooks update this one "
        "(needs payment_provider)",
    )
    coupon: str | None = Field(default=None, max_length=64)
    currency: str | None = Field(default=None, description="ISO 4217; default the account's")
    trial_days: int | None = Field(
        strict=True, default=None, ge=0, le=365, description="Admin only"
    )
    account_id: str | None = Field(default=None, max_length=40, description="Admin keys")

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str | None) -> str | None:
        return None if value is None else normalize_currency(value)

    @model_validator(mode="after")
    def _provider_named(self) -> SubscriptionCreate:
        if self.provider_subscription_id is not None and self.payment_provider is None:
            raise ValueError("provider_subscription_id needs payment_provider")
        return self


class SubscriptionChange(_Cycle):
    model_config = ConfigDict(extra="forbid")

    plan_type: str | None = Field(default=None, min_length=1, max_length=64)
    when: When | None = Field(
        default=None, description="Default: upgrades immediately, downgrades at period end"
    )
    preview: StrictBool = Field(default=False, description="Return the lines; change nothing")
    coupon: str | None = Field(default=None, max_length=64)
    payment_provider: Literal["stripe", "paypal"] | None = None
    payment_method_id: str | None = Field(default=None, min_length=1, max_length=255)

    @model_validator(mode="after")
    def _something(self) -> SubscriptionChange:
        if self.plan_type is None and self.billing_cycle is None and self.coupon is None:
            raise ValueError("give plan_type, billing_cycle or coupon")
        return self


class SubscriptionCancel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at_period_end: StrictBool = True


class PlanRef(BaseModel):
    id: str
    code: str
    version: int
    name: str


class PendingChange(BaseModel):
    plan: PlanRef
    billing_cycle: BillingCycle
    interval_unit: str
    interval_count: int
    amount_minor: int
    effective_at: datetime


class Subscription(BaseModel):
    id: str
    account_id: str
    status: str
    plan: PlanRef
    currency: str
    billing_cycle: BillingCycle
    interval_unit: str
    interval_count: int
    amount_minor: int
    setup_fee_minor: int
    billing_anchor: datetime
    current_period_start: datetime
    current_period_end: datetime
    trial_start: datetime | None
    trial_end: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    ended_at: datetime | None
    paused_at: datetime | None
    pending_change: PendingChange | None
    coupon: str | None
    coupon_cycles_left: int | None
    payment_provider: str | None
    payment_method_id: str | None
    provider_subscription_id: str | None = None
    provider_billed: bool = False
    created_at: datetime


class InvoiceItem(BaseModel):
    """A pending invoice line; `id`/`created_at` are null in a preview (nothing is stored)."""

    model_config = ConfigDict(from_attributes=True)

    id: str | None = None
    kind: str
    description: str
    period_start: datetime
    period_end: datetime
    quantity: JsonDecimal
    unit_price: JsonDecimal
    amount: JsonDecimal = Field(description="Unrounded")
    amount_minor: int = Field(description="amount rounded once, half-up")
    currency: str
    subscription_id: str | None = None
    invoice_id: str | None = None
    created_at: datetime | None = None


class SubscriptionResult(BaseModel):
    subscription: Subscription
    invoice_items: list[InvoiceItem]


class ChangeResult(SubscriptionResult):
    preview: bool
    direction: Literal["upgrade", "downgrade", "trial", "none"]
    when: When
    effective_at: datetime


class CurrentPlan(BaseModel):
    """What the account is on now: its subscription, or the free plan when it has none."""

    account_id: str
    plan: PlanRef
    period_start: datetime
    period_end: datetime
    subscription: Subscription | None


class SubscriptionEvent(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    subscription_id: str
    account_id: str
    type: str
    at: datetime
    from_status: str | None
    to_status: str
    from_plan_id: str | None
    to_plan_id: str
    data: dict[str, Any]
    request_id: str | None
