"""Invoice PDFs: rendered by a job at each change of a finalized invoice, stored, streamed."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from sqlalchemy import select

from aihub_billing.invoices.service import invoices
from aihub_billing.models import InvoiceDocument
from aihub_billing.service import BillingService
from tests.api.helpers import auth
from tests.documents.helpers import pdf_text
from tests.invoices.helpers import INVOICES, advance, clocked_account, list_invoices
from tests.subscriptions.helpers import SEED_BODY, ok, owner


async def stored(billing: BillingService, invoice_id: str) -> InvoiceDocument | None:
    async with billing.db.sessions() as session:
        return (
            await session.execute(
                select(InvoiceDocument).where(InvoiceDocument.invoice_id == invoice_id)
            )
        ).scalar_one_or_none()


async def test_a_finalized_invoice_is_rendered_by_a_job_stored_and_streamed(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(invoices, "store_pdfs", True)  # the suite's config turns it off
    clock_id, _, key = await clocked_account(
        client, admin_key, "2026-01-01T00:00:00Z", name="Acme GmbH"
    )
    await ok(client, key, "/subscriptions", SEED_BODY)
    await advance(client, admin_key, clock_id, "2026-01-01T00:30:00Z")
    [draft] = await list_invoices(client, key)
    # A draft has no stored PDF; asking renders one now, marked as a draft.
    assert await stored(billing, draft["id"]) is None
    shown = await client.get(f"{INVOICES}/{draft['id']}/pdf", headers=auth(key))
    assert shown.status_code == 200 and shown.headers["content-type"] == "application/pdf"
    assert "DRAFT" in pdf_text(shown.content)

    ran = await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")
    assert ("invoices.render_pdf", "2026-01-01T01:00:00Z") in ran
    row = await stored(billing, draft["id"])
    assert row is not None and row.content.startswith(b"%PDF")
    assert row.sha256 == hashlib.sha256(row.content).hexdigest()
    shown = await client.get(f"{INVOICES}/{draft['id']}/pdf", headers=auth(key))
    assert shown.content == row.content  # the stored one, not a new rendering
    assert 'filename="TEST-INV-2026-000001.pdf"' in shown.headers["content-disposition"]
    text = pdf_text(shown.content)
    for expected in ("TEST-INV-2026-000001", "Acme GmbH", "$29.99", "January 1, 2026"):
        assert expected in text, expected

    # Other locales are rendered on request.
    german = pdf_text(
        (await client.get(f"{INVOICES}/{draft['id']}/pdf?locale=de_DE", headers=auth(key))).content
    )
    assert "Rechnung" in german and "29,99" in german and "1. Januar 2026" in german
    chinese = await client.get(
        f"{INVOICES}/{draft['id']}/pdf?locale=zh_CN&template=compact", headers=auth(key)
    )
    assert "发票" in pdf_text(chinese.content) and "2026年1月1日" in pdf_text(chinese.content)

    # Paid out of band: the next rendering says so and replaces the stored one.
    await ok(client, admin_key, f"/invoices/{draft['id']}/mark-paid")
    await advance(client, admin_key, clock_id, "2026-01-01T03:00:00Z")
    row = await stored(billing, draft["id"])
    assert row is not None and "PAID" in pdf_text(row.content)


async def test_pdf_refusals_are_problems_and_other_accounts_invoices_are_not_found(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    _, _, key = await clocked_account(client, admin_key, "2026-01-01T00:00:00Z")
    await ok(client, key, "/subscriptions", SEED_BODY)
    await ok(client, admin_key, "/invoices/generate", {})
    [draft] = await list_invoices(client, key)
    bad_locale = await client.get(f"{INVOICES}/{draft['id']}/pdf?locale=xx_YY", headers=auth(key))
    assert bad_locale.status_code == 400, bad_locale.text
    assert bad_locale.headers["content-type"] == "application/problem+json"
    assert bad_locale.json()["code"] == "unsupported_locale"
    bad_template = await client.get(
        f"{INVOICES}/{draft['id']}/pdf?template=../../etc/passwd", headers=auth(key)
    )
    assert bad_template.status_code == 400 and bad_template.json()["code"] == "unknown_template"
    _, other = await owner(client, admin_key)
    hidden = await client.get(f"{INVOICES}/{draft['id']}/pdf", headers=auth(other))
    assert hidden.status_code == 404
