"""A payment whose money its invoice could not take is credited to the balance as an
`overpayment`; refunding that payment takes the credit back, so the customer is never paid
twice: refused up front when later invoices spent the credit, taken as far as it goes when
the provider refunded already, given back when the refund fails."""

from __future__ import annotations

from typing import Any

import httpx

from aihub_billing.creditnotes import balance
from aihub_billing.kit.context import SYSTEM, Context
from aihub_billing.models import BalanceTransaction, RefundRecord
from aihub_billing.service import BillingService
from tests.creditnotes.helpers import balance_of, credit, credited, make_invoice, owner
from tests.creditnotes.test_refund_failures import fail_at_stripe
from tests.creditnotes.test_refunds import refunds_seen
from tests.payments.fakes.stripe_server import StripeFake
from tests.payments.support import (  # noqa: F401 (fixtures)
    billing,
    new_intent,
    paypal_fake,
    paypal_key,
    post,
    stripe_fake,
)
from tests.webhooks.test_refund_events import refund_event
from tests.webhooks.test_webhooks import rows, send_stripe


async def paid_twice(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,  # noqa: F811
    stripe: StripeFake,
) -> tuple[str, str, str, dict[str, Any]]:
    """An invoice of 1,000 paid twice at Stripe (two payments in flight at once, as a
    customer paying twice in two tabs): (account id, owner key, invoice id, the second
    payment), whose 1,000 is the account's overpayment credit."""
    account, key = await owner(client, admin_key)
    invoice, _ = await make_invoice(billing, account, [(1000, None)], status="open")
    intents = [
        await new_intent(client, key, "stripe", stripe, 1000, invoice_id=invoice) for _ in "ab"
    ]
    confirmed = [await post(client, key, f"/payments/{i['id']}/confirm") for i in intents]
    assert [c.status_code for c in confirmed] == [200, 200]
    payment: dict[str, Any] = confirmed[1].json()
    assert await balance_of(client, key, account) == {"USD": 1000}
    return account, key, invoice, payment


async def ledger(billing: BillingService) -> list[tuple[str, int, str | None, str | None]]:  # noqa: F811
    """(kind, amount, payment id, refund id) of every balance entry, oldest first."""
    entries = sorted(await rows(billing, BalanceTransaction), key=lambda t: (t.created_at, t.id))
    return [(t.kind, t.amount_minor, t.payment_id, t.refund_id) for t in entries]


async def spend(billing: BillingService, account: str, amount: int) -> None:  # noqa: F811
    """A later invoice consumes `amount` of the balance."""
    later, _ = await make_invoice(billing, account, [(amount, None)], status="open")
    async with billing.transaction() as session:
        taken = await balance.consume(
            session,
            Context(SYSTEM, billing.clock),
            account_id=account,
            currency="USD",
            invoice_id=later,
            up_to_minor=amount,
        )
    assert taken == amount


async def test_refunding_an_overpayment_takes_its_credit_back(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,  # noqa: F811
    stripe_fake: StripeFake,  # noqa: F811
) -> None:
    account, key, _, payment = await paid_twice(client, admin_key, billing, stripe_fake)
    made = await post(client, key, f"/payments/{payment['id']}/refund", {"amount_minor": 600})
    assert made.status_code == 201, made.text
    assert await balance_of(client, key, account) == {"USD": 400}
    rest = await post(client, key, f"/payments/{payment['id']}/refund", {})
    assert rest.status_code == 201, rest.text
    assert await balance_of(client, key, account) == {"USD": 0}
    assert await ledger(billing) == [
        ("overpayment", 1000, payment["id"], None),
        ("refunded", -600, payment["id"], made.json()["id"]),
        ("refunded", -400, payment["id"], rest.json()["id"]),
    ]


