"""PayPalProcessor: PayPal's REST API over httpx (Orders v2, Payments v2 refunds, Billing
Subscriptions v1, Disputes v1), OAuth2 client credentials with the token cached until shortly
before it expires, `PayPal-Request-Id` on every call that creates or moves money.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from aihub_billing.kit.clock import Clock
from aihub_billing.kit.money import round_to_minor
from aihub_billing.payments.errors import (
    PaymentDeclined,
    ProviderError,
    ProviderOperationUnsupported,
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
from aihub_billing.payments.providers.amounts import paypal_value
from aihub_billing.payments.providers.base import TransientProviderError, with_retries

SANDBOX_BASE = "https://api-m.sandbox.paypal.com"
LIVE_BASE = "https://api-m.paypal.com"
# Certificates are fetched only from PayPal's own domain (any *.paypal.com host, over HTTPS).
PAYPAL_DOMAIN = "paypal.com"
TOKEN_REFRESH_MARGIN = timedelta(seconds=60)
_DECLINED = {"INSTRUMENT_DECLINED", "TRANSACTION_REFUSED", "PAYER_CANNOT_PAY"}
_NEEDS_PAYER = {"ORDER_NOT_APPROVED", "PAYER_ACTION_REQUIRED"}
_ORDER_STATUSES = {
    "CREATED": PaymentStatus.REQUIRES_ACTION,
    "SAVED": PaymentStatus.REQUIRES_ACTION,
    "PAYER_ACTION_REQUIRED": PaymentStatus.REQUIRES_ACTION,
    "APPROVED": PaymentStatus.REQUIRES_CONFIRMATION,
    "VOIDED": PaymentStatus.CANCELED,
    "COMPLETED": PaymentStatus.SUCCEEDED,
}
_CAPTURE_STATUSES = {
    "COMPLETED": PaymentStatus.SUCCEEDED,
    "PENDING": PaymentStatus.PROCESSING,
    "DECLINED": PaymentStatus.FAILED,
    "FAILED": PaymentStatus.FAILED,
}


class PayPalProcessor:
    name = "paypal"
    saves_payment_methods = False

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        webhook_id: str | None,
        clock: Clock,
        sandbox: bool = True,
        api_base: str | None = None,
        timeout_seconds: float = 10.0,
        max_retries: int = 3,
        retry_backoff_seconds: float = 0.5,
        extra_cert_hosts: tuple[str, ...] = (),
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self._webhook_id = webhook_id
        self._clock = clock
        self._max_retries = max_retries
        self._backoff = retry_backoff_seconds
        self._extra_cert_hosts = frozenset(extra_cert_hosts)
        self._http = httpx.AsyncClient(
            base_url=api_base or (SANDBOX_BASE if sandbox else LIVE_BASE),
            timeout=timeout_seconds,
        )
        self._token: tuple[str, datetime] | None = None
        self._token_lock = asyncio.Lock()
        self._certs: dict[str, RSAPublicKey] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- transport ---------------------------------------------------------------------------

    async def _access_token(self, *, renew: bool = False) -> str:
        async with self._token_lock:
            now = self._clock.now()
            if self._token is not None and not renew and now < self._token[1]:
                return self._token[0]

            async def fetch() -> httpx.Response:
                return await self._send(
                    "POST",
                    "/v1/oauth2/token",
                    data={"grant_type": "client_credentials"},
                    auth=(self._client_id, self._client_secret),
                )

            response = await self._retrying(fetch)
            if response.status_code != 200:
                raise ProviderError(f"PayPal refused our credentials ({response.status_code})")
            body = response.json()
            lifetime = timedelta(seconds=int(body.get("expires_in", 0)))
            margin = min(TOKEN_REFRESH_MARGIN, lifetime / 4)
            self._token = (str(body["access_token"]), now + lifetime - margin)
            return self._token[0]

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One HTTP exchange; transient failures become TransientProviderError."""
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise TransientProviderError(type(exc).__name__) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientProviderError(f"HTTP {response.status_code}")
        return response

    async def _retrying(self, call: Any) -> httpx.Response:
        try:
            response: httpx.Response = await with_retries(
                call, max_retries=self._max_retries, base_delay=self._backoff, provider=self.name
            )
        except TransientProviderError as exc:
            raise ProviderUnavailable(f"PayPal is unavailable ({exc})") from None
        return response

    async def _api(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """An authenticated call, retried with the same PayPal-Request-Id; 4xx are returned."""
        headers = {"Prefer": "return=representation"}
        if request_id:
            headers["PayPal-Request-Id"] = request_id

        async def once() -> httpx.Response:
            token = await self._access_token()
            response = await self._send(
                method, path, json=body, headers={**headers, "Authorization": f"Bearer {token}"}
            )
            if response.status_code == 401:  # revoked or expired early: renew once
                token = await self._access_token(renew=True)
                response = await self._send(
                    method,
                    path,
                    json=body,
                    headers={**headers, "Authorization": f"Bearer {token}"},
                )
            return response

        response = await self._retrying(once)
        try:
            data = response.json() if response.content else {}
        except ValueError:
            data = {}
        return response.status_code, data if isinstance(data, dict) else {}

    async def _ok(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        status, data = await self._api(method, path, body=body, request_id=request_id)
        if status >= 400:
            issue = _issue(data)
            if issue in _DECLINED:
                raise PaymentDeclined("PayPal declined the payment", extra={"decline_code": issue})
            raise ProviderError(f"PayPal answered {status}: {issue or data.get('name')}")
        return data

    # -- customers and payment methods -------------------------------------------------------

    async def create_customer(
        self, *, account_id: str, email: str | None, name: str | None, idempotency_key: str
    ) -> Customer:
        # Orders v2 has no customer object: the buyer is identified at approval. Our account id
        # is the reference we pass along.
        return Customer("paypal", account_id, email, name)

    async def update_customer(
        self, customer_id: str, *, email: str | None, name: str | None
    ) -> Customer:
        return Customer("paypal", customer_id, email, name)

    async def attach_payment_method(self, customer_id: str, token: str) -> PaymentMethod:
        raise ProviderOperationUnsupported("PayPal buyers choose how to pay when they approve")

    async def list_payment_methods(self, customer_id: str) -> list[PaymentMethod]:
        return []

    async def detach_payment_method(self, token: str) -> None:
        raise ProviderOperationUnsupported("PayPal buyers choose how to pay when they approve")

    # -- payments ----------------------------------------------------------------------------

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
        unit: dict[str, Any] = {
            "reference_id": reference,
            "custom_id": reference,
            "amount": paypal_value(amount_minor, currency),
        }
        if description:
            unit["description"] = description[:127]
        if invoice_id:
            unit["invoice_id"] = invoice_id
        order = await self._ok(
            "POST",
            "/v2/checkout/orders",
            body={"intent": "CAPTURE", "purchase_units": [unit]},
            request_id=idempotency_key,
        )
        return _order(order, amount_minor, currency)

    async def confirm_payment(
        self, payment_id: str, *, payment_method: str | None, idempotency_key: str
    ) -> PaymentIntent:
        return await self.capture_payment(payment_id, idempotency_key=idempotency_key)

    async def capture_payment(self, payment_id: str, *, idempotency_key: str) -> PaymentIntent:
        path = f"/v2/checkout/orders/{payment_id}/capture"
        status, data = await self._api("POST", path, body={}, request_id=idempotency_key)
        if status == 422 and _issue(data) in _NEEDS_PAYER:
            order = await self._ok("GET", f"/v2/checkout/orders/{payment_id}")
            return _order(order, None, None)
        if status >= 400:
            issue = _issue(data)
            if issue in _DECLINED:
                raise PaymentDeclined("PayPal declined the payment", extra={"decline_code": issue})
            raise ProviderError(f"PayPal answered {status}: {issue or data.get('name')}")
        return _order(data, None, None)

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
        if not charge_id:
            raise ProviderError("the PayPal order has no capture to refund")
        refund = await self._ok(
            "POST",
            f"/v2/payments/captures/{charge_id}/refund",
            body={"amount": paypal_value(amount_minor, currency), "custom_id": reference},
            request_id=idempotency_key,
        )
        status = {"COMPLETED": "succeeded", "CANCELLED": "canceled", "FAILED": "failed"}
        return Refund(
            "paypal",
            str(refund["id"]),
            status.get(str(refund.get("status")), "pending"),
            amount_minor,
            currency,
        )

    async def fetch_dispute(self, dispute_id: str) -> Dispute:
        data = await self._ok("GET", f"/v1/customer/disputes/{dispute_id}")
        amount, currency = _minor(data.get("dispute_amount"))
        transactions = data.get("disputed_transactions") or [{}]
        return Dispute(
            "paypal",
            str(data.get("dispute_id", dispute_id)),
            str(data.get("status", "OPEN")),
            amount or 0,
            currency or "",
            data.get("reason"),
            transactions[0].get("seller_transaction_id"),
        )

    async def create_subscription(
        self,
        *,
        customer_id: str,
        price_id: str,
        reference: str,
        idempotency_key: str,
        payment_method: str | None = None,  # the buyer chooses it when approving
    ) -> ProviderSubscription:
        data = await self._ok(
            "POST",
            "/v1/billing/subscriptions",
            body={"plan_id": price_id, "custom_id": reference},
            request_id=idempotency_key,
        )
        return ProviderSubscription(
            "paypal", str(data["id"]), str(data.get("status", "")), _link(data, "approve")
        )

    async def cancel_subscription(self, subscription_id: str) -> ProviderSubscription:
        await self._ok(
            "POST",
            f"/v1/billing/subscriptions/{subscription_id}/cancel",
            body={"reason": "Canceled by the merchant"},
        )
        return ProviderSubscription("paypal", subscription_id, "CANCELLED")

    # -- webhooks ----------------------------------------------------------------------------

    async def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> VerifiedWebhook:
        """Checks the transmission signature: RSA-SHA256 over
        `transmission_id|transmission_time|webhook_id|crc32(body)` with PayPal's certificate."""
        h = {k.lower(): v for k, v in headers.items()}
        transmission_id = h.get("paypal-transmission-id")
        transmission_time = h.get("paypal-transmission-time")
        signature = h.get("paypal-transmission-sig")
        cert_url = h.get("paypal-cert-url")
        algo = h.get("paypal-auth-algo", "SHA256withRSA")
        if not (self._webhook_id and transmission_id and transmission_time and signature):
            raise WebhookSignatureInvalid("PayPal transmission headers are missing")
        if algo != "SHA256withRSA" or not cert_url:
            raise WebhookSignatureInvalid("unsupported PayPal signature algorithm")
        key = await self._certificate_key(cert_url)
        message = f"{transmission_id}|{transmission_time}|{self._webhook_id}|{zlib.crc32(body)}"
        try:
            key.verify(
                base64.b64decode(signature, validate=True),
                message.encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, binascii.Error, ValueError):
            raise WebhookSignatureInvalid(
                "the PayPal transmission signature does not match"
            ) from None
        try:
            event = json.loads(body)
        except ValueError:
            raise WebhookSignatureInvalid("the signed body is not JSON") from None
        if not isinstance(event, dict) or not isinstance(event.get("id"), str):
            raise WebhookSignatureInvalid("the signed body is not a PayPal event")
        created = event.get("create_time")
        return VerifiedWebhook(
            "paypal",
            event["id"],
            str(event.get("event_type", "")),
            _time(created),
            body,
        )

    def _cert_url_allowed(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
        except ValueError:  # e.g. an unclosed "[": anyone may send it, so a refusal
            return False
        if parts.scheme == "https" and (
            host == PAYPAL_DOMAIN or host.endswith("." + PAYPAL_DOMAIN)
        ):
            return True
        return parts.netloc.lower() in self._extra_cert_hosts

    async def _certificate_key(self, url: str) -> RSAPublicKey:
        if not self._cert_url_allowed(url):
            raise WebhookSignatureInvalid("PAYPAL-CERT-URL is not on PayPal's domain")
        cached = self._certs.get(url)
        if cached is not None:
            return cached

        async def fetch() -> httpx.Response:
            # An absolute URL: httpx ignores base_url for it.
            return await self._send("GET", url)

        response = await self._retrying(fetch)
        if response.status_code != 200:
            raise WebhookSignatureInvalid("PayPal's certificate could not be fetched")
        try:
            cert = x509.load_pem_x509_certificate(response.content)
        except ValueError:
            raise WebhookSignatureInvalid("PayPal's certificate is not a PEM certificate") from None
        now = self._clock.now()
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise WebhookSignatureInvalid("PayPal's certificate is not valid now")
        key = cert.public_key()
        if not isinstance(key, RSAPublicKey):
            raise WebhookSignatureInvalid("PayPal's certificate has no RSA key")
        self._certs[url] = key
        return key


def _issue(data: dict[str, Any]) -> str | None:
    details = data.get("details")
    if isinstance(details, list) and details and isinstance(details[0], dict):
        issue = details[0].get("issue")
        return issue if isinstance(issue, str) else None
    return None


def _minor(amount: Any) -> tuple[int | None, str | None]:
    if not isinstance(amount, dict):
        return None, None
    currency = amount.get("currency_code")
    try:
        return round_to_minor(Decimal(str(amount.get("value"))), str(currency)), str(currency)
    except (InvalidOperation, ValueError):
        return None, None


def _link(data: dict[str, Any], rel: str) -> str | None:
    for link in data.get("links") or []:
        if isinstance(link, dict) and link.get("rel") in (rel, "payer-action"):
            return str(link.get("href"))
    return None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else None


def _order(order: dict[str, Any], amount_minor: int | None, currency: str | None) -> PaymentIntent:
    status = _ORDER_STATUSES.get(str(order.get("status")), PaymentStatus.PROCESSING)
    charge_id = None
    units = order.get("purchase_units") or []
    unit = units[0] if units and isinstance(units[0], dict) else {}
    captures = (unit.get("payments") or {}).get("captures") or []
    if captures:
        capture = captures[0]
        charge_id = capture.get("id")
        status = _CAPTURE_STATUSES.get(str(capture.get("status")), status)
        amount_minor, currency = (
            _minor(capture.get("amount"))
            if amount_minor is None
            else (
                amount_minor,
                currency,
            )
        )
    if amount_minor is None:
        amount_minor, currency = _minor(unit.get("amount"))
    return PaymentIntent(
        provider="paypal",
        id=str(order["id"]),
        status=status,
        amount_minor=amount_minor or 0,
        currency=currency or "",
        charge_id=charge_id,
        approval_url=_link(order, "approve") if status == PaymentStatus.REQUIRES_ACTION else None,
        failure_code="DECLINED" if status == PaymentStatus.FAILED else None,
    )
