"""A local PayPal: validates each request body against the operation's request schema in
PayPal's OpenAPI documents, answers with bodies that validate against the response schema,
issues short-lived OAuth2 tokens, honours PayPal-Request-Id, and serves a certificate for
webhook signatures.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import re
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from jsonschema import Draft4Validator

from tests.payments.fakes.server import FakeServer, Request, Response
from tests.payments.fakes.specs import VENDOR_SPECS

DOCS = (
    "checkout_orders_v2.json",
    "payments_payment_v2.json",
    "billing_subscriptions_v1.json",
    "customer_disputes_v1.json",
)


@cache
def _doc(name: str) -> dict[str, Any]:
    return dict(json.loads((VENDOR_SPECS / "paypal" / name).read_text()))


@cache
def _validator(name: str, ref: str) -> Draft4Validator:
    doc = _doc(name)
    return Draft4Validator({"$ref": ref, "components": doc["components"]})


def _operation(method: str, path: str) -> tuple[str, dict[str, Any]] | None:
    for name in DOCS:
        for template, ops in _doc(name)["paths"].items():
            pattern = "^" + re.sub(r"\{[^}]+\}", r"[^/]+", template) + "$"
            if re.match(pattern, path) and method.lower() in ops:
                return name, ops[method.lower()]
    return None


def schema_errors(method: str, path: str, body: Any, *, status: int | None = None) -> list[str]:
    """Errors of a request body (status None) or a response body against PayPal's schemas."""
    found = _operation(method, path)
    if found is None:
        return [f"{method} {path} is not a PayPal operation"]
    name, operation = found
    if status is None:
        content = operation.get("requestBody", {}).get("content", {})
    else:
        content = operation.get("responses", {}).get(str(status), {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if schema is None:
        return []
    ref = schema.get("$ref")
    validator = _validator(name, ref) if ref else Draft4Validator(schema)
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(body)]


def make_certificate(now: datetime) -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "messageverificationcerts")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


def _money(value: dict[str, str]) -> dict[str, str]:
    return {"currency_code": value["currency_code"], "value": value["value"]}


