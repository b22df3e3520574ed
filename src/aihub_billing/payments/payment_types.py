"""Our own provider-neutral payment types: what every PaymentProcessor speaks.

Card data never appears here: a payment method is a provider token plus brand, last4, expiry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class PaymentStatus(StrEnum):
    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    REQUIRES_CONFIRMATION = "requires_confirmation"
    REQUIRES_ACTION = "requires_action"  # 3-D Secure or a PayPal buyer approval
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


# Once there, a payment's status never changes again (refunds are counted separately).
TERMINAL_STATUSES = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.CANCELED})
# A refund that gave nothing back, and never will: failed or canceled at the provider (final).
REFUND_UNDONE_STATUSES = frozenset({"failed", "canceled"})


class EventType(StrEnum):
    """The internal event set every provider's webhooks are mapped to."""

    PAYMENT_SUCCEEDED = "payment.succeeded"
    PAYMENT_FAILED = "payment.failed"
    REFUND_SUCCEEDED = "refund.succeeded"
    REFUND_FAILED = "refund.failed"  # failed or canceled at the provider, even after success
    DISPUTE_OPENED = "dispute.opened"
    DISPUTE_CLOSED = "dispute.closed"
    SUBSCRIPTION_UPDATED = "subscription.updated"
    SUBSCRIPTION_CANCELED = "subscription.canceled"


@dataclass(frozen=True, slots=True)
class Customer:
    provider: str
    id: str  # the provider's customer id
    email: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentMethod:
    provider: str
    id: str  # the provider's token (pm_…)
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None
    customer_id: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentIntent:
    """A provider-side payment (Stripe PaymentIntent, PayPal order) as it stands now."""

    provider: str
    id: str
    status: PaymentStatus
    amount_minor: int
    currency: str
    # Set once money moved: Stripe's charge id, PayPal's capture id (refunds need it).
    charge_id: str | None = None
    client_secret: str | None = None  # Stripe: for 3-D Secure in the browser
    approval_url: str | None = None  # PayPal: where the buyer approves the order
    failure_code: str | None = None
    failure_message: str | None = None


Payment = PaymentIntent


@dataclass(frozen=True, slots=True)
class Refund:
    provider: str
    id: str
    status: str  # pending | succeeded | failed | canceled
    amount_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class Dispute:
    provider: str
    id: str
    status: str
    amount_minor: int
    currency: str
    reason: str | None = None
    payment_ref: str | None = None  # the provider id of the disputed charge/intent/capture


@dataclass(frozen=True, slots=True)
class ProviderSubscription:
    provider: str
    id: str
    status: str
    approval_url: str | None = None


@dataclass(frozen=True, slots=True)
class VerifiedWebhook:
    """A webhook whose signature checked out, before it is mapped to an internal event."""

    provider: str
    event_id: str
    type: str
    created_at: datetime | None
    body: bytes


@dataclass(frozen=True, slots=True)
class InternalEvent:
    """A provider event mapped to our event set, with the ids needed to find our rows."""

    type: EventType
    provider: str
    event_id: str
    occurred_at: datetime | None
    # Provider ids that may identify our payment (intent/order, charge/capture) or our own id.
    payment_refs: tuple[str, ...] = ()
    our_payment_id: str | None = None
    object_id: str | None = None  # refund, dispute or subscription id at the provider
    charge_id: str | None = None  # Stripe charge / PayPal capture or sale that moved the money
    amount_minor: int | None = None
    currency: str | None = None
    status: str | None = None
    reason: str | None = None
    failure_code: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# The reason of a refund learned from the provider (made there, or made by a request of ours
# whose answer was lost): the numbering of the refunds we ask for skips it, so no request
# may give it as its own reason.
PROVIDER_MADE_REFUND = "refunded at the provider"
