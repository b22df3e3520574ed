"""Calendar edges, currencies, coupons and tax on real invoices (both databases)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from aihub_billing.invoices.service import invoices
from aihub_billing.kit.clock import FrozenClock
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.conftest import make_config
from tests.invoices.helpers import (
    advance,
    check_sums,
    clocked_account,
    invoice,
    kinds,
    list_invoices,
    metered_plan,
    track,
)
from tests.subscriptions.helpers import SEED_BODY, add_plan, ok, owner


@pytest.fixture(autouse=True)
def _late_real_clock(clock: FrozenClock) -> None:
    clock.set(datetime(2029, 12, 1, tzinfo=UTC))


async def _all(client: httpx.AsyncClient, key: str) -> list[dict[str, Any]]:
    found = await list_invoices(client, key)
    return [await invoice(client, key, i["id"]) for i in reversed(found)]


async def test_month_end_anchor_and_leap_day_periods(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    await add_plan(client, admin_key, **metered_plan("metered", 5000))
    clock_id, _, key = await clocked_account(client, admin_key, "2028-01-31T00:00:00Z")
    await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered"})
    await track(client, key, "gpt-4o-mini", 2000, "2028-02-29T12:00:00Z")  # the leap day
    await advance(client, admin_key, clock_id, "2028-05-01T00:00:00Z")
    periods = [
        (i["billing_reason"], i["period_start"][:10], i["period_end"][:10])
        for i in await _all(client, key)
    ]
    # Anchored at Jan 31: clamped to month ends, never drifting (Feb 29 in 2028).
    assert periods == [
        ("subscription_create", "2028-01-31", "2028-02-29"),
        ("subscription_cycle", "2028-01-31", "2028-02-29"),
        ("subscription_cycle", "2028-02-29", "2028-03-31"),
        ("subscription_cycle", "2028-03-31", "2028-04-30"),
    ]
    leap = (await _all(client, key))[2]
    # The leap day's usage belongs to [Feb 29, Mar 31).
    assert kinds(leap) == [("subscription_fee", 5000), ("overage_tokens", 500)]
    fees = [
        x for i in await _all(client, key) for x in i["lines"] if x["kind"] == "subscription_fee"
    ]
    assert [(f["period_start"][:10], f["period_end"][:10]) for f in fees] == [
        ("2028-01-31", "2028-02-29"),
        ("2028-02-29", "2028-03-31"),
        ("2028-03-31", "2028-04-30"),
        ("2028-04-30", "2028-05-31"),
    ]


@pytest.mark.parametrize(
    ("currency", "fee", "per_1m", "tax_rate", "expected"),
    [
        # ¥3,000 + 1.5M tokens × ¥333.3 per 1M = ¥499.95 → ¥500; tax 10% per line.
        ("JPY", 3000, "333.3", "0.1", [(3000, 300), (500, 50)]),
        # KWD has 3 decimals: 9.999 + 1.5 × 0.3333 = 0.49995 → 0.500; tax 5%: 0.49995 → 0.500.
        ("KWD", 9999, "0.3333", "0.05", [(9999, 500), (500, 25)]),
    ],
)
async def test_zero_and_three_decimal_currencies(
    client: httpx.AsyncClient,
    admin_key: str,
    currency: str,
    fee: int,
    per_1m: str,
    tax_rate: str,
    expected: list[tuple[int, int]],
) -> None:
    plan = metered_plan("local", fee, currency=currency, per_1m_tokens=per_1m)
    await add_plan(client, admin_key, **plan)
    clock_id, _, key = await clocked_account(
        client, admin_key, "2026-01-01T00:00:00Z", currency=currency, tax_rate=tax_rate
    )
    await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "local"})
    await track(client, key, "gpt-4o-mini", 1_501_000, "2026-01-05T00:00:00Z")
    await advance(client, admin_key, clock_id, "2026-02-01T02:00:00Z")
    cycle = (await _all(client, key))[-1]
    assert cycle["currency"] == currency and cycle["status"] == "open"
    assert [(x["amount_minor"], x["tax_minor"]) for x in cycle["lines"]] == expected
    [tokens] = [x for x in cycle["lines"] if x["kind"] == "overage_tokens"]
    assert Decimal(tokens["amount"]) == Decimal("1.5") * Decimal(per_1m)
    check_sums(cycle)


async def test_a_repeating_coupon_stops_after_its_cycles(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    await add_plan(client, admin_key, **metered_plan("metered", 5000))
    await ok(
        client,
        admin_key,
        "/coupons",
        {"code": "TWICE", "percent_off": "10", "duration": "repeating", "duration_cycles": 2},
    )
    clock_id, _, key = await clocked_account(client, admin_key, "2026-01-01T00:00:00Z")
    await ok(
        client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered", "coupon": "TWICE"}
    )
    await advance(client, admin_key, clock_id, "2026-04-01T02:00:00Z")
    found = await _all(client, key)
    assert [kinds(i) for i in found] == [
        [("subscription_fee", 5000), ("discount", -500)],
        [("subscription_fee", 5000), ("discount", -500)],
        [("subscription_fee", 5000)],
        [("subscription_fee", 5000)],
    ]
    assert [i["total_minor"] for i in found] == [4500, 4500, 5000, 5000]


async def test_tax_default_per_account_and_exempt(
    client: httpx.AsyncClient,
    admin_key: str,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    monkeypatch.setattr(invoices, "default_tax_rate", invoices.default_tax_rate)
    # The configured default reaches the generator (BillingService wires it).
    configured = BillingService(make_config(database_url, pricing={"tax_rate": "0.19"}))
    try:
        assert invoices.default_tax_rate == Decimal("0.19")
    finally:
        await configured.close()
    await add_plan(client, admin_key, **metered_plan("metered", 2999))
    seen = {}
    for name, account in (
        ("default", {}),
        ("own", {"tax_rate": "0.07"}),
        ("exempt", {"tax_exempt": True}),
    ):
        clock_id, _, key = await clocked_account(
            client, admin_key, "2026-01-01T00:00:00Z", **account
        )
        await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered"})
        await advance(client, admin_key, clock_id, "2026-01-01T00:10:00Z")
        [inv] = await _all(client, key)
        [line] = inv["lines"]
        seen[name] = (line["tax_rate"], line["tax_minor"], inv["total_minor"])
        check_sums(inv)
    assert seen == {
        "default": ("0.19", 570, 3569),  # 29.99 × 0.19 = 5.6981
        "own": ("0.07", 210, 3209),  # 29.99 × 0.07 = 2.0993
        "exempt": (None, 0, 2999),
    }


async def test_a_line_beyond_what_an_invoice_holds_is_a_named_conflict(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock
) -> None:
    # 10^9 tokens at 10^20 per 1M: 10^23 USD. It overflowed the 64-bit columns: a 500 on
    # SQLite, and on PostgreSQL a 422 validation_error blaming a valid request body.
    plan = {
        "code": "big",
        "name": "Big",
        "limits": {"included_tokens": 0, "tokens_policy": "bill"},
        "prices": [{"currency": "USD", "amount_minor": 0, "overage_per_1m_tokens": "9" * 20}],
    }
    await add_plan(client, admin_key, **plan)
    account_id, key = await owner(client, admin_key)
    await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "big"})
    await track(client, key, "gpt-4o-mini", 10**9, clock.now().isoformat())
    clock.advance(days=31)
    response = await client.post(
        f"{API}/invoices/generate", json={"account_id": account_id}, headers=auth(admin_key)
    )
    assert (response.status_code, response.json()["code"]) == (409, "invoice_amount_out_of_range")
    assert (await client.get(f"{API}/invoices", headers=auth(key))).json()["items"] == []
