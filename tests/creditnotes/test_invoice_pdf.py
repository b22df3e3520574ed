"""A credit note changes an open invoice's amount due: its stored PDF is rendered again, and
the document shows the credit, so its totals add up."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from aihub_billing.invoices.service import invoices
from aihub_billing.models import Job
from aihub_billing.service import BillingService
from tests.api.helpers import auth
from tests.creditnotes.helpers import credited, make_invoice, owner
from tests.documents.helpers import pdf_text
from tests.invoices.helpers import INVOICES


async def test_credit_note_on_open_invoice_is_shown_on_its_pdf(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    inv, _ = await make_invoice(billing, account, [(3000, None)], status="open")
    note = await credited(client, key, inv, {"amount_minor": 1000})
    assert note["applied_to_amount_due_minor"] == 1000
    shown = await client.get(f"{INVOICES}/{inv}/pdf", headers=auth(key))
    assert shown.status_code == 200
    text = pdf_text(shown.content)
    assert "Total $30.00" in text and "Amount due $20.00" in text
    # The $10.00 credited is nowhere on the document: Total - paid - balance != Amount due.
    assert "$10.00" in text, text


async def test_credit_note_enqueues_the_stored_pdf_rendering(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(invoices, "store_pdfs", True)
    account, key = await owner(client, admin_key)
    inv, _ = await make_invoice(billing, account, [(3000, None)], status="open")
    await credited(client, key, inv, {"amount_minor": 1000})
    async with billing.db.sessions() as session:
        jobs = (
            await session.execute(select(Job.name).where(Job.name == "invoices.render_pdf"))
        ).all()
    # README: "Every change of a finalized invoice ... enqueues invoices.render_pdf".
    assert jobs, "no render job after a credit note changed the open invoice"
