"""Fixtures shared by the payments and webhooks tests: both provider fakes and a
BillingService whose processors point at them."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from aihub_billing.kit.clock import FrozenClock, SystemClock
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth, create_account, issue_key
from tests.conftest import make_config, wipe
from tests.payments.fakes.paypal_server import PayPalFake, make_certificate
from tests.payments.fakes.specs import VENDOR_SPECS
from tests.payments.fakes.stripe_server import StripeFake

STRIPE_SECRET_KEY = "sk_test_51FakeFakeFakeSecretKey"
STRIPE_WEBHOOK_SECRET = "whsec_test_0123456789abcdef"
PAYPAL_WEBHOOK_ID = "1JE4291016473214C"
STRIPE_EVENTS = VENDOR_SPECS / "stripe" / "events" / "dj-stripe"
PAYPAL_EVENTS = VENDOR_SPECS / "paypal" / "events" / "dj-paypal" / "webhooks"


@pytest.fixture
def stripe_fake() -> Iterator[StripeFake]:
    fake = StripeFake().start()
    yield fake
    fake.stop()


@pytest.fixture
def paypal_key(clock: FrozenClock) -> rsa.RSAPrivateKey:
    return _paypal_material(clock)[0]


_MATERIAL: dict[str, tuple[rsa.RSAPrivateKey, bytes]] = {}


def _paypal_material(clock: FrozenClock) -> tuple[rsa.RSAPrivateKey, bytes]:
    # One key per test session: RSA generation is the slow part.
    if "k" not in _MATERIAL:
        _MATERIAL["k"] = make_certificate(clock.now())
    return _MATERIAL["k"]


@pytest.fixture
def paypal_fake(clock: FrozenClock) -> Iterator[PayPalFake]:
    fake = PayPalFake(cert_pem=_paypal_material(clock)[1]).start()
    yield fake
    fake.stop()


@pytest.fixture
async def billing(
    database_url: str,
    clock: FrozenClock,
    stripe_fake: StripeFake,
    paypal_fake: PayPalFake,
    config_overrides: dict[str, object],
) -> AsyncIterator[BillingService]:
    config = make_config(
        database_url,
        **config_overrides,
        stripe={
            "enabled": True,
            "api_key": STRIPE_SECRET_KEY,
            "webhook_secret": STRIPE_WEBHOOK_SECRET,
            "api_base": stripe_fake.url,
            "max_retries": 2,
            "retry_backoff_seconds": 0.01,
        },
        paypal={
            "enabled": True,
            "client_id": paypal_fake.client_id,
            "client_secret": paypal_fake.client_secret,
            "webhook_secret": PAYPAL_WEBHOOK_ID,
            "api_base": paypal_fake.url,
            "max_retries": 2,
            "retry_backoff_seconds": 0.01,
            "webhook_cert_hosts": [paypal_fake.netloc],
        },
    )
    service = BillingService(config, clock=clock)
    await wipe(service)
    try:
        yield service
    finally:
        await wipe(service)
        await service.close()


async def owner_of_new_account(client: httpx.AsyncClient, admin_key: str) -> tuple[str, str]:
    account = await create_account(client, admin_key, email="billing@acme.test")
    return account["id"], await issue_key(client, admin_key, account["id"], "owner")


async def post(
    client: httpx.AsyncClient, key: str, path: str, body: Any = None, **headers: str
) -> httpx.Response:
    return await client.post(f"{API}{path}", json=body, headers=auth(key, **headers))


async def new_intent(
    client: httpx.AsyncClient,
    key: str,
    provider: str,
    stripe: StripeFake,
    amount: int = 2500,
    **body: Any,
) -> dict[str, Any]:
    """A USD payment intent at `provider`; on Stripe with a card attached first."""
    method_id = None
    if provider == "stripe":
        token = stripe.add_payment_method()
        attached = await post(
            client, key, "/payment-methods", {"provider": "stripe", "token": token}
        )
        assert attached.status_code == 201, attached.text
        method_id = attached.json()["id"]
    created = await post(
        client,
        key,
        "/payments/intents",
        {
            "amount_minor": amount,
            "currency": "USD",
            "provider": provider,
            "payment_method_id": method_id,
            **body,
        },
    )
    assert created.status_code == 201, created.text
    intent: dict[str, Any] = created.json()
    return intent


def stripe_signature(payload: bytes, *, age_seconds: int = 0, secret: str = "") -> str:
    """`Stripe-Signature` as Stripe computes it (HMAC-SHA256 of "{t}.{payload}")."""
    timestamp = int(SystemClock().now().timestamp()) - age_seconds
    mac = hmac.new(
        (secret or STRIPE_WEBHOOK_SECRET).encode(),
        f"{timestamp}.".encode() + payload,
        hashlib.sha256,
    )
    return f"t={timestamp},v1={mac.hexdigest()}"


def stripe_event(name: str, **overlay: Any) -> dict[str, Any]:
    """One of the example events (older API versions), with the object's fields overlaid."""
    event: dict[str, Any] = json.loads((STRIPE_EVENTS / f"{name}.json").read_text())
    event["data"]["object"].update(overlay.pop("object", {}))
    event.update(overlay)
    return event


def paypal_event(name: str, **overlay: Any) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((PAYPAL_EVENTS / f"{name}.json").read_text())
    event["resource"].update(overlay.pop("resource", {}))
    event.update(overlay)
    return event
