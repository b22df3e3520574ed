"""A fully paid invoice's document shows nothing still due, and a credit note's credit
appears in its totals."""

from __future__ import annotations

from aihub_billing.documents import render_pdf
from tests.documents.helpers import invoice, pdf_text


def test_paid_invoice_pdf_does_not_claim_the_total_is_due() -> None:
    # As stored after mark-paid: amount_due_minor stays total - balance_applied.
    doc = invoice(status="paid", amount_due_minor=124795, amount_paid_minor=124795)
    text = pdf_text(render_pdf(doc))
    assert "PAID" in text and "Amount paid $1,247.95" in text
    assert "Amount due $1,247.95" not in text, text


def test_a_credit_note_on_an_open_invoice_is_in_its_totals() -> None:
    doc = invoice(status="open", amount_due_minor=2000, amount_credited_minor=1000)
    text = pdf_text(render_pdf(doc))
    assert "Credited -$10.00" in text and "Amount due $20.00" in text, text
