"""A credit note's refund that the provider fails or cancels, at once or later: the money the
note owes the customer goes to the account balance (it never lands nowhere), each refund of
the note knows its note, and what the note still counts as refunded is what is."""

from __future__ import annotations

from typing import Any

import httpx

from aihub_billing.models import BalanceTransaction, RefundRecord
from aihub_billing.service import BillingService
from tests.creditnotes.helpers import balance_of, credit, credited, get, make_invoice, owner
from tests.creditnotes.test_refunds import paid_through
from tests.payments.fakes.paypal_server import PayPalFake
from tests.payments.fakes.stripe_server import StripeFake
from tests.payments.support import (  # noqa: F401 (fixtures)
    billing,
    paypal_fake,
    paypal_key,
    post,
    stripe_fake,
)
from tests.webhooks.test_refund_events import refund_event
from tests.webhooks.test_webhooks import rows, send_stripe


async def fail_at_stripe(
    client: httpx.AsyncClient,
    billing: BillingService,  # noqa: F811
    stripe: StripeFake,
    payment: dict[str, object],
    refund_id: str,
    event_id: str,
) -> None:
    """Stripe reports our refund `refund_id` failed (the card was closed)."""
    async with billing.db.sessions() as session:
        record = await session.get(RefundRecord, refund_id)
        assert record is not None and record.provider_refund_id is not None
        provider_id, amount = record.provider_refund_id, record.amount_minor
    failed = refund_event(payment, event_id, provider_id, amount, "refund.updated")
    failed["data"]["object"].update(status="failed", failure_reason="expired_or_canceled_card")
    stripe.refunds[provider_id]["status"] = "failed"
    assert (await send_stripe(client, failed)).status_code == 200
    await billing.worker().drain()


async def refunded_400_of_1000(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,  # noqa: F811
    stripe: StripeFake,
) -> tuple[str, str, str, dict[str, Any], dict[str, Any]]:
    """An account, its invoice of 1,000 paid at Stripe, and a refund note of 400 on it:
    (account id, owner key, invoice id, payment, note)."""
    account, key = await owner(client, admin_key)
    inv, _ = await make_invoice(billing, account, [(1000, None)], status="open")
    payment = await paid_through(client, key, "stripe", stripe, inv, 1000)
    note = await credited(client, key, inv, {"outcome": "refund", "amount_minor": 400})
    assert (note["refund_status"], note["refunded_minor"]) == ("succeeded", 400)
    return account, key, inv, payment, note


async def test_a_note_refund_that_fails_later_credits_the_account_balance(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,  # noqa: F811
    stripe_fake: StripeFake,  # noqa: F811
) -> None:
    account, key, inv, payment, note = await refunded_400_of_1000(
        client, admin_key, billing, stripe_fake
    )
    assert await balance_of(client, key, account) == {}

    await fail_at_stripe(client, billing, stripe_fake, payment, note["refund_id"], "evt_f1")
    # Delivered again under another event id: still one credit.
    await fail_at_stripe(client, billing, stripe_fake, payment, note["refund_id"], "evt_f2")

    assert await balance_of(client, key, account) == {"USD": 400}
    (credit_row,) = await rows(billing, BalanceTransaction)
    assert (credit_row.kind, credit_row.credit_note_id, credit_row.amount_minor) == (
        "refund_failed",
        note["id"],
        400,
    )
    found = await get(client, key, f"/credit-notes/{note['id']}")
    assert found.status_code == 200, found.text
    listed = await get(client, key, "/credit-notes", invoice_id=inv)
    for view in (found.json(), listed.json()["items"][0]):
        assert view["id"] == note["id"] and view["refund_id"] == note["refund_id"]
        assert (view["refund_status"], view["refunded_minor"]) == ("failed", 0)
        assert (view["credited_to_balance_minor"], view["applied_to_amount_due_minor"]) == (400, 0)
    # The note still credits the invoice: 600 remain creditable, not 1,000.
    over = await credit(client, key, inv, {"outcome": "credit", "amount_minor": 601})
    assert over.status_code == 422 and over.json()["code"] == "credit_note_exceeds_creditable"


async def test_a_note_refund_the_provider_refuses_at_once_goes_to_the_balance(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,  # noqa: F811
    stripe_fake: StripeFake,  # noqa: F811
    paypal_fake: PayPalFake,  # noqa: F811
) -> None:
    account, key = await owner(client, admin_key)
    inv, _ = await make_invoice(billing, account, [(1000, None)], status="open")
    await paid_through(client, key, "paypal", stripe_fake, inv, 1000)
    paypal_fake.behave("refund_failed")  # PayPal answers the refund with status FAILED
    note = await credited(client, key, inv, {"outcome": "refund", "amount_minor": 300})
    assert (note["refund_status"], note["refunded_minor"]) == ("failed", 0)
    assert note["credited_to_balance_minor"] == 300
    assert await balance_of(client, key, account) == {"USD": 300}
    assert paypal_fake.schema_violations == []


async def test_a_note_refund_that_failed_does_not_hide_a_direct_refund(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,  # noqa: F811
    stripe_fake: StripeFake,  # noqa: F811
) -> None:
    account, key, inv, payment, note = await refunded_400_of_1000(
        client, admin_key, billing, stripe_fake
    )
    await fail_at_stripe(client, billing, stripe_fake, payment, note["refund_id"], "evt_f1")
    # 500 go back straight through the payment: 400 to the balance + 500 refunded leave 100.
    direct = await post(client, key, f"/payments/{payment['id']}/refund", {"amount_minor": 500})
    assert direct.status_code in (200, 201), direct.text
    over = await credit(client, key, inv, {"outcome": "credit", "amount_minor": 101})
    assert over.status_code == 422 and over.json()["code"] == "credit_note_exceeds_creditable"
    last = await credited(client, key, inv, {"outcome": "credit", "amount_minor": 100})
    assert last["credited_to_balance_minor"] == 100


async def test_a_note_refunded_through_two_payments_knows_both_refunds(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,  # noqa: F811
    stripe_fake: StripeFake,  # noqa: F811
) -> None:
    account, key = await owner(client, admin_key)
    inv, _ = await make_invoice(billing, account, [(1000, None)], status="open")
    first = await paid_through(client, key, "stripe", stripe_fake, inv, 600)
    second = await paid_through(client, key, "stripe", stripe_fake, inv, 400)
    note = await credited(client, key, inv, {"outcome": "refund", "amount_minor": 1000})
    refunds = [r for r in await rows(billing, RefundRecord) if r.credit_note_id == note["id"]]
    assert sorted(r.amount_minor for r in refunds) == [400, 600]
    other = next(r for r in refunds if r.id != note["refund_id"])
    paid = first if other.payment_id == first["id"] else second

    # The refund the note does not name fails: the view and the balance both see it.
    await fail_at_stripe(client, billing, stripe_fake, paid, other.id, "evt_f1")
    view = (await get(client, key, f"/credit-notes/{note['id']}")).json()
    assert view["refunded_minor"] == 1000 - other.amount_minor
    assert view["credited_to_balance_minor"] == other.amount_minor
    assert view["refund_status"] == "partially_failed"
    assert await balance_of(client, key, account) == {"USD": other.amount_minor}
