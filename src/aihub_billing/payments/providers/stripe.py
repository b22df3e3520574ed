"""StripeProcessor: the PaymentProcessor on the official `stripe` package (async, via httpx)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeGuard, TypeVar

import stripe

from aihub_billing.kit.clock import from_unix
from aihub_billing.payments.errors import (
    PaymentDeclined,
    ProviderError,
    ProviderUnavailable,
    WebhookSignatureInvalid,
)
from aihub_billing.payments.payment_types import (
    Customer,
    Dispute,
    PaymentIntent,
    PaymentMethod,
    PaymentStatus,
    ProviderSubscription,
    Refund,
    VerifiedWebhook,
)
from aihub_billing.payments.providers.amounts import from_stripe, to_stripe
from aihub_billing.payments.providers.base import TransientProviderError, with_retries

T = TypeVar("T")

WEBHOOK_TOLERANCE_SECONDS = 300

_STATUSES = {
    "requires_payment_method": PaymentStatus.REQUIRES_PAYMENT_METHOD,
    "requires_confirmation": PaymentStatus.REQUIRES_CONFIRMATION,
    "requires_action": PaymentStatus.REQUIRES_ACTION,
    "processing": PaymentStatus.PROCESSING,
    "requires_capture": PaymentStatus.PROCESSING,
    "succeeded": PaymentStatus.SUCCEEDED,
    "canceled": PaymentStatus.CANCELED,
}


class StripeProcessor:
    name = "stripe"
    saves_payment_methods = True

    def __init__(
        self,
        *,
        api_key: str,
        webhook_secret: str | None,
        api_base: str | None = None,
        timeout_seconds: float = 10.0,
        max_retries: int = 3,
        retry_backoff_seconds: float = 0.5,
    ) -> None:
        self._webhook_secret = webhook_secret
        self._max_retries = max_retries
        self._backoff = retry_backoff_seconds
        # The package's own retries are off: ours reuse the key and are bounded by config.
        self._http = stripe.HTTPXClient(timeout=timeout_seconds)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            http_client=self._http,
            max_network_retries=0,
        )

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        async def once() -> T:
            try:
                return await call()
            except stripe.APIConnectionError as exc:
                raise TransientProviderError(type(exc).__name__) from exc
            except stripe.RateLimitError as exc:
                raise TransientProviderError("rate limited") from exc
            except stripe.APIError as exc:
                if (exc.http_status or 500) >= 500:
                    raise TransientProviderError(f"HTTP {exc.http_status}") from exc
                raise

        try:
            return await with_retries(
                once, max_retries=self._max_retries, base_delay=self._backoff, provider=self.name
            )
        except TransientProviderError as exc:
            raise ProviderUnavailable(f"Stripe is unavailable ({exc})") from None
        except stripe.CardError as exc:
            raise PaymentDeclined(
                exc.user_message or "the card was declined",
                extra={"decline_code": _decline_code(exc)},
            ) from None
        except stripe.StripeError as exc:
            raise ProviderError(
                f"Stripe answered {exc.http_status}: {exc.code or type(exc).__name__}"
            ) from None

    async def create_customer(
        self, *, account_id: str, email: str | None, name: str | None, idempotency_key: str
    ) -> Customer:
        params: dict[str, Any] = {"metadata": {"account_id": account_id}}
        if email:
            params["email"] = email
        if name:
            params["name"] = name
        customer = await self._call(
            lambda: self._client.v1.customers.create_async(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            )
        )
        return Customer("stripe", customer.id, customer.email, customer.name)

    async def update_customer(
        self, customer_id: str, *, email: str | None, name: str | None
    ) -> Customer:
        params: dict[str, Any] = {}
        if email:
            params["email"] = email
        if name:
            params["name"] = name
        customer = await self._call(
            lambda: self._client.v1.customers.update_async(customer_id, params=params)  # type: ignore[arg-type]
        )
        return Customer("stripe", customer.id, customer.email, customer.name)

    async def attach_payment_method(self, customer_id: str, token: str) -> PaymentMethod:
        method = await self._call(
            lambda: self._client.v1.payment_methods.attach_async(
                token, params={"customer": customer_id}
            )
        )
        return _payment_method(method)

    async def list_payment_methods(self, customer_id: str) -> list[PaymentMethod]:
        listing = await self._call(
            lambda: self._client.v1.customers.payment_methods.list_async(
                customer_id, params={"limit": 100}
            )
        )
        return [_payment_method(m) for m in listing.data]

    async def detach_payment_method(self, token: str) -> None:
        await self._call(lambda: self._client.v1.payment_methods.detach_async(token))

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
        metadata = {"payment_id": reference}
        if invoice_id:
            metadata["invoice_id"] = invoice_id
        params: dict[str, Any] = {
            "amount": to_stripe(amount_minor, currency),
            "currency": currency.lower(),
            "metadata": metadata,
            "payment_method_types": ["card"],
        }
        if customer_id:
            params["customer"] = customer_id
        if payment_method:
            params["payment_method"] = payment_method
        if description:
            params["description"] = description
        intent = await self._call(
            lambda: self._client.v1.payment_intents.create_async(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            )
        )
        return _intent(intent)

    async def confirm_payment(
        self, payment_id: str, *, payment_method: str | None, idempotency_key: str
    ) -> PaymentIntent:
        params: dict[str, Any] = {"payment_method": payment_method} if payment_method else {}
        intent = await self._call(
            lambda: self._client.v1.payment_intents.confirm_async(
                payment_id,
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            )
        )
        return _intent(intent)

    async def capture_payment(self, payment_id: str, *, idempotency_key: str) -> PaymentIntent:
        intent = await self._call(
            lambda: self._client.v1.payment_intents.capture_async(
                payment_id, options={"idempotency_key": idempotency_key}
            )
        )
        return _intent(intent)

    async def refund(
        self,
        *,
        payment_id: str,
        charge_id: str | None,
        amount_minor: int,
        currency: str,
        reference: str,
        idempotency_key: str,
    ) -> Refund:
        refund = await self._call(
            lambda: self._client.v1.refunds.create_async(
                params={
                    "payment_intent": payment_id,
                    "amount": to_stripe(amount_minor, currency),
                    "metadata": {"refund_id": reference},
                },
                options={"idempotency_key": idempotency_key},
            )
        )
        return Refund(
            "stripe",
            refund.id,
            _REFUND_STATUSES.get(refund.status or "", "pending"),
            from_stripe(refund.amount, refund.currency),
            refund.currency.upper(),
        )

    async def fetch_dispute(self, dispute_id: str) -> Dispute:
        dispute = await self._call(lambda: self._client.v1.disputes.retrieve_async(dispute_id))
        return Dispute(
            "stripe",
            dispute.id,
            dispute.status,
            from_stripe(dispute.amount, dispute.currency),
            dispute.currency.upper(),
            dispute.reason,
            _ref(dispute.payment_intent) or _ref(dispute.charge),
        )

    async def create_subscription(
        self,
        *,
        customer_id: str,
        price_id: str,
        reference: str,
        idempotency_key: str,
        payment_method: str | None = None,
    ) -> ProviderSubscription:
        params: dict[str, Any] = {
            "customer": customer_id,
            "items": [{"price": price_id}],
            "metadata": {"subscription_id": reference},
        }
        if payment_method is not None:
            params["default_payment_method"] = payment_method
        subscription = await self._call(
            lambda: self._client.v1.subscriptions.create_async(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            )
        )
        return ProviderSubscription("stripe", subscription.id, subscription.status)

    async def cancel_subscription(self, subscription_id: str) -> ProviderSubscription:
        subscription = await self._call(
            lambda: self._client.v1.subscriptions.cancel_async(subscription_id)
        )
        return ProviderSubscription("stripe", subscription.id, subscription.status)

    async def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> VerifiedWebhook:
        if not self._webhook_secret:
            raise WebhookSignatureInvalid("no Stripe webhook secret is configured")
        signature = _header(headers, "Stripe-Signature")
        try:
            event = stripe.Webhook.construct_event(
                body.decode("utf-8"),
                signature,
                self._webhook_secret,
                tolerance=WEBHOOK_TOLERANCE_SECONDS,
            )
        except (stripe.SignatureVerificationError, ValueError, UnicodeDecodeError):
            raise WebhookSignatureInvalid(
                "Stripe-Signature is missing, invalid or older than 300 s"
            ) from None
        except Exception:
            # A signed body the SDK cannot make an event of (a JSON array, nesting deeper than
            # the parser's recursion limit) is not an event.
            raise WebhookSignatureInvalid("the signed body is not a Stripe event") from None
        event_id = getattr(event, "id", None)
        event_type = getattr(event, "type", None)
        if not (_storable(event_id) and _storable(event_type)):
            raise WebhookSignatureInvalid("the signed body is not a Stripe event")
        return VerifiedWebhook(
            "stripe", event_id, event_type, from_unix(getattr(event, "created", None)), body
        )


def _storable(value: object) -> TypeGuard[str]:
    """Text that UTF-8 can hold (JSON admits lone surrogates: "\\ud800")."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# Stripe's refund statuses as ours: `requires_action` (and anything newer) is still on its
