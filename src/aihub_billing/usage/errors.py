"""Errors of usage metering and the model price table (their codes also appear per event)."""

from aihub_billing.errors import BillingError


class UnknownModel(BillingError):
    code = "unknown_model"
    status = 422
    title = "No price is in effect for this model at the event's time"


class TimestampInFuture(BillingError):
    code = "timestamp_in_future"
    status = 422
    title = "The event's timestamp is more than 5 minutes ahead of the clock"


class UsageNeedsAccountKey(BillingError):
    code = "usage_needs_account_key"
    status = 403
    title = "Usage is recorded with a key of the account that used it"


class ModelPriceExists(BillingError):
    code = "model_price_exists"
    status = 409
    title = "This model already has a price starting at that time"


class ModelPriceBackdated(BillingError):
    code = "model_price_backdated"
    status = 409
    title = "A new price of a priced model cannot start before the events already recorded"


class ModelPriceCurrencyMismatch(BillingError):
    code = "model_price_currency_mismatch"
    status = 409
    title = "A model's prices are all in one currency"


class InvalidStatsRange(BillingError):
    code = "invalid_stats_range"
    status = 400
    title = "`to` must be after `from`, at most 366 days apart"
