"""Invoices as the API returns them. Decimals travel as strings, amounts as minor units."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, computed_field

from aihub_billing.kit.clock import TimeInRange
from aihub_billing.kit.money import JsonDecimal


class InvoiceLine(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str | None = None
    position: int
    kind: str
    description: str
    invoice_item_id: str | None = None
    model: str | None = None
    period_start: datetime
    period_end: datetime
    quantity: JsonDecimal
    unit_price: JsonDecimal
    amount: JsonDecimal
    amount_minor: int
    tax_rate: JsonDecimal | None = None
    tax_minor: int


class InvoiceSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str | None = None
    account_id: str
    subscription_id: str | None
    billing_reason: str
    status: str
    number: str | None = None
    currency: str
    period_start: datetime
    period_end: datetime
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    balance_applied_minor: int
    amount_due_minor: int
    amount_paid_minor: int
    amount_credited_minor: int
    created_at: datetime | None = None
    finalized_at: datetime | None = None
    paid_at: datetime | None = None
    voided_at: datetime | None = None
    marked_uncollectible_at: datetime | None = None
    # Collection: attempts made to charge it, and when the next dunning retry runs.
    attempt_count: int = 0
    next_payment_attempt_at: datetime | None = None

    @computed_field(  # type: ignore[prop-decorator]
        description="What is still owed: amount due minus amount paid (0 once paid or void)"
    )
    @property
    def amount_remaining_minor(self) -> int:
        if self.status in ("paid", "void"):
            return 0
        return max(self.amount_due_minor - self.amount_paid_minor, 0)


class Invoice(InvoiceSummary):
    lines: list[InvoiceLine]


class UpcomingInvoice(Invoice):
    """What the next period-close invoice would hold now; not stored."""


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: str | None = Field(default=None, max_length=40)
    at: TimeInRange | None = Field(default=None, description="Default: now")


class GenerateResult(BaseModel):
    subscriptions: int = Field(description="subscriptions looked at")
    renewed: int = Field(description="overdue renewals run first")
    created: int = Field(description="invoices created")
    existing: int = Field(description="invoices that already existed (reruns)")
    empty: int = Field(description="periods with nothing to bill")
    finalized: int = Field(description="invoices finalized at once (finalize delay 0)")
    invoice_ids: list[str]


class MarkPaid(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_minor: int | None = Field(default=None, ge=1, description="Default: the amount due")
    payment_id: str | None = Field(default=None, max_length=40)
