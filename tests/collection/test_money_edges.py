"""Collection edges: money that arrives where its invoice cannot take it, an invoice paid by
hand during dunning or while its collection runs, and what the dunning downgrade credits
(nothing unpaid)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from aihub_billing.collection.service import CollectionService, collection
from aihub_billing.config import DunningConfig
from aihub_billing.kit.context import SYSTEM, Context
from aihub_billing.models import Invoice, Job, Payment
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.collection.test_dunning import first_invoice, stripe_customer, subscription_status
from tests.collection.test_payment_invoice_match import open_invoice
from tests.invoices.helpers import advance, list_invoices
from tests.payments.fakes.stripe_server import StripeFake
from tests.subscriptions.helpers import SEED_BODY, items_of, ok, owner


async def balance_of(client: httpx.AsyncClient, admin_key: str, account_id: str) -> int:
    response = await client.get(f"{API}/accounts/{account_id}/balance", headers=auth(admin_key))
    assert response.status_code == 200, response.text
    found = [b["amount_minor"] for b in response.json()["balances"] if b["currency"] == "USD"]
    return sum(found)


async def succeeded(
    billing: BillingService, invoice: dict[str, Any], payment_id: str, amount_minor: int
) -> None:
    """A succeeded payment of `amount_minor` for the invoice, as the provider's event or a
    customer's own payment through the API reports it to the collection hook."""
    ctx = Context(SYSTEM, billing.clock)
    async with billing.db.sessions() as session:
        now = billing.clock.now()
        payment = Payment(
            id=payment_id,
            account_id=invoice["account_id"],
            provider="stripe",
            provider_payment_id=f"pi_{payment_id}",
            invoice_id=invoice["id"],
            amount_minor=amount_minor,
            currency="USD",
            refunded_minor=0,
            confirm_attempts=0,
            status="succeeded",
            created_at=now,
            updated_at=now,
        )
        session.add(payment)
        await session.flush()
        await collection.paid(session, ctx, payment)
        await session.commit()


