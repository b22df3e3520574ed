"""Errors of the coupons domain."""

from aihub_billing.errors import BillingError, NotFound


class CouponNotFound(NotFound):
    code = "coupon_not_found"
    title = "Coupon not found"


class CouponExists(BillingError):
    code = "coupon_exists"
    status = 409
    title = "A coupon with this code already exists"


class CouponNotRedeemable(BillingError):
    code = "coupon_not_redeemable"
    status = 409
    title = "The coupon cannot be redeemed here"
