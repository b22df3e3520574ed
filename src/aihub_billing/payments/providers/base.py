"""The PaymentProcessor protocol every provider adapter implements, and the shared retry loop.

Money-moving calls take an idempotency key derived from our own row id (`payment:{id}:v1`):
a retry after a timeout reuses it, so the provider charges once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypeVar

import structlog

from aihub_billing.payments.payment_types import (
    Customer,
    Dispute,
    PaymentIntent,
    PaymentMethod,
    ProviderSubscription,
    Refund,
    VerifiedWebhook,
)

T = TypeVar("T")
log = structlog.get_logger("aihub_billing.payments")


class TransientProviderError(Exception):
    """Raised inside an adapter for a failure worth retrying with the same idempotency key."""


class PaymentProcessor(Protocol):
    """One payment provider. Every method raises only payments.errors on failure."""

    name: str
    # Whether a payment can be charged to a saved method without the buyer (Stripe), or the
    # buyer approves each payment at the provider (PayPal orders).
    saves_payment_methods: bool

    async def create_customer(
        self, *, account_id: str, email: str | None, name: str | None, idempotency_key: str
    ) -> Customer: ...

    async def update_customer(
        self, customer_id: str, *, email: str | None, name: str | None
    ) -> Customer: ...

    async def attach_payment_method(self, customer_id: str, token: str) -> PaymentMethod: ...

    async def list_payment_methods(self, customer_id: str) -> list[PaymentMethod]: ...

    async def detach_payment_method(self, token: str) -> None: ...

    async def create_payment(
        self,
        *,
        amount_minor: int,
        currency: str,
        customer_id: str | None,
        payment_method: str | None,
        description: str | None,
        reference: str,
        invoice_id: str | None,
        idempotency_key: str,
    ) -> PaymentIntent:
        """A provider payment (intent/order) for `reference` (our payment id); not yet charged."""
        ...

    async def confirm_payment(
        self, payment_id: str, *, payment_method: str | None, idempotency_key: str
    ) -> PaymentIntent:
        """Confirm (Stripe) or capture (PayPal): the call that moves the money."""
        ...

    async def capture_payment(self, payment_id: str, *, idempotency_key: str) -> PaymentIntent: ...

    async def refund(
        self,
        *,
        payment_id: str,
        charge_id: str | None,
        amount_minor: int,
        currency: str,
        reference: str,
        idempotency_key: str,
    ) -> Refund: ...

    async def fetch_dispute(self, dispute_id: str) -> Dispute: ...

    async def create_subscription(
        self,
        *,
        customer_id: str,
        price_id: str,
        reference: str,
        idempotency_key: str,
        payment_method: str | None = None,
    ) -> ProviderSubscription: ...

    async def cancel_subscription(self, subscription_id: str) -> ProviderSubscription: ...

    async def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> VerifiedWebhook:
        """The event, if its signature is valid; WebhookSignatureInvalid otherwise."""
        ...

    async def aclose(self) -> None: ...


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    max_retries: int,
    base_delay: float,
    max_delay: float = 8.0,
    provider: str = "",
) -> T:
    """Runs `call`, retrying TransientProviderError with jittered exponential backoff.

    The caller's closure carries the idempotency key, so every attempt sends the same one.
    """
    attempt = 0
    while True:
        try:
            return await call()
        except TransientProviderError as exc:
            if attempt >= max_retries:
                log.warning("payment_provider.gave_up", provider=provider, attempts=attempt + 1)
                raise
            attempt += 1
            log.info("payment_provider.retry", provider=provider, attempt=attempt, error=str(exc))
            delay = min(base_delay * 2 ** (attempt - 1), max_delay)
            await asyncio.sleep(delay * (0.5 + random.random() / 2))


ProcessorLookup = Callable[[str], PaymentProcessor]
"""Gives the configured processor for a provider name (ProviderNotConfigured otherwise)."""
