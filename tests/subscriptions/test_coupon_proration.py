"""Coupons on proration lines through the HTTP API on both databases: a plan change credits
what was paid and charges the new price net of the coupon in force."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.service import BillingService
from tests.subscriptions.helpers import add_plan, drain, items_of, minor, ok, owner, subscribe


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def amounts(items: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [(i["kind"], i["amount"], i["amount_minor"]) for i in items]


def stored_shape(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a preview shows of an item: everything but its id and recording time."""
    return [{k: v for k, v in i.items() if k not in ("id", "created_at")} for i in items]


async def change(client: httpx.AsyncClient, key: str, sub_id: str, **body: Any) -> dict[str, Any]:
    return await ok(client, key, f"/subscriptions/{sub_id}/change", body)


async def test_a_forever_half_off_coupon_halves_credit_and_charge(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    await ok(
        client, admin_key, "/coupons", {"code": "HALF", "percent_off": "50", "duration": "forever"}
    )
    account, key = await owner(client, admin_key)
    created = await subscribe(client, key, coupon="HALF")
    sub = created["subscription"]
    # 29.99 with 14.995 off, rounded once: 15.00 off, 14.99 paid for [Jan 31, Feb 28) 12:00.
    assert minor(created["invoice_items"]) == [("subscription_fee", 2999), ("discount", -1500)]

    clock.set(utc(2026, 2, 14, 12))  # 14 of the 28 days left
    preview = await change(client, key, sub["id"], plan_type="enterprise", preview=True)
    done = await change(client, key, sub["id"], plan_type="enterprise")
    expected = [
        ("proration_credit", "-14.995", -1500),
        ("discount", "7.5", 750),  # half of the 15.00 discount is taken back with the credit
        ("proration_charge", "49.995", 5000),
        ("discount", "-24.9975", -2500),  # 50% of 99.99 for half the period
    ]
    assert amounts(preview["invoice_items"]) == amounts(done["invoice_items"]) == expected
    assert preview["direction"] == done["direction"] == "upgrade"
    # Credit: half the unused old price (-7.50); charge: half the remaining new price (25.00).
    assert sum(i["amount_minor"] for i in done["invoice_items"][:2]) == -750
    assert sum(i["amount_minor"] for i in done["invoice_items"][2:]) == 2500
    assert [i["description"] for i in done["invoice_items"]] == [
        "Unused time on Pro (monthly)",
        "Coupon HALF on unused time on Pro (monthly)",
        "Remaining time on Enterprise (monthly)",
        "Coupon HALF on remaining time on Enterprise (monthly)",
    ]
    stored = await items_of(client, key, sub["id"])
    assert stored_shape(stored[2:]) == stored_shape(done["invoice_items"])
    assert stored_shape(preview["invoice_items"]) == stored_shape(done["invoice_items"])
    assert done["subscription"]["coupon_cycles_left"] is None

    # A second change in the period credits what the enterprise charge was paid: 25.00 for
    # [Feb 14, Feb 28) 12:00, half of it unused on Feb 21 12:00.
    await add_plan(
        client,
        admin_key,
        code="ultra",
        name="Ultra",
        prices=[{"currency": "USD", "amount_minor": 19999}],
    )
    clock.set(utc(2026, 2, 21, 12))
    again = await change(client, key, sub["id"], plan_type="ultra")
    assert amounts(again["invoice_items"]) == [
        ("proration_credit", "-25", -2500),
        ("discount", "12.5", 1250),
        ("proration_charge", "49.9975", 5000),
        ("discount", "-24.99875", -2500),
    ]

    clock.set(utc(2026, 2, 28, 12))
    assert await drain(billing) == 1
    assert minor((await items_of(client, key, sub["id"]))[-2:]) == [
        ("subscription_fee", 19999),
        ("discount", -10000),
    ]


async def test_a_fixed_amount_coupon_uses_the_subscription_currency(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock
) -> None:
    for code, name, eur, usd in (("small", "Small", 1000, 1200), ("large", "Large", 5000, 6000)):
        await add_plan(
            client,
            admin_key,
            code=code,
            name=name,
            prices=[
                {"currency": "EUR", "amount_minor": eur},
                {"currency": "USD", "amount_minor": usd},
            ],
        )
    await ok(
        client,
        admin_key,
        "/coupons",
        {"code": "FIX", "amounts_off": {"EUR": 300, "USD": 500}, "duration": "forever"},
    )
    _, eur_key = await owner(client, admin_key, currency="EUR")
    _, usd_key = await owner(client, admin_key, currency="USD")
    eur_sub = await subscribe(client, eur_key, plan_type="small", coupon="FIX")
    usd_sub = await subscribe(client, usd_key, plan_type="small", coupon="FIX")
    assert minor(eur_sub["invoice_items"]) == [("subscription_fee", 1000), ("discount", -300)]
    assert minor(usd_sub["invoice_items"]) == [("subscription_fee", 1200), ("discount", -500)]

    clock.set(utc(2026, 2, 10, 12))  # 18 of the 28 days left
    eur = await change(client, eur_key, eur_sub["subscription"]["id"], plan_type="large")
    assert amounts(eur["invoice_items"]) == [
        ("proration_credit", "-6.428571428571428571", -643),
        ("discount", "1.928571428571428571", 193),
        ("proration_charge", "32.142857142857142857", 3214),
        ("discount", "-1.928571428571428571", -193),
    ]
    assert {i["currency"] for i in eur["invoice_items"]} == {"EUR"}
    usd = await change(client, usd_key, usd_sub["subscription"]["id"], plan_type="large")
    assert amounts(usd["invoice_items"]) == [
        ("proration_credit", "-7.714285714285714286", -771),
        ("discount", "3.214285714285714286", 321),
        ("proration_charge", "38.571428571428571429", 3857),
        ("discount", "-3.214285714285714286", -321),
    ]


async def test_a_coupon_for_the_old_plan_only_leaves_the_new_price_in_full(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    await ok(
        client,
        admin_key,
        "/coupons",
        {"code": "PROHALF", "percent_off": "50", "duration": "forever", "plan_codes": ["pro"]},
    )
    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key, coupon="PROHALF"))["subscription"]
    clock.set(utc(2026, 2, 14, 12))
    preview = await change(client, key, sub["id"], plan_type="enterprise", preview=True)
    done = await change(client, key, sub["id"], plan_type="enterprise")
    # The pro credit is what pro was paid (net of its discount); enterprise is charged in full.
    assert (
        minor(preview["invoice_items"])
        == minor(done["invoice_items"])
        == [
            ("proration_credit", -1500),
            ("discount", 750),
            ("proration_charge", 5000),
        ]
    )
    clock.set(utc(2026, 2, 28, 12))
    assert await drain(billing) == 1
    # Renewals of enterprise are not discounted either.
    assert minor(await items_of(client, key, sub["id"]))[-1:] == [("subscription_fee", 9999)]