@dataclass
class PayPalFake:
    client_id: str = "client-test"
    client_secret: str = "secret-test"
    token_ttl: int = 120
    tokens: list[str] = field(default_factory=list)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    captures: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    disputes: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_request_id: dict[str, Response] = field(default_factory=dict)
    charges: list[str] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    schema_violations: list[str] = field(default_factory=list)
    script: list[str] = field(default_factory=list)
    require_approval: bool = False
    cert_pem: bytes = b""
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    server: FakeServer | None = None

    def start(self) -> PayPalFake:
        self.server = FakeServer(self.handle).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def netloc(self) -> str:
        return self.url.split("://", 1)[1]

    def behave(self, *kinds: str) -> None:
        """decline | 5xx | drop_after_charge | drop_after_refund | refund_failed (the next
        refund is answered with status FAILED), consumed by upcoming calls."""
        self.script.extend(kinds)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):013d}"

    def approve(self, order_id: str) -> None:
        """What the buyer does on PayPal's approval page."""
        self.orders[order_id]["status"] = "APPROVED"

    def add_dispute(self, capture_id: str, value: str, currency: str) -> str:
        ident = self.new_id("PP-D-")
        now = _now()
        self.disputes[ident] = {
            "dispute_id": ident,
            "create_time": now,
            "update_time": now,
            "reason": "MERCHANDISE_OR_SERVICE_NOT_RECEIVED",
            "status": "OPEN",
            "dispute_amount": {"currency_code": currency, "value": value},
            "disputed_transactions": [{"seller_transaction_id": capture_id}],
            "links": [
                {"href": f"{self.url}/v1/customer/disputes/{ident}", "rel": "self", "method": "GET"}
            ],
        }
        return ident

    # -- HTTP --------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        body: Any = None
        if request.body and request.headers.get("content-type", "").startswith("application/json"):
            body = json.loads(request.body)
        self.requests.append((request.method, request.path, request.headers, body))
        if request.path.startswith("/certs/"):
            return Response(200, raw=self.cert_pem, headers={"Content-Type": "text/plain"})
        if request.path == "/v1/oauth2/token":
            return self._token(request)
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            return Response(401, {"error": "invalid_token", "error_description": "expired"})
        if body is not None or request.method == "POST":
            errors = schema_errors(request.method, request.path, body or {})
            if errors:
                self.schema_violations.extend(errors)
                return _problem(400, "INVALID_REQUEST", "INVALID_PARAMETER_SYNTAX")
        if self.script and self.script[0] == "5xx":
            self.script.pop(0)
            return _problem(500, "INTERNAL_SERVER_ERROR", "INTERNAL_SERVICE_ERROR")
        request_id = request.headers.get("paypal-request-id")
        if request_id and request_id in self.by_request_id:
            return self.by_request_id[request_id]
        response = self._route(request, body or {})
        if response.body is not None and response.status < 300:
            for error in schema_errors(
                request.method, request.path, response.body, status=response.status
            ):
                self.schema_violations.append(f"response: {error}")
        if request_id and response.status < 500:
            self.by_request_id[request_id] = response
        if self.script and (
            (self.script[0] == "drop_after_charge" and request.path.endswith("/capture"))
            or (self.script[0] == "drop_after_refund" and request.path.endswith("/refund"))
        ):
            self.script.pop(0)
            return Response(0, drop=True)
        return response

    def _token(self, request: Request) -> Response:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return Response(401, {"error": "invalid_client"})
        if b"grant_type=client_credentials" not in request.body:
            return Response(400, {"error": "unsupported_grant_type"})
        token = f"A21AA{next(self._ids):08d}"
        self.tokens.append(token)
        return Response(
            200,
            {
                "scope": "https://uri.paypal.com/services/payments/payment",
                "access_token": token,
                "token_type": "Bearer",
                "app_id": "APP-80W284485P519543T",
                "expires_in": self.token_ttl,
                "nonce": "2026-01-31T12:00:00Zfake",
            },
        )

    def _route(self, request: Request, body: dict[str, Any]) -> Response:
        parts = request.path.strip("/").split("/")
        match (request.method, parts):
            case ("POST", ["v2", "checkout", "orders"]):
                return self._create_order(body)
            case ("GET", ["v2", "checkout", "orders", oid]):
                if oid not in self.orders:
                    return _problem(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID")
                return Response(200, self.orders[oid])
            case ("POST", ["v2", "checkout", "orders", oid, "capture"]):
                return self._capture(oid)
            case ("POST", ["v2", "payments", "captures", cid, "refund"]):
                return self._refund(cid, body)
            case ("GET", ["v1", "customer", "disputes", did]):
                if did not in self.disputes:
                    return _problem(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID")
                return Response(200, self.disputes[did])
            case ("POST", ["v1", "billing", "subscriptions"]):
                ident = self.new_id("I-")
                sub = {
                    "id": ident,
                    "plan_id": body["plan_id"],
                    "custom_id": body.get("custom_id"),
                    "status": "APPROVAL_PENDING",
                    "create_time": _now(),
                    "links": [
                        _link(
                            f"{APPROVE}/webapps/billing/subscriptions?ba_token=BA-{ident}",
                            "approve",
                        ),
                        _link(f"{self.url}/v1/billing/subscriptions/{ident}", "self"),
                    ],
                }
                self.subscriptions[ident] = sub
                return Response(201, sub)
            case ("POST", ["v1", "billing", "subscriptions", sid, "cancel"]):
                if sid not in self.subscriptions:
                    return _problem(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID")
                self.subscriptions[sid]["status"] = "CANCELLED"
                return Response(204, raw=b"")
        return _problem(404, "NOT_FOUND", "INVALID_RESOURCE_ID")

    def _create_order(self, body: dict[str, Any]) -> Response:
        ident = self.new_id("5O")
        units = []
        for unit in body["purchase_units"]:
            kept = {k: v for k, v in unit.items() if k in _KEPT_UNIT_FIELDS}
            units.append({**kept, "amount": _money(unit["amount"])})
        order = {
            "id": ident,
            "intent": body["intent"],
            "status": "CREATED",
            "purchase_units": units,
            "create_time": _now(),
            "links": [
                _link(f"{self.url}/v2/checkout/orders/{ident}", "self"),
                _link(f"{APPROVE}/checkoutnow?token={ident}", "approve"),
                _link(f"{self.url}/v2/checkout/orders/{ident}/capture", "capture", "POST"),
            ],
        }
        self.orders[ident] = order
        return Response(201, copy.deepcopy(order))

    def _capture(self, oid: str) -> Response:
        if oid not in self.orders:
            return _problem(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID")
        order = self.orders[oid]
        if self.require_approval and order["status"] != "APPROVED":
            return _problem(422, "UNPROCESSABLE_ENTITY", "ORDER_NOT_APPROVED")
        if self.script and self.script[0] == "decline":
            self.script.pop(0)
            return _problem(422, "UNPROCESSABLE_ENTITY", "INSTRUMENT_DECLINED")
        if order["status"] == "COMPLETED":
            return _problem(422, "UNPROCESSABLE_ENTITY", "ORDER_ALREADY_CAPTURED")
        unit = order["purchase_units"][0]
        capture_id = self.new_id("3C")
        capture = {
            "id": capture_id,
            "status": "COMPLETED",
            "amount": _money(unit["amount"]),
            "final_capture": True,
            "custom_id": unit.get("custom_id"),
            "create_time": _now(),
            "update_time": _now(),
        }
        if capture["custom_id"] is None:
            del capture["custom_id"]
        self.captures[capture_id] = {**capture, "order_id": oid}
        self.charges.append(capture_id)
        unit["payments"] = {"captures": [capture]}
        order["status"] = "COMPLETED"
        return Response(201, copy.deepcopy(order))

    def _refund(self, cid: str, body: dict[str, Any]) -> Response:
        if cid not in self.captures:
            return _problem(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID")
        capture = self.captures[cid]
        amount = body.get("amount") or capture["amount"]
        ident = self.new_id("1R")
        failed = bool(self.script) and self.script[0] == "refund_failed"
        if failed:
            self.script.pop(0)
        refund = {
            "id": ident,
            "status": "FAILED" if failed else "COMPLETED",
            "amount": _money(amount),
            "create_time": _now(),
            "links": [
                _link(f"{self.url}/v2/payments/refunds/{ident}", "self"),
                _link(f"{self.url}/v2/payments/captures/{cid}", "up"),
            ],
        }
        if "custom_id" in body:
            refund["custom_id"] = body["custom_id"]
        self.refunds[ident] = refund
        return Response(201, refund)

    # -- webhooks ----------------------------------------------------------------------------

    def sign(
        self,
        key: rsa.RSAPrivateKey,
        body: bytes,
        webhook_id: str,
        *,
        cert_url: str | None = None,
        transmission_id: str = "69cd13f0-d67a-11e5-baa3-778b53f4ae55",
    ) -> dict[str, str]:
        """Headers of a webhook delivery signed the way PayPal signs."""
        when = _now()
        message = f"{transmission_id}|{when}|{webhook_id}|{zlib.crc32(body)}".encode()
        signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        return {
            "Content-Type": "application/json",
            "PAYPAL-TRANSMISSION-ID": transmission_id,
            "PAYPAL-TRANSMISSION-TIME": when,
            "PAYPAL-TRANSMISSION-SIG": base64.b64encode(signature).decode(),
            "PAYPAL-CERT-URL": cert_url or f"{self.url}/certs/CERT-360caa42-fca2a594-test",
            "PAYPAL-AUTH-ALGO": "SHA256withRSA",
        }


APPROVE = "https://www.sandbox.paypal.com"
_KEPT_UNIT_FIELDS = ("reference_id", "custom_id", "invoice_id", "description")


def _link(href: str, rel: str, method: str = "GET") -> dict[str, str]:
    return {"href": href, "rel": rel, "method": method}


def _now() -> str:
    return datetime(2026, 1, 31, 12, 0, tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _problem(status: int, name: str, issue: str) -> Response:
    return Response(
        status,
        {
            "name": name,
            "message": "The requested action could not be performed.",
            "debug_id": "f0b3b9c0a1b2c",
            "details": [{"issue": issue, "description": issue.replace("_", " ").lower()}],
        },
    )
