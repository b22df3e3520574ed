"""Which provider a payment uses: the request's, the subscription's, the account's default,
then the first enabled one; and the account's payment settings. On SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from aihub_billing.models import AuditEntry, Invoice
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth, issue_key
from tests.payments.fakes.stripe_server import StripeFake
from tests.payments.support import owner_of_new_account, post

SETTINGS = f"{API}/payments/settings"


async def put_settings(
    client: httpx.AsyncClient, key: str, provider: str | None, **body: Any
) -> httpx.Response:
    return await client.put(
        SETTINGS, json={"default_provider": provider, **body}, headers=auth(key)
    )


async def intent(client: httpx.AsyncClient, key: str, **body: Any) -> dict[str, Any]:
    created = await post(
        client, key, "/payments/intents", {"amount_minor": 1200, "currency": "USD", **body}
    )
    assert created.status_code == 201, created.text
    result: dict[str, Any] = created.json()
    return result


async def subscribe(
    client: httpx.AsyncClient, key: str, provider: str, method: str
) -> dict[str, Any]:
    body = {"plan_type": "pro", "payment_provider": provider, "payment_method_id": method}
    created = await post(client, key, "/subscriptions", body)
    assert created.status_code == 201, created.text
    sub: dict[str, Any] = created.json()["subscription"]
    return sub


async def test_settings_are_read_and_set_by_owner_billing_and_operator_only(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account_id, key = await owner_of_new_account(client, admin_key)
    shown = await client.get(SETTINGS, headers=auth(key))
    assert shown.status_code == 200, shown.text
    assert shown.json() == {"account_id": account_id, "default_provider": None, "updated_at": None}

    assert (await put_settings(client, key, "paypal")).json()["default_provider"] == "paypal"
    billing_key = await issue_key(client, admin_key, account_id, "billing")
    assert (await put_settings(client, billing_key, "stripe")).status_code == 200
    member = await issue_key(client, admin_key, account_id, "member")
    refused = await put_settings(client, member, "paypal")
    assert refused.status_code == 403
    assert (await client.get(SETTINGS, headers=auth(member))).status_code == 403

    # The operator names the account; another account's owner cannot see or set it.
    assert (await put_settings(client, admin_key, "paypal")).json()["code"] == "account_required"
    by_admin = await put_settings(client, admin_key, "paypal", account_id=account_id)
    assert by_admin.status_code == 200 and by_admin.json()["default_provider"] == "paypal"
    _, other = await owner_of_new_account(client, admin_key)
    foreign = await put_settings(client, other, "stripe", account_id=account_id)
    assert foreign.status_code == 404
    seen = await client.get(SETTINGS, params={"account_id": account_id}, headers=auth(admin_key))
    assert seen.json()["default_provider"] == "paypal"

    unknown = await put_settings(client, key, "bitcoin")
    assert unknown.status_code == 422
    cleared = await put_settings(client, key, None)
    assert cleared.status_code == 200 and cleared.json()["default_provider"] is None
    async with billing.db.sessions() as session:
        actions = (
            await session.execute(
                select(AuditEntry.action).where(AuditEntry.object_id == account_id)
            )
        ).scalars()
        assert list(actions).count("payment_settings.updated") == 4


async def test_a_provider_that_is_not_enabled_cannot_be_the_default(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    billing.config.paypal.enabled = False
    try:
        refused = await put_settings(client, key, "paypal")
    finally:
        billing.config.paypal.enabled = True
    assert refused.status_code == 400 and refused.json()["code"] == "provider_not_configured"
    assert (await client.get(SETTINGS, headers=auth(key))).json()["default_provider"] is None


async def test_the_account_default_then_the_first_enabled_provider(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    _, plain = await owner_of_new_account(client, admin_key)
    await put_settings(client, key, "paypal")
    assert (await intent(client, key))["provider"] == "paypal"
    assert (await intent(client, key, provider="stripe"))["provider"] == "stripe"
    # No default: the first enabled provider in the config.
    assert (await intent(client, plain))["provider"] == "stripe"


async def test_the_subscription_provider_and_method_come_before_the_account_default(
    client: httpx.AsyncClient, admin_key: str, stripe_fake: StripeFake, billing: BillingService
) -> None:
    account_id, key = await owner_of_new_account(client, admin_key)
    token = stripe_fake.add_payment_method(last4="1881")
    method = await post(client, key, "/payment-methods", {"provider": "stripe", "token": token})
    assert method.status_code == 201, method.text
    # The subscription stored the provider's token it was created with.
    sub = await subscribe(client, key, "stripe", token)
    await put_settings(client, key, "paypal")

    named = await intent(client, key, subscription_id=sub["id"])
    assert (named["provider"], named["subscription_id"]) == ("stripe", sub["id"])
    assert named["payment_method_id"] == method.json()["id"]
    assert named["status"] == "requires_confirmation"  # the saved method is on the intent
    # The request's provider still comes first; the Stripe method is not used at PayPal.
    explicit = await intent(client, key, subscription_id=sub["id"], provider="paypal")
    assert explicit["provider"] == "paypal" and explicit["payment_method_id"] is None

    # An invoice of the subscription leads to the same subscription.
    now = billing.clock.now()
    async with billing.db.sessions() as session:
        session.add(
            Invoice(
                id="inv_sub_1",
                account_id=account_id,
                subscription_id=sub["id"],
                billing_reason="manual",
                status="open",
                currency="USD",
                period_start=now,
                period_end=now,
                # Something is due: an intent pays an invoice up to what it still has due.
                subtotal_minor=1200,
                total_minor=1200,
                amount_due_minor=1200,
                created_at=now,
                updated_at=now,
            )
        )
        await session.commit()
    by_invoice = await intent(client, key, invoice_id="inv_sub_1")
    assert (by_invoice["provider"], by_invoice["subscription_id"]) == ("stripe", sub["id"])
    # An invoice of nothing we know: the account's default.
    unknown = await intent(client, key, invoice_id="inv_elsewhere")
    assert (unknown["provider"], unknown["subscription_id"]) == ("paypal", None)
    assert account_id == sub["account_id"]


async def test_a_subscription_without_a_provider_falls_back_and_others_are_404(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    created = await post(
        client, key, "/subscriptions", {"plan_type": "pro", "payment_method_id": "pm_unknown"}
    )
    assert created.status_code == 201, created.text
    sub = created.json()["subscription"]
    await put_settings(client, key, "paypal")
    paid = await intent(client, key, subscription_id=sub["id"])
    assert (paid["provider"], paid["payment_method_id"]) == ("paypal", None)

    _, other = await owner_of_new_account(client, admin_key)
    refused = await post(
        client,
        other,
        "/payments/intents",
        {"amount_minor": 100, "currency": "USD", "subscription_id": sub["id"]},
    )
    assert refused.status_code == 404 and refused.json()["code"] == "subscription_not_found"