async def test_a_payment_arriving_after_the_invoice_was_voided_goes_to_the_balance(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    key, _, invoice = await open_invoice(client, admin_key, stripe_fake)
    await ok(client, admin_key, f"/invoices/{invoice['id']}/void")
    await succeeded(billing, invoice, "pay_after_void", 2999)
    assert (await first_invoice(client, key))["status"] == "void"
    # The customer paid 29.99: it is theirs, on the account balance, not dropped.
    assert await balance_of(client, admin_key, invoice["account_id"]) == 2999


async def test_a_second_payment_of_a_paid_invoice_goes_to_the_balance(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    key, _, invoice = await open_invoice(client, admin_key, stripe_fake)
    await succeeded(billing, invoice, "pay_first", 2999)
    await succeeded(billing, invoice, "pay_second", 2999)
    paid = await first_invoice(client, key)
    assert (paid["status"], paid["amount_paid_minor"]) == ("paid", 2999)
    assert await balance_of(client, admin_key, invoice["account_id"]) == 2999
    # Reported again (a redelivered event): credited once.
    async with billing.db.sessions() as session:
        second = await session.get(Payment, "pay_second")
        assert second is not None
        await collection.paid(session, Context(SYSTEM, billing.clock), second)
        await session.commit()
    assert await balance_of(client, admin_key, invoice["account_id"]) == 2999


async def test_an_overpayment_credits_the_excess(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    key, _, invoice = await open_invoice(client, admin_key, stripe_fake)
    await succeeded(billing, invoice, "pay_over", 5000)
    paid = await first_invoice(client, key)
    assert (paid["status"], paid["amount_paid_minor"]) == ("paid", 2999)
    assert await balance_of(client, admin_key, invoice["account_id"]) == 5000 - 2999


async def test_the_downgrade_for_non_payment_credits_no_unpaid_time(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    billing.config.dunning = DunningConfig(retry_days=[2], final_action="downgrade")
    clock_id, key, sub_id, _ = await stripe_customer(client, admin_key, stripe_fake)
    stripe_fake.behave("decline", "decline")
    await advance(client, admin_key, clock_id, "2026-01-04T00:00:00Z")
    unpaid = await first_invoice(client, key)
    assert (unpaid["status"], unpaid["amount_paid_minor"]) == ("uncollectible", 0)
    assert await subscription_status(client, key) == ("active", "free")
    # The pro fee was never paid: its unused part is not the customer's to be credited.
    kinds = [item["kind"] for item in await items_of(client, key, sub_id)]
    assert "proration_credit" not in kinds, kinds


async def test_an_invoice_marked_paid_by_hand_during_dunning_recovers_the_subscription(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    clock_id, key, _, _ = await stripe_customer(client, admin_key, stripe_fake)
    stripe_fake.behave("decline")
    await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")
    unpaid = await first_invoice(client, key)
    assert await subscription_status(client, key) == ("past_due", "pro")
    # The customer paid by bank transfer; the operator records it.
    await ok(client, admin_key, f"/invoices/{unpaid['id']}/mark-paid")
    paid = await first_invoice(client, key)
    assert (paid["status"], paid["next_payment_attempt_at"]) == ("paid", None)
    assert await subscription_status(client, key) == ("active", "pro")


async def test_back_to_pro_after_the_downgrade_for_non_payment_credits_no_unpaid_fee(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    billing.config.dunning = DunningConfig(retry_days=[2], final_action="downgrade")
    clock_id, key, sub_id, method_id = await stripe_customer(client, admin_key, stripe_fake)
    stripe_fake.behave("decline", "decline")
    await advance(client, admin_key, clock_id, "2026-01-04T00:00:00Z")
    assert (await first_invoice(client, key))["status"] == "uncollectible"
    await advance(client, admin_key, clock_id, "2026-01-16T12:00:00Z")  # half of January left
    up = await ok(client, key, f"/subscriptions/{sub_id}/change", {"plan_type": "pro"})
    # The written-off pro fee is not credited: only the rest of the month on pro is charged.
    assert [(i["kind"], i["amount_minor"]) for i in up["invoice_items"]] == [
        ("proration_charge", 1500)
    ]


async def test_collection_racing_an_operators_mark_paid_takes_turns(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    stripe_fake: StripeFake,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both lock the invoice's account, then its row; the other order deadlocked."""
    if database_url.startswith("sqlite"):
        pytest.skip("a race between PostgreSQL sessions (SQLite has one writer)")
    _, key = await owner(client, admin_key)
    token = stripe_fake.add_payment_method()
    await ok(client, key, "/payment-methods", {"provider": "stripe", "token": token})
    body = {**SEED_BODY, "payment_provider": "stripe", "payment_method_id": token}
    await ok(client, key, "/subscriptions", body)
    await billing.worker().drain()  # the draft
    [draft] = await list_invoices(client, key)
    await ok(client, admin_key, f"/invoices/{draft['id']}/finalize")  # enqueues the collection

    charge = CollectionService._charge

    async def slow_provider(self: CollectionService, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.5)  # the provider's latency, while collection holds the invoice
        return await charge(self, *args, **kwargs)

    monkeypatch.setattr(CollectionService, "_charge", slow_provider)

    async def operator_marks_paid() -> httpx.Response:
        await asyncio.sleep(0.1)  # collection holds the invoice by now
        return await client.post(
            f"{API}/invoices/{draft['id']}/mark-paid", json=None, headers=auth(admin_key)
        )

    _, marked = await asyncio.gather(billing.worker().drain(), operator_marks_paid())
    # The operator comes second: the charge paid the invoice.
    assert marked.status_code == 409, marked.text
    async with billing.db.sessions() as session:
        jobs = (await session.execute(select(Job).where(Job.name == "invoices.collect"))).scalars()
        assert [(j.status, j.last_error) for j in jobs] == [("succeeded", None)]
        row = await session.get(Invoice, draft["id"])
        assert row is not None and (row.status, row.amount_paid_minor) == ("paid", 2999)
        assert len((await session.execute(select(Payment))).scalars().all()) == 1
