"""Errors of the quota domain."""

from __future__ import annotations

from aihub_billing.errors import BillingError, NotFound, RateLimited

__all__ = [
    "EstimateAboveRateLimit",
    "ModelNotAllowed",
    "QuotaExceeded",
    "QuotaUnavailable",
    "RateLimited",
    "ReservationNotFound",
]


class QuotaExceeded(BillingError):
    code = "quota_exceeded"
    status = 402
    title = "A monthly quota of the account is used up"


class EstimateAboveRateLimit(BillingError):
    """Not a 429: no window would ever admit it, and a client would retry it forever."""

    code = "estimate_above_rate_limit"
    status = 422
    title = "The estimated tokens alone are above the tokens-per-minute limit"


class ModelNotAllowed(BillingError):
    code = "model_not_allowed"
    status = 403
    title = "The account's plan does not include this model"


class ReservationNotFound(NotFound):
    code = "reservation_not_found"
    title = "No live reservation with this id (settled, released or expired)"


class QuotaUnavailable(BillingError):
    code = "quota_unavailable"
    status = 503
    title = "The quota counters are unavailable; retry later"
