"""Errors of the credit notes and account balance domain."""

from aihub_billing.errors import BillingError, Conflict, NotFound


class InvoiceNotFound(NotFound):
    code = "invoice_not_found"
    title = "Invoice not found"


class CreditNoteNotFound(NotFound):
    code = "credit_note_not_found"
    title = "Credit note not found"


class AccountNotFound(NotFound):
    code = "account_not_found"
    title = "Account not found"


class InvoiceNotCreditable(Conflict):
    code = "invoice_not_creditable"
    title = "Only open or paid invoices take credit notes"


class RefundNotPossible(Conflict):
    code = "refund_not_possible"
    title = "The invoice was not paid through a payment processor; use outcome credit"


class BalanceInsufficient(Conflict):
    code = "balance_insufficient"
    title = "The account balance would become negative"


class CreditNoteExceedsCreditable(BillingError):
    code = "credit_note_exceeds_creditable"
    status = 422
    title = "The credit is above what remains creditable"


class InvoiceLineNotFound(BillingError):
    code = "invoice_line_not_found"
    status = 422
    title = "No such line on this invoice"


class DuplicateInvoiceLine(BillingError):
    code = "duplicate_invoice_line"
    status = 422
    title = "A line appears twice in the credit note"


class CurrencyMismatch(BillingError):
    code = "currency_mismatch"
    status = 422
    title = "The currency differs from the invoice's"
