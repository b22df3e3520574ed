"""Subscription lifecycle through the HTTP API on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from sqlalchemy import select

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.models import Job
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth, issue_key
from tests.subscriptions.helpers import (
    SEED_BODY,
    SUBS,
    add_plan,
    current,
    drain,
    history,
    items_of,
    minor,
    ok,
    owner,
    post,
    subscribe,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def test_seed_body_subscribes_and_bills_the_first_period(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    account, key = await owner(client, admin_key)
    result = await subscribe(client, key)
    sub = result["subscription"]
    assert (sub["status"], sub["plan"]["code"], sub["billing_cycle"]) == (
        "active",
        "pro",
        "monthly",
    )
    assert (sub["payment_provider"], sub["payment_method_id"]) == ("stripe", "pm_123")
    # The clock fixture is Jan 31 12:00: the anchor clamps to Feb 28, then back to Mar 31.
    assert sub["billing_anchor"] == sub["current_period_start"] == "2026-01-31T12:00:00Z"
    assert sub["current_period_end"] == "2026-02-28T12:00:00Z"
    [fee] = result["invoice_items"]
    assert (fee["kind"], fee["amount"], fee["amount_minor"], fee["currency"]) == (
        "subscription_fee",
        "29.99",
        2999,
        "USD",
    )
    assert fee["invoice_id"] is None and fee["subscription_id"] == sub["id"]
    now = await current(client, key)
    assert now["plan"]["code"] == "pro" and now["subscription"]["id"] == sub["id"]
    assert (now["period_start"], now["period_end"]) == (
        "2026-01-31T12:00:00Z",
        "2026-02-28T12:00:00Z",
    )
    assert [e["type"] for e in await history(client, key)] == ["created"]
    again = await post(client, key, "/subscriptions", SEED_BODY)
    assert again.status_code == 409 and again.json()["code"] == "subscription_exists"


async def test_an_account_without_subscription_is_on_free(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock
) -> None:
    account, key = await owner(client, admin_key)
    clock.set(utc(2026, 3, 5))
    now = await current(client, key)
    assert now["plan"]["code"] == "free" and now["subscription"] is None
    # Monthly periods anchored at the account's creation (Jan 31 12:00).
    assert (now["period_start"], now["period_end"]) == (
        "2026-02-28T12:00:00Z",
        "2026-03-31T12:00:00Z",
    )


async def test_payment_method_rules_and_admin_account_rules(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    account, key = await owner(client, admin_key)
    body = {"plan_type": "pro", "billing_cycle": "monthly"}
    refused = await post(client, key, "/subscriptions", body)
    assert refused.status_code == 400 and refused.json()["code"] == "payment_method_required"
    no_account = await post(client, admin_key, "/subscriptions", body)
    assert no_account.json()["code"] == "account_required"
    override = await post(client, key, "/subscriptions", {**body, "trial_days": 7})
    assert override.status_code == 403
    # The operator may grant a trial: no payment method needed then.
    trial = await ok(
        client, admin_key, "/subscriptions", {**body, "account_id": account, "trial_days": 7}
    )
    assert trial["subscription"]["status"] == "trialing"
    assert trial["invoice_items"] == []
    assert trial["subscription"]["trial_end"] == "2026-02-07T12:00:00Z"


async def test_tenancy_roles_and_validation(client: httpx.AsyncClient, admin_key: str) -> None:
    account, key = await owner(client, admin_key)
    other, other_key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    for path in ("/cancel", "/pause", "/resume"):
        response = await post(client, other_key, f"/subscriptions/{sub['id']}{path}")
        assert response.status_code == 404, path
        assert response.json()["code"] == "subscription_not_found"
    peek = await client.get(
        f"{SUBS}/current", params={"account_id": account}, headers=auth(other_key)
    )
    assert peek.status_code == 404
    cross = await post(client, other_key, "/subscriptions", {**SEED_BODY, "account_id": account})
    assert cross.status_code == 404
    member = await issue_key(client, admin_key, other, "member")
    denied = await post(client, member, "/subscriptions", SEED_BODY)
    assert denied.status_code == 403
    for bad in (
        {**SEED_BODY, "billing_cycle": "weekly"},
        {**SEED_BODY, "currency": "XXXX"},
        {**SEED_BODY, "surprise": 1},
    ):
        response = await post(client, other_key, "/subscriptions", bad)
        assert response.status_code == 422, bad
    missing = await post(client, other_key, "/subscriptions", {**SEED_BODY, "plan_type": "gold"})
    assert missing.status_code == 404 and missing.json()["code"] == "plan_not_found"
    eur = await post(client, other_key, "/subscriptions", {**SEED_BODY, "currency": "EUR"})
    assert eur.status_code == 404 and eur.json()["code"] == "price_not_found"
    assert (await current(client, other_key))["subscription"] is None


async def test_upgrade_prorates_over_the_february_period(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock
) -> None:
    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    clock.set(utc(2026, 2, 14, 12))  # 14 of the 28 days left
    path = f"/subscriptions/{sub['id']}/change"
    preview = await ok(client, key, path, {"plan_type": "enterprise", "preview": True})
    assert preview["preview"] is True and preview["direction"] == "upgrade"
    assert minor(preview["invoice_items"]) == [
        ("proration_credit", -1500),
        ("proration_charge", 5000),
    ]
    assert [i["amount"] for i in preview["invoice_items"]] == ["-14.995", "49.995"]
    assert all(i["id"] is None for i in preview["invoice_items"])
    assert preview["subscription"]["plan"]["code"] == "pro"
    assert len(await items_of(client, key, sub["id"])) == 1
    assert len(await history(client, key)) == 1

    done = await ok(client, key, path, {"plan_type": "enterprise"})
    assert (done["preview"], done["when"], done["effective_at"]) == (
        False,
        "immediate",
        "2026-02-14T12:00:00Z",
    )
    assert minor(done["invoice_items"]) == [("proration_credit", -1500), ("proration_charge", 5000)]
    assert done["subscription"]["plan"]["code"] == "enterprise"
    # The period does not move: it still comes from the anchor.
    assert done["subscription"]["current_period_end"] == "2026-02-28T12:00:00Z"
    assert [e["type"] for e in await history(client, key)] == ["created", "plan_changed"]
    assert minor(await items_of(client, key, sub["id"])) == [
        ("subscription_fee", 2999),
        ("proration_credit", -1500),
        ("proration_charge", 5000),
    ]


async def test_upgrade_in_a_leap_february(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock
) -> None:
    account, key = await owner(client, admin_key)
    clock.set(utc(2028, 1, 31))
    sub = (await subscribe(client, key))["subscription"]
    assert sub["current_period_end"] == "2028-02-29T00:00:00Z"
    clock.set(utc(2028, 2, 15))  # 14 of 29 days left
    done = await ok(client, key, f"/subscriptions/{sub['id']}/change", {"plan_type": "enterprise"})
    assert minor(done["invoice_items"]) == [("proration_credit", -1448), ("proration_charge", 4827)]
    assert [i["amount"] for i in done["invoice_items"]] == [
        "-14.477931034482758621",
        "48.27103448275862069",
    ]


async def test_upgrade_on_the_last_day_of_the_period(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock
) -> None:
    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    clock.set(utc(2026, 2, 28))  # 12 hours before the Feb 28 12:00 period end
    done = await ok(client, key, f"/subscriptions/{sub['id']}/change", {"plan_type": "enterprise"})
    assert minor(done["invoice_items"]) == [("proration_credit", -54), ("proration_charge", 179)]


async def test_downgrade_waits_for_period_end_then_an_upgrade_replaces_it(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    path = f"/subscriptions/{sub['id']}/change"
    clock.set(utc(2026, 2, 7, 12))  # 21 of 28 days left
    down = await ok(client, key, path, {"plan_type": "free"})
    assert (down["direction"], down["when"], down["invoice_items"]) == (
        "downgrade",
        "period_end",
        [],
    )
    assert down["subscription"]["plan"]["code"] == "pro"
    assert down["subscription"]["pending_change"]["plan"]["code"] == "free"
    assert down["effective_at"] == "2026-02-28T12:00:00Z"

    clock.set(utc(2026, 2, 14, 12))  # same period, 14 days left
    up = await ok(client, key, path, {"plan_type": "enterprise"})
    # Credit for the plan still running (pro), not the scheduled one.
    assert minor(up["invoice_items"]) == [("proration_credit", -1500), ("proration_charge", 5000)]
    assert up["subscription"]["pending_change"] is None

    clock.set(utc(2026, 2, 28, 12))
    assert await drain(billing) == 1
    renewed = await current(client, key)
    assert renewed["plan"]["code"] == "enterprise"
    assert (renewed["period_start"], renewed["period_end"]) == (
        "2026-02-28T12:00:00Z",
        "2026-03-31T12:00:00Z",
    )
    assert minor(await items_of(client, key, sub["id"]))[-1] == ("subscription_fee", 9999)
    assert [e["type"] for e in await history(client, key)] == [
        "created",
        "change_scheduled",
        "plan_changed",
        "renewed",
    ]


async def test_a_scheduled_downgrade_applies_at_renewal(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key, plan_type="enterprise"))["subscription"]
    await ok(client, key, f"/subscriptions/{sub['id']}/change", {"plan_type": "pro"})
    clock.set(utc(2026, 2, 28, 12))
    assert await drain(billing) == 1
    after = await current(client, key)
    assert after["plan"]["code"] == "pro" and after["subscription"]["pending_change"] is None
    assert minor(await items_of(client, key, sub["id"])) == [
        ("subscription_fee", 9999),
        ("subscription_fee", 2999),
    ]


async def test_monthly_to_yearly_starts_a_yearly_cycle_now(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock
) -> None:
    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    prices = [
        {"currency": "USD", "amount_minor": 2999},
        {"currency": "USD", "interval_count": 12, "amount_minor": 29990},
    ]
    updated = await client.patch(
        f"{API}/plans/pro", json={"prices": prices}, headers=auth(admin_key)
    )
    assert updated.status_code == 200 and updated.json()["version"] == 2
    clock.set(utc(2026, 2, 14, 12))
    done = await ok(client, key, f"/subscriptions/{sub['id']}/change", {"billing_cycle": "yearly"})
    assert done["direction"] == "upgrade"
    assert minor(done["invoice_items"]) == [
        ("proration_credit", -1500),
        ("subscription_fee", 29990),
    ]
    new = done["subscription"]
    assert (new["billing_cycle"], new["plan"]["version"]) == ("yearly", 2)
    assert new["billing_anchor"] == new["current_period_start"] == "2026-02-14T12:00:00Z"
    assert new["current_period_end"] == "2027-02-14T12:00:00Z"


async def test_a_change_of_cycle_in_mid_second_is_invoiced_at_once(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    """The month the change cuts short is invoiced when the change is made, with the credit
    and the new cycle's fee, though the wall clock is not on a whole second."""
    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    assert await drain(billing) == 0  # the first period's invoice
    prices = [
        {"currency": "USD", "amount_minor": 2999},
        {"currency": "USD", "interval_count": 12, "amount_minor": 29990},
    ]
    await client.patch(f"{API}/plans/pro", json={"prices": prices}, headers=auth(admin_key))
    clock.set(datetime(2026, 2, 14, 12, 0, 0, 250_000, tzinfo=UTC))
    done = await ok(client, key, f"/subscriptions/{sub['id']}/change", {"billing_cycle": "yearly"})
    assert done["subscription"]["current_period_start"] == "2026-02-14T12:00:00Z"
    assert await drain(billing) == 0
    response = await client.get(f"{API}/invoices", headers=auth(key))
    periods = {
        (i["billing_reason"], i["period_start"], i["period_end"]): i["total_minor"]
        for i in response.json()["items"]
    }
    assert periods == {
        ("subscription_create", "2026-01-31T12:00:00Z", "2026-02-28T12:00:00Z"): 2999,
        ("subscription_cycle", "2026-01-31T12:00:00Z", "2026-02-14T12:00:00Z"): 29990 - 1500,
    }


