"""The adapters against the fakes, below the API: token cache, keys, subscriptions, disputes,
configuration, and the fakes' own schema checks (so they can fail)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aihub_billing.config import BillingConfig
from aihub_billing.kit.clock import FrozenClock
from aihub_billing.payments.errors import ProviderError, ProviderNotConfigured
from aihub_billing.payments.providers.paypal import LIVE_BASE, SANDBOX_BASE, PayPalProcessor
from aihub_billing.payments.providers.registry import ProcessorRegistry
from aihub_billing.payments.providers.stripe import StripeProcessor
from tests.payments.fakes.paypal_server import PayPalFake, schema_errors
from tests.payments.fakes.stripe_server import SpecViolation, StripeFake, validate
from tests.payments.support import STRIPE_SECRET_KEY


@pytest.fixture
async def stripe(stripe_fake: StripeFake) -> AsyncIterator[StripeProcessor]:
    processor = StripeProcessor(
        api_key=STRIPE_SECRET_KEY,
        webhook_secret=None,
        api_base=stripe_fake.url,
        max_retries=1,
        retry_backoff_seconds=0.01,
    )
    yield processor
    await processor.aclose()


@pytest.fixture
async def paypal(paypal_fake: PayPalFake, clock: FrozenClock) -> AsyncIterator[PayPalProcessor]:
    processor = PayPalProcessor(
        client_id=paypal_fake.client_id,
        client_secret=paypal_fake.client_secret,
        webhook_id="WH",
        clock=clock,
        api_base=paypal_fake.url,
        max_retries=1,
        retry_backoff_seconds=0.01,
    )
    yield processor
    await processor.aclose()


async def _order(paypal: PayPalProcessor, ref: str) -> str:
    order = await paypal.create_payment(
        amount_minor=1999,
        currency="USD",
        customer_id=None,
        payment_method=None,
        description="Pro plan",
        reference=ref,
        invoice_id=None,
        idempotency_key=f"payment:{ref}:v1",
    )
    return order.id


async def test_the_paypal_token_is_cached_until_shortly_before_it_expires(
    paypal: PayPalProcessor, paypal_fake: PayPalFake, clock: FrozenClock
) -> None:
    paypal_fake.token_ttl = 120  # refreshed 30 s early (a quarter of its life, at most 60 s)
    await _order(paypal, "pay_a")
    clock.advance(seconds=80)
    await _order(paypal, "pay_b")
    assert len(paypal_fake.tokens) == 1
    clock.advance(seconds=11)
    await _order(paypal, "pay_c")
    assert len(paypal_fake.tokens) == 2


async def test_a_revoked_paypal_token_is_renewed_once(
    paypal: PayPalProcessor, paypal_fake: PayPalFake
) -> None:
    await _order(paypal, "pay_a")
    paypal_fake.tokens.clear()  # PayPal forgot it
    await _order(paypal, "pay_b")
    assert len(paypal_fake.tokens) == 1


async def test_wrong_paypal_credentials_are_a_provider_error(
    paypal_fake: PayPalFake, clock: FrozenClock
) -> None:
    processor = PayPalProcessor(
        client_id="client-test",
        client_secret="wrong",
        webhook_id=None,
        clock=clock,
        api_base=paypal_fake.url,
    )
    with pytest.raises(ProviderError):
        await _order(processor, "pay_a")
    await processor.aclose()


async def test_money_moving_calls_carry_keys_derived_from_our_ids(
    stripe: StripeProcessor,
    stripe_fake: StripeFake,
    paypal: PayPalProcessor,
    paypal_fake: PayPalFake,
) -> None:
    intent = await stripe.create_payment(
        amount_minor=500,
        currency="USD",
        customer_id=None,
        payment_method=stripe_fake.add_payment_method(),
        description=None,
        reference="pay_1",
        invoice_id="inv_1",
        idempotency_key="payment:pay_1:create:v1",
    )
    await stripe.confirm_payment(
        intent.id, payment_method=None, idempotency_key="payment:pay_1:c:v1"
    )
    await stripe.refund(
        payment_id=intent.id,
        charge_id=None,
        amount_minor=100,
        currency="USD",
        reference="ref_1",
        idempotency_key="refund:ref_1:v1",
    )
    stripe_keys = [r[2].get("idempotency-key") for r in stripe_fake.requests]
    assert stripe_keys == ["payment:pay_1:create:v1", "payment:pay_1:c:v1", "refund:ref_1:v1"]
    assert stripe_fake.intents[intent.id]["metadata"] == {
        "payment_id": "pay_1",
        "invoice_id": "inv_1",
    }

    order = await _order(paypal, "pay_2")
    capture = await paypal.confirm_payment(
        order, payment_method=None, idempotency_key="payment:pay_2:c:v1"
    )
    await paypal.refund(
        payment_id=order,
        charge_id=capture.charge_id,
        amount_minor=999,
        currency="USD",
        reference="ref_2",
        idempotency_key="refund:ref_2:v1",
    )
    paypal_keys = [
        r[2].get("paypal-request-id")
        for r in paypal_fake.requests
        if r[0] == "POST" and "oauth2" not in r[1]
    ]
    assert paypal_keys == ["payment:pay_2:v1", "payment:pay_2:c:v1", "refund:ref_2:v1"]
    assert paypal_fake.refunds and next(iter(paypal_fake.refunds.values()))["amount"] == {
        "currency_code": "USD",
        "value": "9.99",
    }
    assert paypal_fake.schema_violations == []


async def test_provider_side_subscriptions_and_disputes(
    stripe: StripeProcessor,
    stripe_fake: StripeFake,
    paypal: PayPalProcessor,
    paypal_fake: PayPalFake,
) -> None:
    customer = await stripe.create_customer(
        account_id="acct_1", email="a@b.test", name="A", idempotency_key="customer:acct_1:v1"
    )
    updated = await stripe.update_customer(customer.id, email="new@b.test", name=None)
    assert updated.email == "new@b.test"
    sub = await stripe.create_subscription(
        customer_id=customer.id,
        price_id="price_pro",
        reference="sub_1",
        idempotency_key="subscription:sub_1:v1",
    )
    assert sub.status == "active"
    assert (await stripe.cancel_subscription(sub.id)).status == "canceled"

    pp_sub = await paypal.create_subscription(
        customer_id="acct_1",
        price_id="P-5ML4271244454362WXNWU5NQ",
        reference="sub_2",
        idempotency_key="subscription:sub_2:v1",
    )
    assert pp_sub.status == "APPROVAL_PENDING" and pp_sub.approval_url
    assert (await paypal.cancel_subscription(pp_sub.id)).status == "CANCELLED"
    assert paypal_fake.subscriptions[pp_sub.id]["status"] == "CANCELLED"

    intent = await stripe.create_payment(
        amount_minor=700,
        currency="EUR",
        customer_id=customer.id,
        payment_method=stripe_fake.add_payment_method(),
        description=None,
        reference="pay_3",
        invoice_id=None,
        idempotency_key="payment:pay_3:v1",
    )
    await stripe.confirm_payment(intent.id, payment_method=None, idempotency_key="k")
    dispute = await stripe.fetch_dispute(stripe_fake.add_dispute(intent.id, 700))
    assert (dispute.amount_minor, dispute.currency, dispute.payment_ref) == (700, "EUR", intent.id)

    order = await _order(paypal, "pay_4")
    capture = await paypal.confirm_payment(order, payment_method=None, idempotency_key="k4")
    assert capture.charge_id is not None
    pp_dispute = await paypal.fetch_dispute(
        paypal_fake.add_dispute(capture.charge_id, "19.99", "USD")
    )
    assert (pp_dispute.amount_minor, pp_dispute.payment_ref) == (1999, capture.charge_id)
    assert paypal_fake.schema_violations == []


async def test_the_stripe_fake_refuses_what_the_spec_refuses() -> None:
    validate("POST", "/v1/payment_intents", {"amount": "100", "currency": "usd"})
    for params in (
        {"currency": "usd"},
        {"amount": "ten", "currency": "usd"},
        {"amount": "1", "currency": "usd", "card_number": "x"},
    ):
        with pytest.raises(SpecViolation):
            validate("POST", "/v1/payment_intents", params)


async def test_the_paypal_fake_refuses_what_the_schema_refuses() -> None:
    good = {
        "intent": "CAPTURE",
        "purchase_units": [{"amount": {"currency_code": "USD", "value": "1.00"}}],
    }
    assert schema_errors("POST", "/v2/checkout/orders", good) == []
    assert schema_errors("POST", "/v2/checkout/orders", {"intent": "CAPTURE"})
    bad_amount = {"intent": "CAPTURE", "purchase_units": [{"amount": {"value": "1.00"}}]}
    assert schema_errors("POST", "/v2/checkout/orders", bad_amount)


def test_sandbox_and_live_paypal_base_urls(clock: FrozenClock) -> None:
    def base(sandbox: bool) -> str:
        processor = PayPalProcessor(
            client_id="c", client_secret="s", webhook_id=None, clock=clock, sandbox=sandbox
        )
        return str(processor._http.base_url).rstrip("/")

    assert base(True) == SANDBOX_BASE and base(False) == LIVE_BASE


async def test_the_registry_builds_only_enabled_providers(clock: FrozenClock) -> None:
    config = BillingConfig(
        environment="test",
        stripe={"enabled": True, "api_key": STRIPE_SECRET_KEY},
        paypal={"enabled": False},
    )
    registry = ProcessorRegistry(config, clock)
    assert registry.default() == "stripe"
    assert registry.get("stripe") is registry.get("stripe")
    with pytest.raises(ProviderNotConfigured):
        registry.get("paypal")
    await registry.aclose()
    nothing = ProcessorRegistry(BillingConfig(environment="test"), clock)
    with pytest.raises(ProviderNotConfigured):
        nothing.default()


def test_webhook_cert_hosts_are_refused_in_production() -> None:
    with pytest.raises(ValueError, match="webhook_cert_hosts"):
        BillingConfig(
            environment="production",
            encryption_enabled=True,
            paypal={
                "enabled": True,
                "sandbox": False,
                "client_id": "c",
                "client_secret": "s",
                "webhook_secret": "WH",
                "webhook_cert_hosts": ["127.0.0.1:1"],
            },
        )
