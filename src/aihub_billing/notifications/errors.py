"""Errors of outbound notifications shown to API callers."""

from __future__ import annotations

from aihub_billing.errors import BillingError


class WebhookUrlNotAllowed(BillingError):
    code = "webhook_url_not_allowed"
    status = 422
    title = "The webhook URL's host is not a public address"