async def test_a_once_coupon_discounts_prorations_of_its_cycle_only(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    await ok(
        client, admin_key, "/coupons", {"code": "ONCE", "percent_off": "50", "duration": "once"}
    )
    _, spent_key = await owner(client, admin_key)
    _, early_key = await owner(client, admin_key)
    spent = (await subscribe(client, spent_key, coupon="ONCE"))["subscription"]
    early = (await subscribe(client, early_key, coupon="ONCE"))["subscription"]
    assert spent["coupon_cycles_left"] == early["coupon_cycles_left"] == 0

    # Inside the discounted first period both sides are net of the coupon.
    clock.set(utc(2026, 2, 14, 12))
    first = await change(client, early_key, early["id"], plan_type="enterprise")
    assert minor(first["invoice_items"]) == [
        ("proration_credit", -1500),
        ("discount", 750),
        ("proration_charge", 5000),
        ("discount", -2500),
    ]
    assert first["subscription"]["coupon_cycles_left"] == 0

    clock.set(utc(2026, 2, 28, 12))
    assert await drain(billing) == 2
    assert minor(await items_of(client, early_key, early["id"]))[-1:] == [
        ("subscription_fee", 9999)
    ]
    # Spent on the first period: an upgrade in the second one is at list price
    # (16 of the 31 days of [Feb 28, Mar 31) left).
    clock.set(utc(2026, 3, 15, 12))
    later = await change(client, spent_key, spent["id"], plan_type="enterprise", preview=True)
    assert minor(later["invoice_items"]) == [
        ("proration_credit", -1548),
        ("proration_charge", 5161),
    ]
    done = await change(client, spent_key, spent["id"], plan_type="enterprise")
    assert stored_shape((await items_of(client, spent_key, spent["id"]))[-2:]) == stored_shape(
        done["invoice_items"]
    )
    assert minor(done["invoice_items"]) == minor(later["invoice_items"])


async def test_a_repeating_coupon_given_with_an_upgrade_counts_the_running_cycle(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    await ok(
        client,
        admin_key,
        "/coupons",
        {"code": "TWO", "percent_off": "20", "duration": "repeating", "duration_cycles": 2},
    )
    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    clock.set(utc(2026, 2, 14, 12))
    done = await change(client, key, sub["id"], plan_type="enterprise", coupon="TWO")
    # Nothing was discounted on pro; 20% of 99.99 for half the period comes off the charge.
    assert amounts(done["invoice_items"]) == [
        ("proration_credit", "-14.995", -1500),
        ("proration_charge", "49.995", 5000),
        ("discount", "-9.999", -1000),
    ]
    assert done["subscription"]["coupon_cycles_left"] == 1
    for end in (utc(2026, 2, 28, 12), utc(2026, 3, 31, 12)):
        clock.set(end)
        assert await drain(billing) == 1
    assert minor((await items_of(client, key, sub["id"]))[-3:]) == [
        ("subscription_fee", 9999),
        ("discount", -2000),
        ("subscription_fee", 9999),
    ]


async def test_resuming_charges_the_rest_of_the_period_net_of_the_coupon(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    await ok(
        client, admin_key, "/coupons", {"code": "HALF", "percent_off": "50", "duration": "forever"}
    )
    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key, coupon="HALF"))["subscription"]
    await ok(client, key, f"/subscriptions/{sub['id']}/pause")
    clock.set(utc(2026, 2, 28, 12))
    assert await drain(billing) == 1  # renewal of a paused period: nothing billed
    clock.set(utc(2026, 3, 15, 12))  # 16 of 31 days left
    resumed = await ok(client, key, f"/subscriptions/{sub['id']}/resume")
    assert amounts(resumed["invoice_items"]) == [
        ("proration_charge", "15.478709677419354839", 1548),
        ("discount", "-7.739354838709677419", -774),
    ]