async def test_a_change_of_cycle_in_the_second_its_period_began_is_invoiced_at_once(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    """The renewal ran and invoiced the closed month; a change in that same second has no
    month to cut short, and its credit and yearly fee waited a year for the next cycle."""
    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    prices = [
        {"currency": "USD", "amount_minor": 2999},
        {"currency": "USD", "interval_count": 12, "amount_minor": 29990},
    ]
    await client.patch(f"{API}/plans/pro", json={"prices": prices}, headers=auth(admin_key))
    clock.set(datetime(2026, 2, 28, 12, tzinfo=UTC))
    await drain(billing)  # the renewal, the January invoice
    await ok(client, key, f"/subscriptions/{sub['id']}/change", {"billing_cycle": "yearly"})
    await drain(billing)
    response = await client.get(f"{API}/invoices", headers=auth(key))
    periods = {
        (i["billing_reason"], i["period_start"], i["period_end"]): i["total_minor"]
        for i in response.json()["items"]
    }
    assert periods == {
        ("subscription_create", "2026-01-31T12:00:00Z", "2026-02-28T12:00:00Z"): 2999,
        ("subscription_cycle", "2026-01-31T12:00:00Z", "2026-02-28T12:00:00Z"): 2999,
        ("subscription_create", "2026-02-28T12:00:00Z", "2027-02-28T12:00:00Z"): 29990 - 2999,
    }


async def test_yearly_to_monthly_waits_for_the_year_end(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    await add_plan(
        client,
        admin_key,
        code="team",
        name="Team",
        prices=[
            {"currency": "USD", "amount_minor": 2999},
            {"currency": "USD", "interval_count": 12, "amount_minor": 29990},
        ],
    )
    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key, plan_type="team", billing_cycle="yearly"))["subscription"]
    assert sub["current_period_end"] == "2027-01-31T12:00:00Z"
    path = f"/subscriptions/{sub['id']}/change"
    clock.set(utc(2026, 7, 31, 12))  # 184 of 365 days left
    preview = await ok(
        client, key, path, {"billing_cycle": "monthly", "when": "immediate", "preview": True}
    )
    assert minor(preview["invoice_items"]) == [
        ("proration_credit", -15118),
        ("subscription_fee", 2999),
    ]
    down = await ok(client, key, path, {"billing_cycle": "monthly"})
    assert (down["direction"], down["when"], down["effective_at"]) == (
        "downgrade",
        "period_end",
        "2027-01-31T12:00:00Z",
    )
    clock.set(utc(2027, 1, 31, 12))
    assert await drain(billing) == 1
    now = (await current(client, key))["subscription"]
    assert now["billing_cycle"] == "monthly"
    assert (now["current_period_start"], now["current_period_end"]) == (
        "2027-01-31T12:00:00Z",
        "2027-02-28T12:00:00Z",
    )
    assert minor(await items_of(client, key, sub["id"])) == [
        ("subscription_fee", 29990),
        ("subscription_fee", 2999),
    ]