# way, so it keeps counting as being refunded.
_REFUND_STATUSES = {"succeeded": "succeeded", "failed": "failed", "canceled": "canceled"}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _ref(value: Any) -> str | None:
    """An expandable field: an id string or the expanded object."""
    if value is None or isinstance(value, str):
        return value
    ident = getattr(value, "id", None)
    return ident if isinstance(ident, str) else None


def _decline_code(exc: stripe.CardError) -> str | None:
    error = exc.error
    code = getattr(error, "decline_code", None) if error is not None else None
    return code if isinstance(code, str) else exc.code


def _payment_method(method: Any) -> PaymentMethod:
    card = getattr(method, "card", None)
    return PaymentMethod(
        "stripe",
        method.id,
        getattr(card, "brand", None),
        getattr(card, "last4", None),
        getattr(card, "exp_month", None),
        getattr(card, "exp_year", None),
        _ref(method.customer),
    )


def _intent(intent: Any) -> PaymentIntent:
    status = _STATUSES.get(intent.status, PaymentStatus.PROCESSING)
    error = intent.last_payment_error
    return PaymentIntent(
        provider="stripe",
        id=intent.id,
        status=status,
        amount_minor=from_stripe(intent.amount, intent.currency),
        currency=intent.currency.upper(),
        charge_id=_ref(intent.latest_charge),
        client_secret=intent.client_secret if status == PaymentStatus.REQUIRES_ACTION else None,
        failure_code=getattr(error, "code", None) if error is not None else None,
        failure_message=getattr(error, "message", None) if error is not None else None,
    )
