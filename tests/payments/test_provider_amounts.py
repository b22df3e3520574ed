"""Amounts as the providers write them, where that differs from our minor units (Babel's
exponent): Stripe keeps every currency outside its zero- and three-decimal lists two-decimal
in its API, so ISK, RSD, ALL... (exponent 0 for us) are 100 per unit there, and PayPal takes
no decimals at all for HUF, JPY and TWD."""

from __future__ import annotations

import httpx
import pytest

from aihub_billing.payments.errors import ProviderAmountNotSupported
from aihub_billing.payments.providers.amounts import from_stripe, paypal_value, to_stripe
from aihub_billing.webhooks.mapping import map_event
from tests.payments.fakes.stripe_server import StripeFake
from tests.payments.support import (  # noqa: F401 (fixtures)
    billing,
    post,
    stripe_event,
    stripe_fake,
)


@pytest.mark.parametrize(
    ("minor", "currency", "stripe"),
    [
        (1000, "ISK", 100_000),
        (1000, "RSD", 100_000),  # two-decimal at Stripe, exponent 0 in CLDR
        (1000, "ALL", 100_000),
        (1000, "LAK", 100_000),
        (2999, "USD", 2999),
        (500, "JPY", 500),
        (500, "UGX", 500),  # on Stripe's zero-decimal list
        (500, "XOF", 500),
        (5120, "KWD", 5120),
    ],
)
def test_stripe_amounts_follow_stripes_currency_classes(
    minor: int, currency: str, stripe: int
) -> None:
    assert to_stripe(minor, currency) == stripe
    assert from_stripe(stripe, currency) == minor


@pytest.mark.parametrize(
    ("minor", "currency", "value"),
    [
        (100_000, "HUF", "1000"),
        (250_000, "TWD", "2500"),
        (500, "JPY", "500"),
        (1999, "USD", "19.99"),
    ],
)
def test_paypal_values_drop_the_decimals_it_refuses(minor: int, currency: str, value: str) -> None:
    assert paypal_value(minor, currency) == {"currency_code": currency, "value": value}


def test_a_three_decimal_amount_stripe_cannot_take_is_refused_before_any_call() -> None:
    assert to_stripe(5130, "KWD") == 5130
    with pytest.raises(ProviderAmountNotSupported):
        to_stripe(5125, "KWD")  # 5.125 dinars: Stripe takes whole tens of fils only


def test_a_fraction_paypal_cannot_take_is_refused_before_any_call() -> None:
    with pytest.raises(ProviderAmountNotSupported):
        paypal_value(100_050, "HUF")  # 1000.50 forints


def test_a_stripe_event_in_isk_maps_to_our_minor_units() -> None:
    event = stripe_event("FAKE_EVENT_CHARGE_SUCCEEDED", id="evt_isk", type="refund.created")
    event["data"]["object"] = {
        "id": "re_isk",
        "object": "refund",
        "amount": 150_000,  # 1,500 krónur
        "currency": "isk",
        "payment_intent": "pi_isk",
        "status": "succeeded",
        "metadata": {},
    }
    mapped = map_event("stripe", "evt_isk", event)
    assert mapped is not None and (mapped.amount_minor, mapped.currency) == (1500, "ISK")


async def test_an_isk_charge_asks_stripe_for_the_right_amount(
    client: httpx.AsyncClient,
    admin_key: str,
    stripe_fake: StripeFake,  # noqa: F811
) -> None:
    from tests.api.helpers import create_account, issue_key

    account = await create_account(client, admin_key, currency="ISK")
    key = await issue_key(client, admin_key, account["id"], "owner")
    token = stripe_fake.add_payment_method()
    method = await post(client, key, "/payment-methods", {"provider": "stripe", "token": token})
    assert method.status_code == 201, method.text
    body = {
        "amount_minor": 1000,  # 1,000 krónur
        "currency": "ISK",
        "provider": "stripe",
        "payment_method_id": method.json()["id"],
    }
    created = await post(client, key, "/payments/intents", body)
    assert created.status_code == 201, created.text
    confirmed = await post(client, key, f"/payments/{created.json()['id']}/confirm")
    assert confirmed.status_code == 200, confirmed.text
    assert (confirmed.json()["amount_minor"], confirmed.json()["status"]) == (1000, "succeeded")
    sent = [
        body
        for method_, path, _, body in stripe_fake.requests
        if method_ == "POST" and path == "/v1/payment_intents"
    ]
    assert [int(b["amount"]) for b in sent] == [100_000]
    refunded = await post(
        client, key, f"/payments/{created.json()['id']}/refund", {"amount_minor": 400}
    )
    assert refunded.status_code in (200, 201), refunded.text
    assert refunded.json()["amount_minor"] == 400
    asked = [b for m, p, _, b in stripe_fake.requests if m == "POST" and p == "/v1/refunds"]
    assert [int(b["amount"]) for b in asked] == [40_000]
