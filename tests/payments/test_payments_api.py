"""Payments API against both provider fakes, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from aihub_billing.models import AuditEntry, Payment, RefundRecord
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth, issue_key
from tests.payments.fakes.paypal_server import PayPalFake
from tests.payments.fakes.stripe_server import StripeFake
from tests.payments.support import new_intent, owner_of_new_account, post

PROVIDERS = ["stripe", "paypal"]


class Fakes:
    def __init__(self, stripe: StripeFake, paypal: PayPalFake) -> None:
        self.stripe, self.paypal = stripe, paypal

    def of(self, provider: str) -> StripeFake | PayPalFake:
        return self.stripe if provider == "stripe" else self.paypal


@pytest.fixture
def fakes(stripe_fake: StripeFake, paypal_fake: PayPalFake) -> Fakes:
    return Fakes(stripe_fake, paypal_fake)


async def new_payment(
    client: httpx.AsyncClient,
    key: str,
    provider: str,
    fakes: Fakes,
    amount: int = 2500,
    **body: Any,
) -> dict[str, Any]:
    return await new_intent(client, key, provider, fakes.stripe, amount, **body)


async def count(billing: BillingService, model: type) -> int:
    async with billing.db.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_pay_then_refund_partly_then_fully(
    client: httpx.AsyncClient, admin_key: str, provider: str, fakes: Fakes
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    payment = await new_payment(client, key, provider, fakes, invoice_id="inv_opaque_1")
    assert payment["invoice_id"] == "inv_opaque_1" and payment["amount_minor"] == 2500
    if provider == "paypal":  # the buyer approves the order at PayPal first
        assert payment["status"] == "requires_action"
        assert payment["next_action"]["approval_url"].startswith("https://www.sandbox.paypal.com")
    else:
        assert payment["status"] == "requires_confirmation"

    confirmed = await post(client, key, f"/payments/{payment['id']}/confirm")
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "succeeded"
    assert len(fakes.of(provider).charges) == 1

    partial = await post(client, key, f"/payments/{payment['id']}/refund", {"amount_minor": 1000})
    assert partial.status_code == 201, partial.text
    assert partial.json()["status"] == "succeeded" and partial.json()["amount_minor"] == 1000
    too_much = await post(client, key, f"/payments/{payment['id']}/refund", {"amount_minor": 1501})
    assert too_much.status_code == 409 and too_much.json()["code"] == "refund_exceeds_payment"
    rest = await post(client, key, f"/payments/{payment['id']}/refund", {})
    assert rest.status_code == 201 and rest.json()["amount_minor"] == 1500
    again = await post(client, key, f"/payments/{payment['id']}/refund", {"amount_minor": 1})
    assert again.status_code == 409 and again.json()["code"] == "payment_not_refundable"

    shown = await client.get(f"{API}/payments/{payment['id']}", headers=auth(key))
    assert shown.json()["refunded_minor"] == 2500 and shown.json()["status"] == "succeeded"
    if provider == "paypal":
        assert fakes.paypal.schema_violations == []


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_replayed_create_makes_one_payment(
    client: httpx.AsyncClient, admin_key: str, provider: str, fakes: Fakes, billing: BillingService
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    body = {"amount_minor": 700, "currency": "EUR", "provider": provider}
    first = await post(client, key, "/payments/intents", body, **{"Idempotency-Key": "p-1"})
    second = await post(client, key, "/payments/intents", body, **{"Idempotency-Key": "p-1"})
    assert first.status_code == second.status_code == 201
    assert second.json()["id"] == first.json()["id"]
    assert await count(billing, Payment) == 1


def confirm_keys(fake: StripeFake | PayPalFake, provider: str, since: int = 0) -> list[str]:
    """The provider idempotency keys of the confirm/capture calls the fake received."""
    header = "idempotency-key" if provider == "stripe" else "paypal-request-id"
    return [
        r[2].get(header, "")
        for r in fake.requests[since:]
        if r[1].endswith("/confirm") or r[1].endswith("/capture")
    ]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_decline_is_402_and_recorded_on_the_payment(
    client: httpx.AsyncClient, admin_key: str, provider: str, fakes: Fakes, billing: BillingService
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    payment = await new_payment(client, key, provider, fakes)
    fake = fakes.of(provider)
    fake.behave("decline")
    path = f"/payments/{payment['id']}/confirm"
    declined = await post(client, key, path, **{"Idempotency-Key": "confirm-1"})
    assert declined.status_code == 402, declined.text
    assert declined.headers["content-type"].startswith("application/problem+json")
    problem = declined.json()
    assert problem["code"] == "payment_declined" and problem["payment_id"] == payment["id"]
    assert fake.charges == []

    # The decline outlived the request: the payment is failed, with the provider's reason.
    shown = (await client.get(f"{API}/payments/{payment['id']}", headers=auth(key))).json()
    code, message = {
        "stripe": ("insufficient_funds", "Your card has insufficient funds."),
        "paypal": ("INSTRUMENT_DECLINED", "PayPal declined the payment"),
    }[provider]
    assert (shown["status"], shown["failure_code"], shown["failure_message"]) == (
        "failed",
        code,
        message,
    )
    async with billing.db.sessions() as session:
        row = await session.get(Payment, payment["id"])
        assert row is not None and row.confirm_attempts == 1
        actions = (
            await session.execute(
                select(AuditEntry.action).where(AuditEntry.object_id == payment["id"])
            )
        ).scalars()
        assert "payment.declined" in list(actions)

    # A replay of the same request answers the stored 402 without asking the provider again.
    replayed = await post(client, key, path, **{"Idempotency-Key": "confirm-1"})
    assert replayed.status_code == 402 and replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json() == problem
    assert replayed.headers["content-type"].startswith("application/problem+json")
    assert len(confirm_keys(fake, provider)) == 1

    # A new try (a new card at Stripe; again at PayPal) is a new attempt with a new key.
    body = None
    if provider == "stripe":
        token = fakes.stripe.add_payment_method(last4="0005")
        other = await post(client, key, "/payment-methods", {"token": token})
        body = {"payment_method_id": other.json()["id"]}
    retried = await post(client, key, path, body, **{"Idempotency-Key": "confirm-2"})
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "succeeded" and retried.json()["failure_code"] is None
    first, second = confirm_keys(fake, provider)
    assert first != second and ":confirm:1:" in second
    assert len(fake.charges) == 1


async def test_an_error_that_is_not_an_outcome_still_rolls_back(
    client: httpx.AsyncClient, admin_key: str, fakes: Fakes, billing: BillingService
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    payment = await new_payment(client, key, "stripe", fakes)
    fakes.stripe.behave("5xx", "5xx", "5xx")
    path = f"/payments/{payment['id']}/confirm"
    down = await post(client, key, path, **{"Idempotency-Key": "confirm-down"})
    assert down.status_code == 503
    async with billing.db.sessions() as session:
        row = await session.get(Payment, payment["id"])
        assert row is not None and row.confirm_attempts == 0
        assert row.status == "requires_confirmation"
    # Nothing was stored under the key: the same request runs again, and charges.
    again = await post(client, key, path, **{"Idempotency-Key": "confirm-down"})
    assert again.status_code == 200 and "idempotent-replayed" not in again.headers


async def test_3d_secure_answers_requires_action_with_the_client_secret(
    client: httpx.AsyncClient, admin_key: str, fakes: Fakes
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    payment = await new_payment(client, key, "stripe", fakes)
    fakes.stripe.behave("3ds")
    confirmed = await post(client, key, f"/payments/{payment['id']}/confirm")
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "requires_action"
    assert confirmed.json()["next_action"]["client_secret"].startswith(
        payment["provider_payment_id"]
    )


async def test_an_unapproved_paypal_order_answers_requires_action_with_the_link(
    client: httpx.AsyncClient, admin_key: str, fakes: Fakes
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    fakes.paypal.require_approval = True
    payment = await new_payment(client, key, "paypal", fakes)
    pending = await post(client, key, f"/payments/{payment['id']}/confirm")
    assert pending.status_code == 200 and pending.json()["status"] == "requires_action"
    assert "checkoutnow" in pending.json()["next_action"]["approval_url"]
    fakes.paypal.approve(payment["provider_payment_id"])
    done = await post(client, key, f"/payments/{payment['id']}/confirm")
    assert done.json()["status"] == "succeeded" and len(fakes.paypal.charges) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("failure", ["5xx", "drop_after_charge"])
async def test_a_transient_failure_is_retried_with_the_same_key_and_charges_once(
    client: httpx.AsyncClient, admin_key: str, provider: str, failure: str, fakes: Fakes
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    payment = await new_payment(client, key, provider, fakes)
    fake = fakes.of(provider)
    fake.behave(failure)
    before = len(fake.requests)
    confirmed = await post(client, key, f"/payments/{payment['id']}/confirm")
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "succeeded"
    assert len(fake.charges) == 1
    header = "idempotency-key" if provider == "stripe" else "paypal-request-id"
    keys = [
        r[2].get(header)
        for r in fake.requests[before:]
        if r[1].endswith("/confirm") or r[1].endswith("/capture")
    ]
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0].startswith(f"payment:{payment['id']}")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_provider_that_stays_down_is_503_and_a_later_retry_charges_once(
    client: httpx.AsyncClient, admin_key: str, provider: str, fakes: Fakes
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    payment = await new_payment(client, key, provider, fakes)
    fakes.of(provider).behave("5xx", "5xx", "5xx")
    down = await post(client, key, f"/payments/{payment['id']}/confirm")
    assert down.status_code == 503 and down.json()["code"] == "provider_unavailable"
    assert "retry-after" in down.headers
    again = await post(client, key, f"/payments/{payment['id']}/confirm")
    assert again.json()["status"] == "succeeded" and len(fakes.of(provider).charges) == 1


async def test_payment_methods_attach_list_detach(
    client: httpx.AsyncClient, admin_key: str, fakes: Fakes
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    token = fakes.stripe.add_payment_method(brand="mastercard", last4="4444")
    attached = await post(client, key, "/payment-methods", {"token": token})
    assert attached.status_code == 201, attached.text
    method = attached.json()
    assert (method["brand"], method["last4"], method["exp_year"]) == ("mastercard", "4444", 2030)
    listed = await client.get(f"{API}/payment-methods", headers=auth(key))
    assert [m["id"] for m in listed.json()] == [method["id"]]
    detached = await client.delete(f"{API}/payment-methods/{method['id']}", headers=auth(key))
    assert detached.status_code == 200 and detached.json()["status"] == "detached"
    assert fakes.stripe.methods[token]["customer"] is None
    assert (await client.get(f"{API}/payment-methods", headers=auth(key))).json() == []


async def test_reattaching_a_detached_card_audits_what_it_was(
    client: httpx.AsyncClient, admin_key: str, fakes: Fakes
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    token = fakes.stripe.add_payment_method()
    method = (await post(client, key, "/payment-methods", {"token": token})).json()
    gone = await client.delete(f"{API}/payment-methods/{method['id']}", headers=auth(key))
    assert gone.status_code == 200, gone.text
    again = await post(client, key, "/payment-methods", {"token": token})
    assert again.status_code == 201 and again.json()["id"] == method["id"], again.text
    # Attaching an active card again changes nothing: no entry.
    same = await post(client, key, "/payment-methods", {"token": token})
    assert same.status_code == 201 and same.json()["id"] == method["id"], same.text

    log = await client.get(
        f"{API}/audit-log", params={"object_id": method["id"]}, headers=auth(admin_key)
    )
    entries = log.json()["items"]  # newest first
    actions = ["payment_method.attached", "payment_method.detached", "payment_method.attached"]
    assert [e["action"] for e in entries] == actions
    reattached, first = entries[0], entries[2]
    assert (reattached["before"]["status"], reattached["after"]["status"]) == ("detached", "active")
    assert (first["before"], first["after"]["status"]) == (None, "active")


async def test_paypal_has_no_saved_payment_methods(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    refused = await post(client, key, "/payment-methods", {"provider": "paypal", "token": "tok_x"})
    assert refused.status_code == 400 and refused.json()["code"] == "provider_operation_unsupported"


async def test_a_card_number_is_refused_as_a_token(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    refused = await post(client, key, "/payment-methods", {"token": "4242424242424242"})
    assert refused.status_code == 422
    assert "4242424242424242" not in refused.text


async def test_payments_are_scoped_to_their_account_and_paged(
    client: httpx.AsyncClient, admin_key: str, fakes: Fakes
) -> None:
    a_id, a_key = await owner_of_new_account(client, admin_key)
    _, b_key = await owner_of_new_account(client, admin_key)
    ids = [
        (
            await post(
                client, a_key, "/payments/intents", {"amount_minor": 100 + i, "currency": "USD"}
            )
        ).json()["id"]
        for i in range(3)
    ]
    other = await client.get(f"{API}/payments/{ids[0]}", headers=auth(b_key))
    assert other.status_code == 404 and other.json()["code"] == "payment_not_found"
    assert (await client.get(f"{API}/payments", headers=auth(b_key))).json()["items"] == []
    page1 = (await client.get(f"{API}/payments?limit=2", headers=auth(a_key))).json()
    page2 = (
        await client.get(
            f"{API}/payments?limit=2&cursor={page1['next_cursor']}", headers=auth(a_key)
        )
    ).json()
    assert [p["id"] for p in page1["items"] + page2["items"]] == ids
    assert page2["next_cursor"] is None
    member = await issue_key(client, admin_key, a_id, "member")
    forbidden = await client.get(f"{API}/payments", headers=auth(member))
    assert forbidden.status_code == 403


async def test_the_operator_must_name_the_account(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    body = {"amount_minor": 100, "currency": "USD"}
    refused = await post(client, admin_key, "/payments/intents", body)
    assert refused.status_code == 400 and refused.json()["code"] == "account_required"
    assert await count(billing, Payment) == 0 and await count(billing, RefundRecord) == 0


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_concurrent_confirmations_charge_once(
    client: httpx.AsyncClient, admin_key: str, provider: str, fakes: Fakes
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    payment = await new_payment(client, key, provider, fakes)
    path = f"/payments/{payment['id']}/confirm"
    answers = await asyncio.gather(*(post(client, key, path) for _ in range(3)))
    assert sorted(a.status_code for a in answers) == [200, 409, 409]
    assert {a.json()["code"] for a in answers if a.status_code == 409} == {
        "payment_not_confirmable"
    }
    assert len(fakes.of(provider).charges) == 1


async def test_a_refund_of_an_unpaid_payment_is_refused(
    client: httpx.AsyncClient, admin_key: str, fakes: Fakes, billing: BillingService
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    payment = await new_payment(client, key, "stripe", fakes)
    refused = await post(client, key, f"/payments/{payment['id']}/refund", {})
    assert refused.status_code == 409 and refused.json()["code"] == "payment_not_refundable"
    assert await count(billing, RefundRecord) == 0 and fakes.stripe.refunds == {}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_refund_whose_answer_was_lost_is_not_made_twice(
    client: httpx.AsyncClient, admin_key: str, provider: str, fakes: Fakes, billing: BillingService
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    payment = await new_payment(client, key, provider, fakes)
    await post(client, key, f"/payments/{payment['id']}/confirm")
    fake = fakes.of(provider)
    # Refunded at the provider, then every answer lost: our request fails as a whole.
    fake.behave("drop_after_refund", "5xx", "5xx")
    lost = await post(client, key, f"/payments/{payment['id']}/refund", {"amount_minor": 600})
    assert lost.status_code == 503 and await count(billing, RefundRecord) == 0
    assert len(fake.refunds) == 1
    retried = await post(client, key, f"/payments/{payment['id']}/refund", {"amount_minor": 600})
    assert retried.status_code == 201, retried.text
    assert len(fake.refunds) == 1  # the provider replayed the first refund
    assert retried.json()["provider_refund_id"] == next(iter(fake.refunds))
    more = await post(client, key, f"/payments/{payment['id']}/refund", {"amount_minor": 600})
    assert more.status_code == 201 and len(fake.refunds) == 2
