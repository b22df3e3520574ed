"""Errors of the invoices domain."""

from aihub_billing.errors import BillingError, InvalidRequest, NotFound


class InvoiceNotFound(NotFound):
    code = "invoice_not_found"
    title = "Invoice not found"


class InvalidInvoiceTransition(BillingError):
    code = "invoice_invalid_transition"
    status = 409
    title = "The invoice's status does not allow this"


class InvalidPaymentAmount(InvalidRequest):
    code = "invoice_invalid_amount"
    title = "The amount does not fit the invoice"


class NoUpcomingInvoice(NotFound):
    code = "no_upcoming_invoice"
    title = "The account has no subscription with a next invoice"


class AmountOutOfRange(BillingError):
    """A line whose amount no ledger column holds: a stored price times the usage, not the
    request's input, so a conflict with the stored state rather than a validation error."""

    code = "invoice_amount_out_of_range"
    status = 409
    title = "An invoice line's amount is beyond what an invoice holds"
