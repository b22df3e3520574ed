"""Errors of the payments domain; provider failures are translated into these at the adapter."""

from __future__ import annotations

from aihub_billing.errors import AccountRequired as AccountRequired  # one for every domain
from aihub_billing.errors import BillingError, Conflict, InvalidRequest, NotFound


class PaymentDeclined(BillingError):
    code = "payment_declined"
    status = 402
    title = "The payment was declined"
    commits = True  # the failed attempt is recorded on the payment


class ProviderUnavailable(BillingError):
    """Transient: connection errors, timeouts, 5xx and rate limits, after our retries."""

    code = "provider_unavailable"
    status = 503
    title = "The payment provider is unavailable; retry later"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": "5"})


class ProviderError(BillingError):
    code = "provider_error"
    status = 502
    title = "The payment provider refused the request"


class ProviderNotConfigured(InvalidRequest):
    code = "provider_not_configured"
    title = "This payment provider is not enabled"


class ProviderAmountNotSupported(BillingError):
    code = "provider_amount_not_supported"
    status = 422
    title = "The payment provider cannot take this amount in this currency"


class ProviderOperationUnsupported(InvalidRequest):
    code = "provider_operation_unsupported"
    title = "The payment provider does not support this operation"


class WebhookSignatureInvalid(BillingError):
    code = "webhook_signature_invalid"
    status = 400
    title = "The webhook signature is missing, invalid or too old"


class PaymentNotFound(NotFound):
    code = "payment_not_found"
    title = "Payment not found"


class PaymentMethodNotFound(NotFound):
    code = "payment_method_not_found"
    title = "Payment method not found"


class PaymentNotConfirmable(Conflict):
    code = "payment_not_confirmable"
    title = "The payment cannot be confirmed in its current status"


class PaymentNotRefundable(Conflict):
    code = "payment_not_refundable"
    title = "The payment has not succeeded or is fully refunded"


class RefundExceedsPayment(Conflict):
    code = "refund_exceeds_payment"
    title = "The refund is larger than what remains refundable"


class PaymentCurrencyMismatch(BillingError):
    code = "currency_mismatch"
    status = 422
    title = "The currency differs from the invoice's"


class InvoiceNotPayable(Conflict):
    """The invoice takes no payment: a draft (not finalized), paid, or void one, or an open
    one with nothing left due. `open` and `uncollectible` invoices with an amount due do."""

    code = "invoice_not_payable"
    title = "The invoice takes no payment in its current status"


class PaymentExceedsAmountDue(Conflict):
    code = "payment_exceeds_amount_due"
    title = "The amount is larger than what the invoice still has due"
