"""Errors of the test clocks domain."""

from aihub_billing.errors import BillingError, NotFound


class TestClockNotFound(NotFound):
    __test__ = False
    code = "test_clock_not_found"
    title = "Test clock not found"


class AccountAlreadyAttached(BillingError):
    code = "account_on_test_clock"
    status = 409
    title = "The account is already attached to a test clock"


class AccountHasSubscription(BillingError):
    code = "account_has_subscription"
    status = 409
    title = "Only an account without an open subscription can be attached to a test clock"


class AccountHasHistory(BillingError):
    code = "account_has_history"
    status = 409
    title = (
        "Only a fresh account can be attached to a test clock: this one has a subscription, "
        "invoices, usage, payments or credit on real time"
    )


class TimeGoesForward(BillingError):
    code = "test_clock_backwards"
    status = 409
    title = "A test clock only moves forward"


class TooManyJobs(BillingError):
    code = "test_clock_too_many_jobs"
    status = 409
    title = "Advancing would run more jobs than allowed in one step; advance in smaller steps"


class TestClocksDisabled(BillingError):
    __test__ = False
    code = "test_clocks_disabled"
    status = 409
    title = (
        "Test clocks are off in production: a simulation collects invoices with the "
        "providers' live keys, so it would charge real cards"
    )
