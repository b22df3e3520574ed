"""A simulation on a test clock feeds none of the business counters the alerts watch (payment
attempts, cancellations, quota checks): a dunning run over test accounts with failing cards
must not page anyone. The same events of a real account are counted. Run with the payments
tests' fixtures: Stripe and PayPal enabled, at their local fakes."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import REGISTRY

from aihub_billing.kit.context import SYSTEM, Context
from aihub_billing.models import Subscription
from aihub_billing.service import BillingService
from aihub_billing.subscriptions.service import subscriptions
from tests.invoices.helpers import advance, clocked_account
from tests.payments.fakes.stripe_server import StripeFake
from tests.payments.support import (  # noqa: F401
    billing,
    new_intent,
    owner_of_new_account,
    paypal_fake,
    paypal_key,
    stripe_fake,
)
from tests.quota.test_api import check, override
from tests.subscriptions.helpers import SEED_BODY, current, ok, owner, post, subscribe

# What is counted does not depend on the database: SQLite only.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

START = "2026-01-01T00:00:00Z"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def payments() -> tuple[float, float]:
    name = "aihub_billing_payment_attempts_total"
    return (
        sample(name, provider="stripe", outcome="succeeded"),
        sample(name, provider="stripe", outcome="failed"),
    )


def cancellations() -> tuple[float, float]:
    name = "aihub_billing_subscription_cancellations_total"
    return sample(name, mode="at_period_end"), sample(name, mode="immediate")


def quota_checks() -> tuple[float, float, float]:
    name = "aihub_billing_quota_checks_total"
    return tuple(  # type: ignore[return-value]
        sample(name, result=result) for result in ("admitted", "blocked", "rate_limited")
    )


def moved(after: tuple[float, ...], before: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(a - b for a, b in zip(after, before, strict=True))


async def test_a_dunning_run_on_a_test_clock_counts_no_payment_and_no_cancellation(
    client: httpx.AsyncClient,
    admin_key: str,
    stripe_fake: StripeFake,  # noqa: F811
) -> None:
    clock_id, _, key = await clocked_account(client, admin_key, START)
    token = stripe_fake.add_payment_method()
    await ok(client, key, "/payment-methods", {"provider": "stripe", "token": token})
    body = {**SEED_BODY, "payment_provider": "stripe", "payment_method_id": token}
    await ok(client, key, "/subscriptions", body)
    paid_before, canceled_before = payments(), cancellations()
    stripe_fake.behave(*["decline"] * 5)
    # Collection fails on the 1st, dunning retries on the 2nd, 4th, 6th and 8th, then cancels.
    await advance(client, admin_key, clock_id, "2026-01-09T00:00:00Z")
    assert (await current(client, key))["subscription"] is None
    assert moved(payments(), paid_before) == (0, 0)
    assert moved(cancellations(), canceled_before) == (0, 0)


async def test_payment_attempts_of_a_clocked_account_are_not_counted_a_real_ones_are(
    client: httpx.AsyncClient,
    admin_key: str,
    stripe_fake: StripeFake,  # noqa: F811
) -> None:
    _, _, clocked_key = await clocked_account(client, admin_key, START)
    _, real_key = await owner_of_new_account(client, admin_key)
    before = payments()
    for key in (clocked_key, real_key):
        payment = await new_intent(client, key, "stripe", stripe_fake)
        stripe_fake.behave("decline")
        declined = await post(client, key, f"/payments/{payment['id']}/confirm")
        assert declined.status_code == 402, declined.text
        paid = await post(client, key, f"/payments/{payment['id']}/confirm")
        assert paid.json()["status"] == "succeeded", paid.text
    assert moved(payments(), before) == (1, 1)


async def test_cancellations_of_a_clocked_account_are_not_counted_a_real_ones_are(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    _, _, clocked_key = await clocked_account(client, admin_key, START)
    _, real_key = await owner(client, admin_key)
    before = cancellations()
    for key in (clocked_key, real_key):
        first = (await subscribe(client, key))["subscription"]
        await ok(client, key, f"/subscriptions/{first['id']}/cancel", {"at_period_end": True})
        await ok(client, key, f"/subscriptions/{first['id']}/cancel", {"at_period_end": False})
        second = (await subscribe(client, key))["subscription"]
        await ok(client, key, f"/subscriptions/{second['id']}/cancel", {"at_period_end": False})
    assert moved(cancellations(), before) == (1, 1)


async def test_a_provider_cancellation_of_a_clocked_account_is_not_counted(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,  # noqa: F811
) -> None:
    _, _, clocked_key = await clocked_account(client, admin_key, START)
    _, real_key = await owner(client, admin_key)
    ids = [(await subscribe(client, key))["subscription"]["id"] for key in (clocked_key, real_key)]
    before = cancellations()
    async with billing.db.sessions() as session:
        for sub_id in ids:  # as if the provider billed it
            sub = await session.get(Subscription, sub_id)
            assert sub is not None
            sub.payment_provider, sub.provider_subscription_id = "stripe", f"sub_{sub_id}"
        await session.commit()
    for sub_id in ids:
        async with billing.db.sessions() as session:
            done = await subscriptions.apply_provider_status(
                session,
                Context(actor=SYSTEM),
                provider="stripe",
                provider_subscription_id=f"sub_{sub_id}",
                status="canceled",
                canceled=True,
                event_id=f"evt_{sub_id}",
            )
            assert done.startswith("applied"), done
            await session.commit()
    assert moved(cancellations(), before) == (0, 1)


async def test_quota_checks_of_a_clocked_account_are_not_counted_a_real_ones_are(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    _, clocked_id, clocked_key = await clocked_account(client, admin_key, START)
    real_id, real_key = await owner(client, admin_key)
    before = quota_checks()
    for account_id, key in ((clocked_id, clocked_key), (real_id, real_key)):
        await override(client, admin_key, account_id=account_id, included_api_calls=1)
        assert (await check(client, key)).status_code == 200
        assert (await check(client, key)).status_code == 402
        await override(client, admin_key, account_id=account_id, rpm_limit=1)
        assert (await check(client, key)).status_code == 429
        await override(client, admin_key, account_id=account_id, allowed_models=["other"])
        assert (await check(client, key)).status_code in (402, 403, 429)
    assert moved(quota_checks(), before) == (1, 2, 1)
