"""Credit notes and a plan change's proration credit on one paid invoice never return more
than it holds together, in either order, and racing each other on PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.invoices.helpers import list_invoices
from tests.subscriptions.helpers import minor, ok, owner, subscribe

TO_FREE_NOW = {"plan_type": "free", "when": "immediate"}


async def _paid_subscription(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> tuple[str, str, str]:
    """(owner key, subscription id, its first invoice's id): pro 2999, a month from the
    clock's time, paid."""
    _, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    await billing.worker().drain()
    [inv] = await list_invoices(client, key)
    await ok(client, admin_key, f"/invoices/{inv['id']}/finalize")
    paid = await ok(client, admin_key, f"/invoices/{inv['id']}/mark-paid")
    assert (paid["status"], paid["total_minor"]) == ("paid", 2999)
    return key, sub["id"], inv["id"]


def _note(amount_minor: int) -> dict[str, Any]:
    return {"reason": "product_unsatisfactory", "outcome": "credit", "amount_minor": amount_minor}


async def test_a_fee_credited_in_full_is_not_credited_again_by_a_downgrade(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    key, sub_id, invoice_id = await _paid_subscription(client, admin_key, billing)
    await ok(client, key, f"/invoices/{invoice_id}/credit-notes", _note(2999))
    clock.set(datetime(2026, 2, 14, 12, tzinfo=UTC))  # half the period left
    down = await ok(client, key, f"/subscriptions/{sub_id}/change", TO_FREE_NOW)
    assert down["invoice_items"] == []


async def test_a_downgrade_credits_only_what_a_partial_credit_note_left(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    key, sub_id, invoice_id = await _paid_subscription(client, admin_key, billing)
    await ok(client, key, f"/invoices/{invoice_id}/credit-notes", _note(2000))
    clock.set(datetime(2026, 2, 14, 12, tzinfo=UTC))
    down = await ok(client, key, f"/subscriptions/{sub_id}/change", TO_FREE_NOW)
    # Half the fee unused (1500), but only 999 of the 2999 is left to give back.
    assert minor(down["invoice_items"]) == [("proration_credit", -1500), ("proration_charge", 501)]


async def test_a_credit_note_after_a_downgrade_gives_back_only_the_rest(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    key, sub_id, invoice_id = await _paid_subscription(client, admin_key, billing)
    clock.set(datetime(2026, 2, 14, 12, tzinfo=UTC))
    down = await ok(client, key, f"/subscriptions/{sub_id}/change", TO_FREE_NOW)
    assert minor(down["invoice_items"]) == [("proration_credit", -1500)]
    notes = f"{API}/invoices/{invoice_id}/credit-notes"
    whole = await client.post(notes, json=_note(2999), headers=auth(key))
    assert whole.status_code == 422, whole.text
    assert whole.json()["code"] == "credit_note_exceeds_creditable"
    rest = await ok(client, key, f"/invoices/{invoice_id}/credit-notes", _note(1499))
    assert rest["total_minor"] == 1499
    more = await client.post(notes, json=_note(1), headers=auth(key))
    assert more.status_code == 422


async def test_a_credit_note_racing_a_downgrade_never_gives_back_more_than_the_invoice(
    client: httpx.AsyncClient,
    admin_key: str,
    clock: FrozenClock,
    billing: BillingService,
    database_url: str,
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("a race between PostgreSQL sessions (SQLite has one writer)")
    start = datetime(2026, 2, 1, 12, tzinfo=UTC)
    overshoot = []
    for n in range(5):  # the two requests interleave differently from run to run
        clock.set(start + timedelta(days=11 * n))
        key, sub_id, invoice_id = await _paid_subscription(client, admin_key, billing)
        clock.set(start + timedelta(days=11 * n + 10))  # about two thirds of the fee unused
        note, change = await asyncio.gather(
            client.post(
                f"{API}/invoices/{invoice_id}/credit-notes", json=_note(2999), headers=auth(key)
            ),
            client.post(
                f"{API}/subscriptions/{sub_id}/change", json=TO_FREE_NOW, headers=auth(key)
            ),
        )
        # They take turns: the later one finds what the other gave back (a note of the whole
        # invoice after the credit: 422), never a deadlock or an error.
        assert note.status_code in (201, 422), note.text
        assert change.status_code == 200, change.text
        given = note.json()["total_minor"] if note.status_code == 201 else 0
        given -= sum(item["amount_minor"] for item in change.json()["invoice_items"])
        if given > 2999:
            overshoot.append(given)
    assert overshoot == [], f"given back beyond the 2999 invoice: {overshoot}"
