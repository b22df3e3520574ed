"""A plan change at or just after the period end, before the renewal job has run: the overdue
renewal runs first (as cancel runs it), so the change applies to the new period, and the
renewal job that runs later bills nothing again."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.service import BillingService
from tests.invoices.helpers import invoices_by_period
from tests.subscriptions.helpers import (
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


@pytest.fixture
def clock() -> FrozenClock:
    # A January period: the boundary is February 1 at midnight.
    return FrozenClock(utc(2026, 1, 1))


def spans(items: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [(i["kind"], i["amount_minor"], i["period_start"], i["period_end"]) for i in items]


JAN = ("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z")
FEB = ("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z")


async def test_an_upgrade_at_the_period_end_before_the_renewal_applies_to_the_new_period(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    _, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    await drain(billing)  # the first period's invoice
    clock.set(utc(2026, 2, 1))  # the period ends now; its renewal job has not run

    done = await ok(client, key, f"/subscriptions/{sub['id']}/change", {"plan_type": "enterprise"})
    assert (done["direction"], done["when"], done["effective_at"]) == (
        "upgrade",
        "immediate",
        "2026-02-01T00:00:00Z",
    )
    body = done["subscription"]
    assert body["plan"]["code"] == "enterprise"
    assert (body["current_period_start"], body["current_period_end"]) == FEB
    # February's whole pro fee is credited back and its whole enterprise fee charged.
    assert spans(done["invoice_items"]) == [
        ("proration_credit", -2999, *FEB),
        ("proration_charge", 9999, *FEB),
    ]
    assert spans(await items_of(client, key, sub["id"])) == [
        ("subscription_fee", 2999, *JAN),
        ("subscription_fee", 2999, *FEB),  # the renewal's fee, in advance
        ("proration_credit", -2999, *FEB),
        ("proration_charge", 9999, *FEB),
    ]
    assert [e["type"] for e in await history(client, key)] == [
        "created",
        "renewed",
        "plan_changed",
    ]

    # The renewal job for February 1 finds the period moved on: nothing is billed again.
    await drain(billing)
    assert len(await items_of(client, key, sub["id"])) == 4
    assert [e["type"] for e in await history(client, key)] == [
        "created",
        "renewed",
        "plan_changed",
    ]
    assert await invoices_by_period(client, key) == [
        ("subscription_create", *JAN, [("subscription_fee", 2999)]),
        (
            "subscription_cycle",
            *JAN,
            [
                ("subscription_fee", 2999),
                ("proration_credit", -2999),
                ("proration_charge", 9999),
            ],
        ),
    ]
    assert await drain(billing) == 0


async def test_an_upgrade_just_after_the_period_end_prorates_the_new_period(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    _, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    await drain(billing)
    clock.set(utc(2026, 2, 1, 6))  # six hours into February, the renewal still pending

    done = await ok(client, key, f"/subscriptions/{sub['id']}/change", {"plan_type": "enterprise"})
    # 666 of February's 672 hours are left: 2999 and 9999 times 666/672, half-up.
    rest = ("2026-02-01T06:00:00Z", FEB[1])
    assert spans(done["invoice_items"]) == [
        ("proration_credit", -2972, *rest),
        ("proration_charge", 9910, *rest),
    ]
    assert (done["subscription"]["current_period_start"], done["effective_at"]) == (
        FEB[0],
        "2026-02-01T06:00:00Z",
    )
    await drain(billing)
    assert minor(await items_of(client, key, sub["id"])) == [
        ("subscription_fee", 2999),
        ("subscription_fee", 2999),
        ("proration_credit", -2972),
        ("proration_charge", 9910),
    ]
    # January's cycle invoice carries February's fee and the change made with its renewal.
    [_, cycle] = await invoices_by_period(client, key)
    assert cycle == (
        "subscription_cycle",
        *JAN,
        [("subscription_fee", 2999), ("proration_credit", -2972), ("proration_charge", 9910)],
    )


async def test_a_preview_at_the_period_end_prices_the_new_period(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    _, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    await drain(billing)
    clock.set(utc(2026, 2, 1))
    path = f"/subscriptions/{sub['id']}/change"

    preview = await ok(client, key, path, {"plan_type": "enterprise", "preview": True})
    assert spans(preview["invoice_items"]) == [
        ("proration_credit", -2999, *FEB),
        ("proration_charge", 9999, *FEB),
    ]
    # The change itself is not made; the renewal that was due by the clock is.
    assert preview["subscription"]["plan"]["code"] == "pro"
    assert (
        preview["subscription"]["current_period_start"],
        preview["subscription"]["current_period_end"],
    ) == FEB
    assert [e["type"] for e in await history(client, key)] == ["created", "renewed"]

    done = await ok(client, key, path, {"plan_type": "enterprise"})
    assert minor(done["invoice_items"]) == minor(preview["invoice_items"])
    await drain(billing)
    assert minor(await items_of(client, key, sub["id"])) == [
        ("subscription_fee", 2999),
        ("subscription_fee", 2999),
        ("proration_credit", -2999),
        ("proration_charge", 9999),
    ]


async def test_a_change_after_an_overdue_scheduled_cancellation_is_refused(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    _, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    await ok(client, key, f"/subscriptions/{sub['id']}/cancel", {"at_period_end": True})
    clock.set(utc(2026, 2, 1))  # the cancellation is due; its renewal job has not run

    refused = await post(
        client, key, f"/subscriptions/{sub['id']}/change", {"plan_type": "enterprise"}
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "invalid_transition"
    assert "canceled" in refused.json()["detail"]
    await drain(billing)
    # The job ends it at the period end, as scheduled; nothing was billed for February.
    assert minor(await items_of(client, key, sub["id"])) == [("subscription_fee", 2999)]
    assert [e["type"] for e in await history(client, key)] == [
        "created",
        "cancel_scheduled",
        "canceled",
    ]
