"""aihub-billing: plans, metering, quota, invoices and payments for paid AI APIs."""

__version__ = "0.1.0"