async def test_a_refund_of_credit_later_invoices_spent_is_refused_before_the_provider(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,  # noqa: F811
    stripe_fake: StripeFake,  # noqa: F811
) -> None:
    account, key, _, payment = await paid_twice(client, admin_key, billing, stripe_fake)
    await spend(billing, account, 700)
    refused = await post(client, key, f"/payments/{payment['id']}/refund", {})
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "balance_insufficient"
    assert "only 300" in refused.json()["detail"]
    assert refunds_seen(stripe_fake, "stripe") == []  # nothing reached Stripe
    assert await rows(billing, RefundRecord) == []
    # What is left of the credit can be refunded.
    made = await post(client, key, f"/payments/{payment['id']}/refund", {"amount_minor": 300})
    assert made.status_code == 201, made.text
    assert await balance_of(client, key, account) == {"USD": 0}


async def test_a_refund_that_fails_gives_the_credit_back_once(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,  # noqa: F811
    stripe_fake: StripeFake,  # noqa: F811
) -> None:
    account, key, _, payment = await paid_twice(client, admin_key, billing, stripe_fake)
    made = await post(client, key, f"/payments/{payment['id']}/refund", {})
    assert made.status_code == 201, made.text
    assert await balance_of(client, key, account) == {"USD": 0}
    refund_id = made.json()["id"]
    await fail_at_stripe(client, billing, stripe_fake, payment, refund_id, "evt_f1")
    await fail_at_stripe(client, billing, stripe_fake, payment, refund_id, "evt_f2")
    assert await balance_of(client, key, account) == {"USD": 1000}
    assert (await ledger(billing))[-1] == ("refund_failed", 1000, payment["id"], refund_id)


async def test_a_refund_made_at_the_provider_takes_what_is_left_of_the_credit(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,  # noqa: F811
    stripe_fake: StripeFake,  # noqa: F811
) -> None:
    account, key, _, payment = await paid_twice(client, admin_key, billing, stripe_fake)
    await spend(billing, account, 700)
    # Refunded in Stripe's dashboard: it happened, so the credit left is taken, never more.
    dashboard = refund_event(payment, "evt_dash", "re_dash_1", 1000, "refund.created")
    assert (await send_stripe(client, dashboard)).status_code == 200
    await billing.worker().drain()
    assert await balance_of(client, key, account) == {"USD": 0}
    assert [entry[:2] for entry in await ledger(billing)][-1] == ("refunded", -300)


async def test_a_credit_note_refund_leaves_the_overpayment_credit_alone(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,  # noqa: F811
    stripe_fake: StripeFake,  # noqa: F811
) -> None:
    """A note pays out what it credits of the invoice, not the payment's overpayment."""
    account, key, invoice, _ = await paid_twice(client, admin_key, billing, stripe_fake)
    note = await credited(client, key, invoice, {"outcome": "refund", "amount_minor": 400})
    assert (note["refund_status"], note["refunded_minor"]) == ("succeeded", 400)
    assert await balance_of(client, key, account) == {"USD": 1000}
    assert [entry[0] for entry in await ledger(billing)] == ["overpayment"]


async def test_refunding_the_overpayment_leaves_the_invoice_creditable_in_full(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,  # noqa: F811
    stripe_fake: StripeFake,  # noqa: F811
) -> None:
    """The second payment of a 1,000 invoice is overpayment credit; refunding it paid back
    money the invoice never took, yet a credit note of the invoice's 1,000 was refused
    ("at most 0"): the notes counted that refund against the invoice, the refund cap not."""
    account, key, invoice, second = await paid_twice(client, admin_key, billing, stripe_fake)
    made = await post(client, key, f"/payments/{second['id']}/refund", {"amount_minor": 400})
    assert made.status_code == 201, made.text
    note = await credit(client, key, invoice, {"outcome": "refund", "amount_minor": 600})
    assert note.status_code == 201, note.text
    made = await post(client, key, f"/payments/{second['id']}/refund", {})
    assert made.status_code == 201, made.text
    assert await balance_of(client, key, account) == {"USD": 0}
    note = await credit(client, key, invoice, {"outcome": "credit", "amount_minor": 400})
    assert note.status_code == 201, note.text
    over = await credit(client, key, invoice, {"outcome": "credit", "amount_minor": 1})
    assert over.status_code == 422, over.text
