"""All ORM models, one module per aggregate, on one shared Base."""

from aihub_billing.models.account import Account, Member
from aihub_billing.models.api_key import ApiKey
from aihub_billing.models.audit import AuditEntry
from aihub_billing.models.base import Base
from aihub_billing.models.coupon import Coupon, CouponRedemption
from aihub_billing.models.credit_note import BalanceTransaction, CreditNote, CreditNoteLine
from aihub_billing.models.idempotency import IdempotencyRecord
from aihub_billing.models.invoice import Invoice, InvoiceDocument, InvoiceLine, InvoiceSequence
from aihub_billing.models.invoice_item import InvoiceItem
from aihub_billing.models.job import Job, JobDedupeKey
from aihub_billing.models.model_price import ModelPrice
from aihub_billing.models.payment import (
    DisputeRecord,
    Payment,
    PaymentCustomer,
    PaymentMethodRecord,
    PaymentSettings,
    RefundRecord,
)
from aihub_billing.models.plan import Plan, PlanPrice
from aihub_billing.models.quota import QuotaNotificationTarget, QuotaOverride, QuotaViolation
from aihub_billing.models.subscription import Subscription, SubscriptionEvent
from aihub_billing.models.test_clock import TestClock, TestClockAccount
from aihub_billing.models.usage import (
    UsageDaily,
    UsageEvent,
    UsageEventKey,
    UsageRollupState,
    include_in_migrations,
    is_usage_partition,
)
from aihub_billing.models.webhook import WebhookEvent

__all__ = [
    "Account",
    "ApiKey",
    "AuditEntry",
    "BalanceTransaction",
    "Base",
    "Coupon",
    "CouponRedemption",
    "CreditNote",
    "CreditNoteLine",
    "DisputeRecord",
    "IdempotencyRecord",
    "Invoice",
    "InvoiceDocument",
    "InvoiceItem",
    "InvoiceLine",
    "InvoiceSequence",
    "Job",
    "JobDedupeKey",
    "Member",
    "ModelPrice",
    "Payment",
    "PaymentCustomer",
    "PaymentMethodRecord",
    "PaymentSettings",
    "Plan",
    "PlanPrice",
    "QuotaNotificationTarget",
    "QuotaOverride",
    "QuotaViolation",
    "RefundRecord",
    "Subscription",
    "SubscriptionEvent",
    "TestClock",
    "TestClockAccount",
    "UsageDaily",
    "UsageEvent",
    "UsageEventKey",
    "UsageRollupState",
    "include_in_migrations",
    "is_usage_partition",
    "WebhookEvent",
]
