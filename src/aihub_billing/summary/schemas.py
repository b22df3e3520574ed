"""The /summary answer: the seed's shape (user_id, current_subscription, usage_this_month,
quota_status) with amounts as decimal strings and a currency, plus a forecast."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field

from aihub_billing.kit.money import JsonDecimal


class CurrentSubscription(BaseModel):
    plan_type: str = Field(description="Code of the plan the account is on now")
    status: str = Field(description="The subscription's status; 'none' on the free plan")
    days_until_renewal: int | None = Field(
        description="Whole days (rounded up) to the end of the period; null when nothing renews"
    )


class CurrencyAmount(BaseModel):
    currency: str
    amount: JsonDecimal = Field(description="Major units, rounded half-up to minor units once")


class UsageThisMonth(BaseModel):
    """API calls and their cost in the current billing period so far."""

    total_requests: int
    total_cost: JsonDecimal = Field(description="In `currency`, rounded once to minor units")
    currency: str
    costs: list[CurrencyAmount] = Field(description="Every currency usage was priced in")
    period_start: datetime


class QuotaStatus(BaseModel):
    plan_type: str
    remaining_calls: int | None = Field(description="null: no monthly call limit")
    remaining_tokens: int | None = Field(description="null: no monthly token limit")
    reset_at: datetime


class Forecast(BaseModel):
    """This period's usage carried on at its run rate so far to the end of the period."""

    period_end: datetime
    projected_requests: int
    projected_cost: JsonDecimal = Field(description="In `currency`, rounded once")
    currency: str
    projected_costs: list[CurrencyAmount]
    token_quota_runs_out_on: date | None = Field(
        description="UTC day the monthly token limit is reached at this rate; null if not "
        "within this period (or no limit)"
    )


class Summary(BaseModel):
    user_id: str = Field(description="The account")
    current_subscription: CurrentSubscription
    usage_this_month: UsageThisMonth
    quota_status: QuotaStatus
    forecast: Forecast
