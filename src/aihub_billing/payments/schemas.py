"""Payments, refunds and payment methods as the API reads and returns them."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aihub_billing.kit.cards import contains_card_number
from aihub_billing.kit.money import normalize_currency
from aihub_billing.payments.payment_types import PROVIDER_MADE_REFUND

Provider = Literal["stripe", "paypal"]


class PaymentIntentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_minor: int = Field(strict=True, gt=0, le=10**12, description="Integer minor units")
    currency: str
    provider: Provider | None = Field(
        default=None,
        description="Default: the subscription's provider (when `subscription_id` or "
        "`invoice_id` names one of the account's subscriptions), else the account's "
        "default provider, else the first enabled provider",
    )
    payment_method_id: str | None = Field(
        default=None, max_length=40, description="Default: the subscription's saved method"
    )
    description: str | None = Field(default=None, max_length=500)
    invoice_id: str | None = Field(default=None, max_length=64)
    subscription_id: str | None = Field(default=None, max_length=40)
    account_id: str | None = Field(default=None, description="Operator keys only")

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        return normalize_currency(value)

    @field_validator("description")
    @classmethod
    def _no_card_number(cls, value: str | None) -> str | None:
        # Card data never enters this system, not even pasted into a free-text field.
        if value is not None and contains_card_number(value):
            raise ValueError("looks like a card number; card data is never accepted")
        return value


class PaymentConfirm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payment_method_id: str | None = Field(default=None, max_length=40)


class RefundCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_minor: int | None = Field(
        strict=True, default=None, gt=0, le=10**12, description="Default: all refundable"
    )
    reason: str | None = Field(default=None, max_length=200)

    @field_validator("reason")
    @classmethod
    def _not_reserved(cls, value: str | None) -> str | None:
        if value == PROVIDER_MADE_REFUND:
            raise ValueError("this reason is reserved for refunds made at the provider")
        return value


class NextAction(BaseModel):
    """What the customer must do: 3-D Secure with the client secret, or approve at PayPal."""

    client_secret: str | None = None
    approval_url: str | None = None


class Payment(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    account_id: str
    provider: str
    provider_payment_id: str | None
    payment_method_id: str | None
    invoice_id: str | None
    subscription_id: str | None
    description: str | None
    amount_minor: int
    currency: str
    refunded_minor: int
    status: str
    failure_code: str | None
    failure_message: str | None
    created_at: datetime
    updated_at: datetime
    next_action: NextAction | None = None


class Refund(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    payment_id: str
    provider: str
    provider_refund_id: str | None
    amount_minor: int
    currency: str
    status: str
    reason: str | None
    # The credit note this refund pays out, when a note made it.
    credit_note_id: str | None = None
    created_at: datetime


class PaymentMethodCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: Provider | None = None
    token: str = Field(
        min_length=3,
        max_length=255,
        pattern=r"^[A-Za-z0-9_\-]+$",
        description="The provider's payment method token (Stripe pm_…); never a card number",
    )
    account_id: str | None = Field(default=None, description="Operator keys only")

    @field_validator("token")
    @classmethod
    def _not_a_card_number(cls, value: str) -> str:
        # Card data never enters this system: refuse anything with a PAN-length digit run.
        if re.search(r"\d{12,19}", value) or contains_card_number(value):
            raise ValueError("pass the provider's token, never a card number")
        return value


class PaymentMethod(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    account_id: str
    provider: str
    provider_method_id: str
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None
    status: str
    created_at: datetime


class PaymentSettingsUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_provider: Provider | None = Field(
        description="Used when a payment names no provider and its subscription has none; "
        "null: the first enabled provider"
    )
    account_id: str | None = Field(default=None, description="Operator keys only")


class PaymentSettings(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    account_id: str
    default_provider: str | None
    updated_at: datetime | None