async def test_trial_ends_into_a_paid_period_with_the_setup_fee(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    await add_plan(
        client,
        admin_key,
        code="trialed",
        name="Trialed",
        trial_days=14,
        prices=[{"currency": "USD", "amount_minor": 4900, "setup_fee_minor": 1000}],
    )
    account, key = await owner(client, admin_key)
    created = await ok(client, key, "/subscriptions", {"plan_type": "trialed"})
    sub = created["subscription"]
    assert (sub["status"], created["invoice_items"]) == ("trialing", [])
    assert (sub["current_period_start"], sub["current_period_end"]) == (
        "2026-01-31T12:00:00Z",
        "2026-02-14T12:00:00Z",
    )
    clock.set(utc(2026, 2, 14, 11, 59))
    assert await drain(billing) == 0
    clock.set(utc(2026, 2, 14, 12))
    assert await drain(billing) == 1
    now = (await current(client, key))["subscription"]
    assert now["status"] == "active"
    assert (now["current_period_start"], now["current_period_end"]) == (
        "2026-02-14T12:00:00Z",
        "2026-03-14T12:00:00Z",
    )
    assert minor(await items_of(client, key, sub["id"])) == [
        ("subscription_fee", 4900),
        ("setup_fee", 1000),
    ]
    clock.set(utc(2026, 3, 14, 12))
    assert await drain(billing) == 1
    # The setup fee is billed on the first paid period only.
    assert minor(await items_of(client, key, sub["id"]))[2:] == [("subscription_fee", 4900)]
    events = await history(client, key)
    assert [(e["type"], e["from_status"], e["to_status"]) for e in events] == [
        ("created", None, "trialing"),
        ("trial_ended", "trialing", "active"),
        ("renewed", "active", "active"),
    ]


async def test_cancel_at_period_end_resume_and_cancel_now(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    base = f"/subscriptions/{sub['id']}"
    scheduled = await ok(client, key, f"{base}/cancel", {"at_period_end": True})
    assert scheduled["subscription"]["cancel_at_period_end"] is True
    assert scheduled["subscription"]["status"] == "active"
    resumed = await ok(client, key, f"{base}/resume")
    assert resumed["subscription"]["cancel_at_period_end"] is False
    nothing = await post(client, key, f"{base}/resume")
    assert nothing.status_code == 409 and nothing.json()["code"] == "invalid_transition"
    await ok(client, key, f"{base}/cancel")  # default: at period end
    clock.set(utc(2026, 2, 28, 12))
    assert await drain(billing) == 1
    after = await current(client, key)
    assert after["plan"]["code"] == "free" and after["subscription"] is None
    # Nothing billed for a period that never started.
    assert minor(await items_of(client, key, sub["id"])) == [("subscription_fee", 2999)]
    again = await post(client, key, f"{base}/cancel", {"at_period_end": False})
    assert again.status_code == 409 and again.json()["code"] == "invalid_transition"

    # A canceled subscription frees the account for a new one; cancel now ends it at once.
    second = (await subscribe(client, key))["subscription"]
    assert second["current_period_start"] == "2026-02-28T12:00:00Z"
    now = await ok(client, key, f"/subscriptions/{second['id']}/cancel", {"at_period_end": False})
    assert now["subscription"]["status"] == "canceled"
    assert now["subscription"]["ended_at"] == "2026-02-28T12:00:00Z"
    assert now["invoice_items"] == []
    types = [e["type"] for e in await history(client, key)]
    assert types == [
        "created",
        "cancel_scheduled",
        "cancel_revoked",
        "cancel_scheduled",
        "canceled",
        "created",
        "canceled",
    ]


async def test_pause_skips_billing_and_resume_bills_the_rest_of_the_period(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    base = f"/subscriptions/{sub['id']}"
    paused = await ok(client, key, f"{base}/pause")
    assert paused["subscription"]["status"] == "paused"
    assert (await current(client, key))["plan"]["code"] == "free"
    again = await post(client, key, f"{base}/pause")
    assert again.status_code == 409
    changing = await post(client, key, f"{base}/change", {"plan_type": "enterprise"})
    assert changing.status_code == 409 and changing.json()["code"] == "invalid_transition"
    clock.set(utc(2026, 2, 28, 12))
    assert await drain(billing) == 1  # renewal: next period, not billed
    clock.set(utc(2026, 3, 15, 12))  # 16 of 31 days of [Feb 28, Mar 31) left
    resumed = await ok(client, key, f"{base}/resume")
    assert resumed["subscription"]["status"] == "active"
    assert minor(resumed["invoice_items"]) == [("proration_charge", 1548)]
    assert resumed["invoice_items"][0]["amount"] == "15.478709677419354839"
    assert minor(await items_of(client, key, sub["id"])) == [
        ("subscription_fee", 2999),
        ("proration_charge", 1548),
    ]


async def test_resume_runs_the_overdue_renewal_first_and_bills_only_the_rest(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]  # pro 2999, from Jan 31 12:00
    await drain(billing)
    clock.set(utc(2026, 2, 10, 12))
    await ok(client, key, f"/subscriptions/{sub['id']}/pause")
    # The Feb 28 renewal has not run when the customer resumes on Mar 24 12:00: 7 of the 31
    # days of [Feb 28, Mar 31) are left. Without the catch-up the resume billed nothing and
    # the late renewal then billed the whole period.
    clock.set(utc(2026, 3, 24, 12))
    resumed = await ok(client, key, f"/subscriptions/{sub['id']}/resume")
    assert resumed["subscription"]["current_period_start"] == "2026-02-28T12:00:00Z"
    assert minor(resumed["invoice_items"]) == [("proration_charge", 677)]
    await drain(billing)
    assert minor(await items_of(client, key, sub["id"])) == [
        ("subscription_fee", 2999),
        ("proration_charge", 677),
    ]


async def test_preview_and_no_change(client: httpx.AsyncClient, admin_key: str) -> None:
    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    same = await post(client, key, f"/subscriptions/{sub['id']}/change", {"plan_type": "pro"})
    assert same.status_code == 409 and same.json()["code"] == "no_change"
    empty = await post(client, key, f"/subscriptions/{sub['id']}/change", {})
    assert empty.status_code == 422


async def test_idempotent_create_replays(client: httpx.AsyncClient, admin_key: str) -> None:
    account, key = await owner(client, admin_key)
    headers = auth(key, **{"Idempotency-Key": "sub-1"})
    first = await client.post(f"{SUBS}", json=SEED_BODY, headers=headers)
    second = await client.post(f"{SUBS}", json=SEED_BODY, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert first.json() == second.json()


async def test_one_open_subscription_per_account_is_a_database_rule(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    from sqlalchemy.exc import IntegrityError

    from aihub_billing.models import Subscription

    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    async with billing.db.sessions() as session:
        row = await session.get(Subscription, sub["id"])
        assert row is not None
        copy = {c.key: getattr(row, c.key) for c in Subscription.__table__.columns}
    copy["id"] = "sub_copy"
    try:
        async with billing.transaction() as session:
            session.add(Subscription(**copy))
        raise AssertionError("a second open subscription was stored")
    except IntegrityError:
        pass
    # A canceled one next to the open one is fine.
    async with billing.transaction() as session:
        session.add(Subscription(**{**copy, "status": "canceled"}))


async def test_renewal_job_is_enqueued_once_with_the_change(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    async with billing.db.sessions() as session:
        jobs = list((await session.execute(select(Job))).scalars())
    # With the renewal, the first period's invoice generation (tests/invoices).
    [job] = [j for j in jobs if j.name.startswith("subscriptions.")]
    assert job.name == "subscriptions.renew" and job.test_clock_id is None
    assert iso(job.run_at) == sub["current_period_end"]
    assert job.dedupe_key == f"subscriptions.renew:{sub['id']}:2026-02-28T12:00:00+00:00"


async def test_concurrent_upgrades_prorate_once(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock
) -> None:
    import asyncio

    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    clock.set(utc(2026, 2, 14, 12))
    path = f"/subscriptions/{sub['id']}/change"
    first, second = await asyncio.gather(
        post(client, key, path, {"plan_type": "enterprise"}),
        post(client, key, path, {"plan_type": "enterprise"}),
    )
    # The row lock serializes them: the second sees enterprise and has nothing to do.
    assert sorted([first.status_code, second.status_code]) == [200, 409]
    assert minor(await items_of(client, key, sub["id"])) == [
        ("subscription_fee", 2999),
        ("proration_credit", -1500),
        ("proration_charge", 5000),
    ]


async def test_custom_cycle_in_days(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    await add_plan(
        client,
        admin_key,
        code="tenday",
        name="Ten days",
        prices=[
            {"currency": "EUR", "interval_unit": "day", "interval_count": 10, "amount_minor": 1000}
        ],
    )
    account, key = await owner(client, admin_key, currency="EUR")
    created = await subscribe(client, key, plan_type="tenday", billing_cycle="custom")
    sub = created["subscription"]
    assert (sub["billing_cycle"], sub["interval_unit"], sub["interval_count"]) == (
        "custom",
        "day",
        10,
    )
    assert sub["current_period_end"] == "2026-02-10T12:00:00Z"
    assert minor(created["invoice_items"]) == [("subscription_fee", 1000)]
    assert created["invoice_items"][0]["currency"] == "EUR"
    clock.set(utc(2026, 2, 20, 12))
    assert await drain(billing) == 2  # two renewals, each from the anchor
    assert (await current(client, key))["period_end"] == "2026-03-02T12:00:00Z"


async def test_free_to_paid_needs_a_payment_method_and_a_coupon_alone_prorates_nothing(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock
) -> None:
    account, key = await owner(client, admin_key)
    free = await ok(client, key, "/subscriptions", {"plan_type": "free"})
    assert free["invoice_items"] == []
    path = f"/subscriptions/{free['subscription']['id']}/change"
    refused = await post(client, key, path, {"plan_type": "pro"})
    assert refused.status_code == 400 and refused.json()["code"] == "payment_method_required"
    clock.set(utc(2026, 2, 14, 12))
    up = await ok(
        client,
        key,
        path,
        {"plan_type": "pro", "payment_provider": "paypal", "payment_method_id": "ba_1"},
    )
    # Nothing to credit on a free plan; 14 of 28 days of pro are charged.
    assert minor(up["invoice_items"]) == [("proration_charge", 1500)]
    assert up["subscription"]["payment_provider"] == "paypal"
    await ok(client, admin_key, "/coupons", {"code": "TEN", "percent_off": "10"})
    coupon_only = await ok(client, key, path, {"coupon": "TEN"})
    assert (coupon_only["direction"], coupon_only["invoice_items"]) == ("none", [])


async def test_asking_for_the_running_plan_withdraws_a_scheduled_downgrade(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key, plan_type="enterprise"))["subscription"]
    path = f"/subscriptions/{sub['id']}/change"
    await ok(client, key, path, {"plan_type": "pro"})
    back = await ok(client, key, path, {"plan_type": "enterprise"})
    assert back["subscription"]["pending_change"] is None and back["invoice_items"] == []
    assert [e["type"] for e in await history(client, key)][-1] == "change_canceled"


async def test_a_change_during_the_trial_switches_without_billing(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    sub = (
        await ok(
            client,
            admin_key,
            "/subscriptions",
            {**SEED_BODY, "account_id": account, "trial_days": 10},
        )
    )["subscription"]
    clock.set(utc(2026, 2, 5, 12))
    up = await ok(client, key, f"/subscriptions/{sub['id']}/change", {"plan_type": "enterprise"})
    assert (up["direction"], up["invoice_items"]) == ("trial", [])
    assert up["subscription"]["status"] == "trialing"
    clock.set(utc(2026, 2, 10, 12))
    assert await drain(billing) == 1
    assert minor(await items_of(client, key, sub["id"])) == [("subscription_fee", 9999)]
    page = await client.get(f"{SUBS}/history", params={"limit": 2}, headers=auth(key))
    assert [e["type"] for e in page.json()["items"]] == ["created", "plan_changed"]
    rest = await client.get(
        f"{SUBS}/history", params={"cursor": page.json()["next_cursor"]}, headers=auth(key)
    )
    assert [e["type"] for e in rest.json()["items"]] == ["trial_ended"]
    assert rest.json()["next_cursor"] is None


async def test_free_monthly_to_paid_yearly_bills_the_year_once(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock
) -> None:
    await add_plan(
        client,
        admin_key,
        code="annual",
        name="Annual",
        prices=[{"currency": "USD", "interval_count": 12, "amount_minor": 29990}],
    )
    account, key = await owner(client, admin_key)
    sub = (await ok(client, key, "/subscriptions", {"plan_type": "free"}))["subscription"]
    clock.set(utc(2026, 2, 14, 12))
    up = await ok(
        client,
        key,
        f"/subscriptions/{sub['id']}/change",
        {"plan_type": "annual", "billing_cycle": "yearly", "payment_method_id": "pm_9"},
    )
    assert minor(up["invoice_items"]) == [("subscription_fee", 29990)]
    assert minor(await items_of(client, key, sub["id"])) == [("subscription_fee", 29990)]
    assert up["subscription"]["current_period_end"] == "2027-02-14T12:00:00Z"


async def test_concurrent_creates_for_one_account_give_one_subscription(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    import asyncio

    account, key = await owner(client, admin_key)
    responses = await asyncio.gather(
        *(post(client, key, "/subscriptions", SEED_BODY) for _ in range(3))
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409]
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"subscription_exists"}


async def test_a_plan_change_never_bills_the_new_plans_setup_fee(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    for code, fee, setup in (("starter", 2000, 500), ("scale", 6000, 1500)):
        prices = [
            {
                "currency": "USD",
                "interval_count": n,
                "amount_minor": fee * n,
                "setup_fee_minor": setup,
            }
            for n in (1, 12)
        ]
        await add_plan(client, admin_key, code=code, name=code.title(), prices=prices)
    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key, plan_type="starter"))["subscription"]
    assert minor(await items_of(client, key, sub["id"])) == [
        ("subscription_fee", 2000),
        ("setup_fee", 500),
    ]
    base = f"/subscriptions/{sub['id']}/change"
    clock.set(utc(2026, 2, 14, 12))
    upgraded = await ok(client, key, base, {"plan_type": "scale"})
    assert [kind for kind, _ in minor(upgraded["invoice_items"])] == [
        "proration_credit",
        "proration_charge",
    ]
    # A new cycle starts with the change: a whole fee, still no second setup fee.
    yearly = await ok(client, key, base, {"plan_type": "scale", "billing_cycle": "yearly"})
    assert "setup_fee" not in [kind for kind, _ in minor(yearly["invoice_items"])]
    clock.set(utc(2027, 2, 14, 12))
    assert await drain(billing) >= 1
    kinds = [kind for kind, _ in minor(await items_of(client, key, sub["id"]))]
    assert kinds.count("setup_fee") == 1
