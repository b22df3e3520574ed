"""Coupons: admin endpoints, discounts on fee lines, durations, limits, atomic redemptions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.subscriptions.helpers import (
    SEED_BODY,
    drain,
    items_of,
    minor,
    ok,
    owner,
    post,
    subscribe,
)

COUPONS = f"{API}/coupons"


async def coupon(client: httpx.AsyncClient, admin_key: str, **body: Any) -> dict[str, Any]:
    return await ok(client, admin_key, "/coupons", body)


async def test_admin_creates_lists_gets_and_archives(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    created = await coupon(
        client,
        admin_key,
        code="WELCOME20",
        percent_off="20",
        duration="repeating",
        duration_cycles=2,
    )
    assert (created["percent_off"], created["times_redeemed"], created["status"]) == (
        "20",
        0,
        "active",
    )
    dup = await post(client, admin_key, "/coupons", {"code": "WELCOME20", "percent_off": "5"})
    assert dup.status_code == 409 and dup.json()["code"] == "coupon_exists"
    listed = await client.get(COUPONS, headers=auth(admin_key))
    assert [c["code"] for c in listed.json()["items"]] == ["WELCOME20"]
    got = await client.get(f"{COUPONS}/WELCOME20", headers=auth(admin_key))
    assert got.json() == created
    archived = await ok(client, admin_key, "/coupons/WELCOME20/archive")
    assert archived["status"] == "archived"
    account, key = await owner(client, admin_key)
    refused = await post(client, key, "/subscriptions", {**SEED_BODY, "coupon": "WELCOME20"})
    assert refused.status_code == 409 and refused.json()["code"] == "coupon_not_redeemable"
    forbidden = await client.get(COUPONS, headers=auth(key))
    assert forbidden.status_code == 403
    missing = await post(client, key, "/subscriptions", {**SEED_BODY, "coupon": "NOPE"})
    assert missing.status_code == 404 and missing.json()["code"] == "coupon_not_found"


async def test_invalid_coupons_are_422(client: httpx.AsyncClient, admin_key: str) -> None:
    for body in (
        {"code": "A"},
        {"code": "A", "percent_off": "10", "amounts_off": {"USD": 100}},
        {"code": "A", "percent_off": "101"},
        {"code": "A", "percent_off": "0"},
        {"code": "A", "amounts_off": {"USD": 0}},
        {"code": "A", "amounts_off": {"ZZZ": 10}},
        {"code": "A", "percent_off": "10", "duration": "repeating"},
        {"code": "A", "percent_off": "10", "duration": "once", "duration_cycles": 3},
        {"code": "A", "percent_off": "10", "expires_at": "2026-03-01T00:00:00"},
        # Above PostgreSQL's INTEGER: refused as input, not a 503 "database unavailable".
        {"code": "A", "percent_off": "10", "max_redemptions": 2**31},
        # Plan codes are lower case: "Pro" would never match the plan `pro`.
        {"code": "A", "percent_off": "10", "plan_codes": ["Pro"]},
        {"code": "A", "percent_off": "10", "plan_codes": ["pro "]},
    ):
        response = await post(client, admin_key, "/coupons", body)
        assert response.status_code in (400, 422), body
    # A well-formed code of no plan (a typo) would never apply.
    typo = {"code": "A", "percent_off": "10", "plan_codes": ["pro", "gold"]}
    response = await post(client, admin_key, "/coupons", typo)
    assert (response.status_code, response.json()["code"]) == (404, "plan_not_found")
    assert (await client.get(f"{API}/coupons/A", headers=auth(admin_key))).status_code == 404


async def test_repeating_percent_coupon_discounts_two_fee_lines(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    await coupon(
        client, admin_key, code="TWO", percent_off="20", duration="repeating", duration_cycles=2
    )
    account, key = await owner(client, admin_key)
    created = await subscribe(client, key, coupon="TWO")
    assert minor(created["invoice_items"]) == [("subscription_fee", 2999), ("discount", -600)]
    assert created["invoice_items"][1]["amount"] == "-5.998"
    assert created["subscription"]["coupon_cycles_left"] == 1
    sub_id = created["subscription"]["id"]
    for end in (datetime(2026, 2, 28, 12, tzinfo=UTC), datetime(2026, 3, 31, 12, tzinfo=UTC)):
        clock.set(end)
        assert await drain(billing) == 1  # the renewal (its invoice jobs aside)
    assert minor(await items_of(client, key, sub_id)) == [
        ("subscription_fee", 2999),
        ("discount", -600),
        ("subscription_fee", 2999),
        ("discount", -600),
        ("subscription_fee", 2999),
    ]


async def test_fixed_amount_per_currency_never_below_zero_and_plan_restriction(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    await coupon(
        client,
        admin_key,
        code="BIG",
        amounts_off={"USD": 5000},
        duration="forever",
        plan_codes=["pro"],
    )
    account, key = await owner(client, admin_key)
    created = await subscribe(client, key, coupon="BIG")
    # 50.00 off a 29.99 fee: the discount stops at the fee.
    assert minor(created["invoice_items"]) == [("subscription_fee", 2999), ("discount", -2999)]
    assert created["subscription"]["coupon_cycles_left"] is None
    other, other_key = await owner(client, admin_key)
    wrong_plan = await post(
        client,
        other_key,
        "/subscriptions",
        {**SEED_BODY, "plan_type": "enterprise", "coupon": "BIG"},
    )
    assert wrong_plan.status_code == 409 and wrong_plan.json()["code"] == "coupon_not_redeemable"
    assert (await client.get(f"{COUPONS}/BIG", headers=auth(admin_key))).json()[
        "times_redeemed"
    ] == 1


async def test_expired_coupon_is_refused(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock
) -> None:
    await coupon(
        client, admin_key, code="SOON", percent_off="10", expires_at="2026-02-01T00:00:00Z"
    )
    clock.set(datetime(2026, 2, 1, tzinfo=UTC))
    account, key = await owner(client, admin_key)
    response = await post(client, key, "/subscriptions", {**SEED_BODY, "coupon": "SOON"})
    assert response.status_code == 409 and "expired" in response.json()["detail"]


async def test_coupon_on_a_plan_change(client: httpx.AsyncClient, admin_key: str) -> None:
    await coupon(client, admin_key, code="HALF", percent_off="50", duration="once")
    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    changed = await ok(client, key, f"/subscriptions/{sub['id']}/change", {"coupon": "HALF"})
    assert changed["subscription"]["coupon"] == "HALF" and changed["invoice_items"] == []
    assert changed["subscription"]["coupon_cycles_left"] == 1


async def test_max_redemptions_hold_under_concurrency(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    await coupon(client, admin_key, code="FIRST2", percent_off="10", max_redemptions=2)
    keys = [(await owner(client, admin_key))[1] for _ in range(5)]
    responses = await asyncio.gather(
        *(post(client, k, "/subscriptions", {**SEED_BODY, "coupon": "FIRST2"}) for k in keys)
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [201, 201, 409, 409, 409], [r.text for r in responses]
    final = (await client.get(f"{COUPONS}/FIRST2", headers=auth(admin_key))).json()
    assert final["times_redeemed"] == 2


async def test_an_account_cannot_redeem_a_coupon_again(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    """A `once` coupon discounts one fee line: applying it again to the subscription that
    holds it (or to a new subscription after cancelling) must not discount another one."""
    await coupon(client, admin_key, code="ONCE50", percent_off="50", duration="once")
    account, key = await owner(client, admin_key)
    created = await subscribe(client, key, coupon="ONCE50")
    sub_id = created["subscription"]["id"]
    assert created["subscription"]["coupon_cycles_left"] == 0
    again = await post(client, key, f"/subscriptions/{sub_id}/change", {"coupon": "ONCE50"})
    assert again.status_code == 409, again.text
    assert again.json()["code"] == "coupon_not_redeemable"
    clock.set(datetime(2026, 2, 28, 12, tzinfo=UTC))
    assert await drain(billing) == 1
    assert minor(await items_of(client, key, sub_id)) == [
        ("subscription_fee", 2999),
        ("discount", -1500),
        ("subscription_fee", 2999),
    ]
    await ok(client, key, f"/subscriptions/{sub_id}/cancel", {"at_period_end": False})
    anew = await post(client, key, "/subscriptions", {**SEED_BODY, "coupon": "ONCE50"})
    assert anew.status_code == 409 and anew.json()["code"] == "coupon_not_redeemable"
    final = (await client.get(f"{COUPONS}/ONCE50", headers=auth(admin_key))).json()
    assert final["times_redeemed"] == 1


async def test_switching_coupons_back_and_forth_redeems_each_once(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    """A -> B -> A: the subscription no longer holds A when it asks for it again, but the
    account redeemed it already; the operator's keys are held to it too."""
    await coupon(client, admin_key, code="FIRST", percent_off="50", duration="once")
    await coupon(client, admin_key, code="SECOND", percent_off="10", duration="once")
    _, key = await owner(client, admin_key)
    sub_id = (await subscribe(client, key, coupon="FIRST"))["subscription"]["id"]
    await ok(client, key, f"/subscriptions/{sub_id}/change", {"coupon": "SECOND"})
    for caller in (key, admin_key):
        back = await post(client, caller, f"/subscriptions/{sub_id}/change", {"coupon": "FIRST"})
        assert back.status_code == 409, back.text
        assert back.json()["code"] == "coupon_not_redeemable"
    first = (await client.get(f"{COUPONS}/FIRST", headers=auth(admin_key))).json()
    assert first["times_redeemed"] == 1
