"""Errors of the subscriptions domain."""

from aihub_billing.errors import AccountRequired as AccountRequired  # one for every domain
from aihub_billing.errors import BillingError, InvalidRequest, NotFound


class SubscriptionNotFound(NotFound):
    code = "subscription_not_found"
    title = "Subscription not found"


class SubscriptionExists(BillingError):
    code = "subscription_exists"
    status = 409
    title = "The account already has an open subscription"


class InvalidTransition(BillingError):
    code = "invalid_transition"
    status = 409
    title = "The subscription's state does not allow this"


class NoChange(BillingError):
    code = "no_change"
    status = 409
    title = "The subscription is already on this plan, price and cycle"


class PaymentMethodRequired(InvalidRequest):
    code = "payment_method_required"
    title = "A paid plan without a trial needs a payment method"


class ProviderBilled(BillingError):
    code = "provider_billed"
    status = 409
    title = "The payment provider bills this subscription; cancel it and subscribe again"
