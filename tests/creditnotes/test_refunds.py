"""Credit notes with outcome `refund` on paid invoices, refunded through the payments service
against the local Stripe and PayPal fakes, on SQLite and PostgreSQL; and refunds of an
invoice's payment, which never pay back what its credit notes gave back already."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

import aihub_billing.payments.service as payments_service
from aihub_billing.models import CreditNote, Payment, RefundRecord
from aihub_billing.service import BillingService
from tests.creditnotes.helpers import count, credit, credited, make_invoice, owner
from tests.payments.fakes.paypal_server import PayPalFake
from tests.payments.fakes.stripe_server import StripeFake
from tests.payments.support import (  # noqa: F401 (fixtures)
    billing,
    new_intent,
    paypal_fake,
    paypal_key,
    post,
    stripe_fake,
)

PROVIDERS = ["stripe", "paypal"]


async def paid_through(
    client: httpx.AsyncClient,
    key: str,
    provider: str,
    stripe: StripeFake,
    invoice_id: str,
    amount: int,
) -> dict[str, Any]:
    """A payment of the invoice at the provider, confirmed (captured)."""
    created = await new_intent(client, key, provider, stripe, amount, invoice_id=invoice_id)
    confirmed = await post(client, key, f"/payments/{created['id']}/confirm")
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "succeeded"
    payment: dict[str, Any] = confirmed.json()
    return payment


def refunds_seen(fake: StripeFake | PayPalFake, provider: str) -> list[tuple[int, str]]:
    """(amount in minor units, idempotency key) of each refund call the fake received."""
    seen = []
    for method, path, headers, body in fake.requests:
        if provider == "stripe" and method == "POST" and path == "/v1/refunds":
            seen.append((int(body["amount"]), headers.get("idempotency-key", "")))
        if provider == "paypal" and method == "POST" and path.endswith("/refund"):
            value = Decimal(body["amount"]["value"])
            seen.append((int(value * 100), headers.get("paypal-request-id", "")))
    return seen


def fake_of(provider: str, stripe: StripeFake, paypal: PayPalFake) -> StripeFake | PayPalFake:
    return stripe if provider == "stripe" else paypal


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_refund_credit_note_refunds_through_the_processor_that_was_paid(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,  # noqa: F811
    provider: str,
    stripe_fake: StripeFake,  # noqa: F811
    paypal_fake: PayPalFake,  # noqa: F811
) -> None:
    fake = fake_of(provider, stripe_fake, paypal_fake)
    account, key = await owner(client, admin_key)
    inv, (line,) = await make_invoice(billing, account, [(1000, Decimal("0.2"))], status="open")
    payment = await paid_through(client, key, provider, stripe_fake, inv, 1200)

    note = await credited(
        client,
        key,
        inv,
        {"outcome": "refund", "lines": [{"invoice_line_id": line, "amount_minor": 500}]},
    )
    assert (note["total_minor"], note["refunded_minor"], note["credited_to_balance_minor"]) == (
        600,
        600,
        0,
    )
    assert note["refund_status"] == "succeeded"
    key_one = f"refund:{payment['id']}-refund-0:600:v2"
    assert refunds_seen(fake, provider) == [(600, key_one)]
    async with billing.db.sessions() as session:
        refund = await session.get(RefundRecord, note["refund_id"])
        assert refund is not None and refund.payment_id == payment["id"]
        assert refund.amount_minor == 600 and refund.provider_refund_id in fake.refunds
        row = await session.get(Payment, payment["id"])
        assert row is not None and row.refunded_minor == 600

    rest = await credited(client, key, inv, {"outcome": "refund", "amount_minor": 600})
    assert rest["refunded_minor"] == 600
    assert refunds_seen(fake, provider) == [
        (600, key_one),
        (600, f"refund:{payment['id']}-refund-1:600:v2"),
    ]
    over = await credit(client, key, inv, {"outcome": "refund", "amount_minor": 1})
    assert over.status_code == 422 and over.json()["code"] == "credit_note_exceeds_creditable"
    assert len(fake.refunds) == 2
    if provider == "paypal":
        assert paypal_fake.schema_violations == []


async def test_a_refund_above_what_was_paid_through_the_processor_is_refused(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,  # noqa: F811
    stripe_fake: StripeFake,  # noqa: F811
) -> None:
    account, key = await owner(client, admin_key)
    # 1200 invoiced, 1000 of it paid at Stripe (the rest, say, from the balance).
    inv, _ = await make_invoice(
        billing, account, [(1000, Decimal("0.2"))], status="open", balance_applied_minor=200
    )
    await paid_through(client, key, "stripe", stripe_fake, inv, 1000)
    refused = await credit(client, key, inv, {"outcome": "refund", "amount_minor": 1100})
    assert refused.status_code == 409 and refused.json()["code"] == "refund_not_possible"
    assert stripe_fake.refunds == {} and await count(billing, CreditNote) == 0
    # The credit outcome works for the same amount.
    note = await credited(client, key, inv, {"outcome": "credit", "amount_minor": 1100})
    assert note["credited_to_balance_minor"] == 1100 and note["number"] == "CN-2026-000001"


async def test_a_provider_outage_rolls_the_credit_note_back(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,  # noqa: F811
    stripe_fake: StripeFake,  # noqa: F811
) -> None:
    account, key = await owner(client, admin_key)
    inv, _ = await make_invoice(billing, account, [(1000, None)], status="open")
    await paid_through(client, key, "stripe", stripe_fake, inv, 1000)
    stripe_fake.behave("5xx", "5xx", "5xx")
    down = await credit(client, key, inv, {"outcome": "refund", "amount_minor": 400})
    assert down.status_code == 503 and down.json()["code"] == "provider_unavailable"
    assert await count(billing, CreditNote) == 0 and await count(billing, RefundRecord) == 0
    again = await credited(client, key, inv, {"outcome": "refund", "amount_minor": 400})
    assert again["number"] == "CN-2026-000001" and len(stripe_fake.refunds) == 1


async def test_a_payment_refunded_directly_is_not_credited_again(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,  # noqa: F811
    stripe_fake: StripeFake,  # noqa: F811
) -> None:
    account, key = await owner(client, admin_key)
    inv, _ = await make_invoice(billing, account, [(1000, Decimal("0.2"))], status="open")
    payment = await paid_through(client, key, "stripe", stripe_fake, inv, 1200)
    # 700 of the 1,200 paid go back through POST /payments/{id}/refund, outside credit notes.
    refunded = await post(client, key, f"/payments/{payment['id']}/refund", {"amount_minor": 700})
    assert refunded.status_code in (200, 201), refunded.text
    # Only what the customer still has paid is creditable: crediting the whole invoice to the
    # balance would pay the 700 back a second time.
    over = await credit(client, key, inv, {"outcome": "credit", "amount_minor": 1200})
    assert over.status_code == 422 and over.json()["code"] == "credit_note_exceeds_creditable"
    assert await count(billing, CreditNote) == 0
    note = await credited(client, key, inv, {"outcome": "credit", "amount_minor": 500})
    assert note["credited_to_balance_minor"] == 500
    assert (await credit(client, key, inv, {"amount_minor": 1})).status_code == 422
    # A refund through a credit note is not counted twice: it is the note's own.
    inv2, _ = await make_invoice(billing, account, [(1000, None)], status="open")
    await paid_through(client, key, "stripe", stripe_fake, inv2, 1000)
    await credited(client, key, inv2, {"outcome": "refund", "amount_minor": 400})
    rest = await credited(client, key, inv2, {"outcome": "credit", "amount_minor": 600})
    assert rest["credited_to_balance_minor"] == 600


def _pg_only(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("a race between PostgreSQL sessions (SQLite has one writer)")


async def test_a_refund_after_a_full_credit_note_is_refused(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,  # noqa: F811
    stripe_fake: StripeFake,  # noqa: F811
) -> None:
    account, key = await owner(client, admin_key)
    inv, _ = await make_invoice(billing, account, [(1000, None)], status="open")
    payment = await paid_through(client, key, "stripe", stripe_fake, inv, 1000)
    note = await credited(client, key, inv, {"outcome": "credit", "amount_minor": 600})
    assert note["credited_to_balance_minor"] == 600
    # The balance holds 600 of the 1000 paid: a refund may pay back only the other 400.
    whole = await post(client, key, f"/payments/{payment['id']}/refund", {})
    assert whole.status_code == 409, whole.text
    assert whole.json()["code"] == "refund_exceeds_payment"
    assert not stripe_fake.refunds and await count(billing, RefundRecord) == 0
    rest = await post(client, key, f"/payments/{payment['id']}/refund", {"amount_minor": 400})
    assert rest.status_code == 201, rest.text
    more = await post(client, key, f"/payments/{payment['id']}/refund", {"amount_minor": 1})
    assert more.status_code == 409 and more.json()["code"] == "refund_exceeds_payment"


async def test_a_credit_note_racing_a_refund_never_returns_the_payment_twice(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,  # noqa: F811
    stripe_fake: StripeFake,  # noqa: F811
    database_url: str,
) -> None:
    _pg_only(database_url)
    for _ in range(3):  # the two requests interleave differently from run to run
        account, key = await owner(client, admin_key)
        inv, _ = await make_invoice(billing, account, [(1000, None)], status="open")
        payment = await paid_through(client, key, "stripe", stripe_fake, inv, 1000)
        note, refund = await asyncio.gather(
            credit(client, key, inv, {"outcome": "credit", "amount_minor": 1000}),
            post(client, key, f"/payments/{payment['id']}/refund", {}),
        )
        # They take turns, and the later one finds the 1000 given back already.
        assert sorted([note.status_code, refund.status_code]) in ([201, 409], [201, 422])
        given = note.json()["credited_to_balance_minor"] if note.status_code == 201 else 0
        given += refund.json()["amount_minor"] if refund.status_code == 201 else 0
        assert given == 1000, (note.text, refund.text)


async def test_a_refund_concurrent_with_a_refund_note_is_counted_on_the_payment(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,  # noqa: F811
    stripe_fake: StripeFake,  # noqa: F811
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The note reads the invoice's payments before it refunds one of them: the payment's
    `refunded_minor` it updates must be the row as the direct refund left it, not as read."""
    _pg_only(database_url)
    account, key = await owner(client, admin_key)
    inv, _ = await make_invoice(billing, account, [(1000, None)], status="open")
    payment = await paid_through(client, key, "stripe", stripe_fake, inv, 1000)

    async def provider_latency(*_: Any) -> None:
        await asyncio.sleep(0.5)  # the direct refund holds its locks meanwhile

    guards = [*payments_service.before_refund, provider_latency]  # direct refunds only
    monkeypatch.setattr(payments_service, "before_refund", guards)

    async def note_a_moment_later() -> httpx.Response:
        await asyncio.sleep(0.15)
        return await credit(client, key, inv, {"outcome": "refund", "amount_minor": 500})

    direct, note = await asyncio.gather(
        post(client, key, f"/payments/{payment['id']}/refund", {"amount_minor": 300}),
        note_a_moment_later(),
    )
    assert direct.status_code == 201, direct.text
    assert note.status_code == 201, note.text
    async with billing.db.sessions() as session:
        row = await session.get(Payment, payment["id"])
        refunded = await session.execute(
            select(func.sum(RefundRecord.amount_minor)).where(
                RefundRecord.payment_id == payment["id"], RefundRecord.status == "succeeded"
            )
        )
    assert refunded.scalar_one() == 800
    assert row is not None and row.refunded_minor == 800
