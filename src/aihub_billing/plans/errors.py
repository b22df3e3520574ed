"""Errors of the plan catalog."""

from aihub_billing.errors import BillingError, NotFound


class PlanNotFound(NotFound):
    code = "plan_not_found"
    title = "Plan not found"


class PlanExists(BillingError):
    code = "plan_exists"
    status = 409
    title = "A plan with this code already exists"


class PlanArchived(BillingError):
    code = "plan_archived"
    status = 409
    title = "The plan is archived: no new subscriptions"


class PriceNotFound(NotFound):
    code = "price_not_found"
    title = "The plan has no price for this currency and billing cycle"
