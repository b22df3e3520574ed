"""A plan change credits a charge of the period once: never one an earlier change credited."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from aihub_billing.kit.clock import FrozenClock
from tests.subscriptions.helpers import items_of, minor, ok, owner, subscribe


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


async def test_back_to_a_paid_plan_after_an_immediate_move_to_free_credits_the_fee_once(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock
) -> None:
    """pro -> free (immediate) credits the unused pro fee; coming back to pro later in the
    same period must not credit that fee a second time (nothing was charged for free)."""
    _, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]  # Jan 31 12:00 to Feb 28 12:00
    path = f"/subscriptions/{sub['id']}/change"
    clock.set(utc(2026, 2, 14, 12))  # half of the 28 days left
    down = await ok(client, key, path, {"plan_type": "free", "when": "immediate"})
    assert minor(down["invoice_items"]) == [("proration_credit", -1500)]
    clock.set(utc(2026, 2, 21, 12))  # a quarter left
    up = await ok(client, key, path, {"plan_type": "pro", "payment_method_id": "pm_123"})
    # Only the charge for the rest of the period on pro: the free plan cost nothing.
    assert minor(up["invoice_items"]) == [("proration_charge", 750)]
    net = sum(amount for _, amount in minor(await items_of(client, key, sub["id"])))
    assert net == 2999 - 1500 + 750
