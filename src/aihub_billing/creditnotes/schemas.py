"""Credit notes and account balances as the API reads and returns them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aihub_billing.kit.money import normalize_currency

Reason = Literal["duplicate", "fraudulent", "order_change", "product_unsatisfactory", "other"]
Outcome = Literal["refund", "credit"]
MAX_MINOR = 10**15


class CreditNoteLineCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    invoice_line_id: str = Field(min_length=1, max_length=40)
    amount_minor: int | None = Field(
        strict=True,
        default=None,
        gt=0,
        le=MAX_MINOR,
        description="Before tax; default: all that remains",
    )


class CreditNoteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason
    memo: str | None = Field(default=None, max_length=1000)
    outcome: Outcome
    lines: list[CreditNoteLineCreate] | None = Field(default=None, min_length=1, max_length=500)
    amount_minor: int | None = Field(
        strict=True,
        default=None,
        gt=0,
        le=MAX_MINOR,
        description="A tax-inclusive amount against the invoice",
    )
    currency: str | None = Field(default=None, description="If given, must be the invoice's")

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str | None) -> str | None:
        return None if value is None else normalize_currency(value)

    @model_validator(mode="after")
    def _one_way(self) -> CreditNoteCreate:
        if (self.lines is None) == (self.amount_minor is None):
            raise ValueError("give exactly one of lines and amount_minor")
        return self


class CreditNoteLine(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    invoice_line_id: str | None
    description: str
    amount_minor: int
    tax_minor: int


class CreditNote(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    number: str
    invoice_id: str
    account_id: str
    reason: Reason
    memo: str | None
    outcome: Outcome
    currency: str
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    refund_id: str | None
    refund_status: str | None
    created_at: datetime
    lines: list[CreditNoteLine] = Field(default_factory=list)
    # How the note landed: off the invoice's amount due, to the balance, refunded.
    applied_to_amount_due_minor: int | None = None
    credited_to_balance_minor: int | None = None
    refunded_minor: int | None = None


class BalanceTransaction(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    account_id: str
    currency: str
    amount_minor: int
    kind: str
    credit_note_id: str | None
    invoice_id: str | None
    # The payment of an `overpayment`, of a `refunded` debit and the `refund_failed` giving
    # one back; those two name the refund too.
    payment_id: str | None = None
    refund_id: str | None = None
    description: str | None
    created_at: datetime


class CurrencyBalance(BaseModel):
    currency: str
    amount_minor: int


class AccountBalance(BaseModel):
    account_id: str
    balances: list[CurrencyBalance]
    recent_transactions: list[BalanceTransaction]


class BalanceAdjustmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_minor: int = Field(
        strict=True, ge=-MAX_MINOR, le=MAX_MINOR, description="Signed, not zero"
    )
    currency: str
    description: str = Field(min_length=1, max_length=500)

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        return normalize_currency(value)

    @field_validator("amount_minor")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("an adjustment of zero changes nothing")
        return value
