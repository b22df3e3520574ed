"""All ORM models, one module per aggregate, on one shared Base."""

from aihub_billing.models.account import Account, Member
from aihub_billing.models.api_key import ApiKey
from aihub_billing.models.audit import AuditEntry
from aihub_billing.models.base import Base
from aihub_billing.models.idempotency import IdempotencyRecord
from aihub_billing.models.job import Job
from aihub_billing.models.plan import Plan, PlanPrice
from aihub_billing.models.quota import QuotaNotificationTarget, QuotaOverride, QuotaViolation

__all__ = [
    "Account",
    "ApiKey",
    "AuditEntry",
    "Base",
    "IdempotencyRecord",
    "Job",
    "Member",
    "Plan",
    "PlanPrice",
    "QuotaNotificationTarget",
    "QuotaOverride",
    "QuotaViolation",
]
