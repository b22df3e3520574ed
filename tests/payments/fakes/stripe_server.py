"""A local Stripe: answers with the fixture object of each resource from Stripe's own
fixtures, overlaid with what the request carried; checks the form-encoded parameters against
the operation in Stripe's OpenAPI spec; honours Idempotency-Key like Stripe does.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import parse_qsl

from tests.payments.fakes.server import FakeServer, Request, Response
from tests.payments.fakes.specs import VENDOR_SPECS

SPECS = VENDOR_SPECS / "stripe"


@cache
def fixtures() -> dict[str, Any]:
    return dict(json.loads((SPECS / "fixtures3.2024-06.json").read_text())["resources"])


@cache
def spec() -> dict[str, Any]:
    return dict(json.loads((SPECS / "spec3.2024-04-10.json").read_text()))


def decode_form(text: str) -> dict[str, Any]:
    """Stripe's bracket encoding (`metadata[a]=1`, `items[0][price]=p`) back to nested data."""
    out: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+", key)
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _lists(out)


def _lists(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _lists(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
    return node


class SpecViolation(Exception):
    pass


def _operation(method: str, path: str) -> dict[str, Any]:
    for template, ops in spec()["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", r"[^/]+", template) + "$"
        if re.match(pattern, path) and method.lower() in ops:
            return dict(ops[method.lower()])
    raise SpecViolation(f"{method} {path} is not a Stripe operation")


def _check_type(name: str, value: Any, schema: dict[str, Any]) -> None:
    kind = schema.get("type")
    if kind == "integer" and not (isinstance(value, str) and re.fullmatch(r"-?\d+", value)):
        raise SpecViolation(f"{name} must be an integer, got {value!r}")
    if kind == "boolean" and value not in ("true", "false"):
        raise SpecViolation(f"{name} must be a boolean, got {value!r}")
    if kind == "string" and not isinstance(value, str):
        raise SpecViolation(f"{name} must be a string")
    if kind == "string" and "enum" in schema and value not in schema["enum"]:
        raise SpecViolation(f"{name} must be one of {schema['enum']}")
    if kind == "array" and not isinstance(value, list):
        raise SpecViolation(f"{name} must be an array")
    if kind == "object" and not isinstance(value, dict):
        raise SpecViolation(f"{name} must be an object")


def validate(method: str, path: str, params: dict[str, Any]) -> None:
    """Top-level names, required names and scalar types per the operation's schema."""
    operation = _operation(method, path)
    if method == "GET":
        allowed = {p["name"]: p.get("schema", {}) for p in operation.get("parameters", [])}
        for name in params:
            if name not in allowed:
                raise SpecViolation(f"unknown query parameter {name!r}")
        return
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/x-www-form-urlencoded", {}).get("schema", {})
    properties = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in params:
            raise SpecViolation(f"missing required parameter {name!r}")
    for name, value in params.items():
        if name not in properties:
            raise SpecViolation(f"unknown parameter {name!r}")
        prop = properties[name]
        options = prop.get("anyOf") or [prop]
        errors = []
        for option in options:
            try:
                _check_type(name, value, option)
                break
            except SpecViolation as exc:
                errors.append(exc)
        else:
            raise errors[0]


@dataclass
class StripeFake:
    """State of the local Stripe. `behave(kind)` scripts the next confirm (or any call)."""

    api_key_prefix: str = "sk_test_"
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    idempotent: dict[str, tuple[str, Response]] = field(default_factory=dict)
    charges: list[str] = field(default_factory=list)  # one entry per real charge
    requests: list[tuple[str, str, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    script: list[str] = field(default_factory=list)  # behaviours for upcoming calls
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    server: FakeServer | None = None

    def start(self) -> StripeFake:
        self.server = FakeServer(self.handle).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def behave(self, *kinds: str) -> None:
        """decline | 3ds | 5xx | drop_after_charge | drop_after_refund, for the next calls."""
        self.script.extend(kinds)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):06d}"

    def add_payment_method(self, brand: str = "visa", last4: str = "4242") -> str:
        """A token as Stripe.js would have made it in the browser."""
        method = copy.deepcopy(fixtures()["payment_method"])
        method.update(id=self.new_id("pm"), customer=None, metadata={})
        method["card"].update(brand=brand, last4=last4, exp_month=12, exp_year=2030)
        self.methods[method["id"]] = method
        return str(method["id"])

    def add_dispute(self, intent_id: str, amount: int) -> str:
        dispute = copy.deepcopy(fixtures()["dispute"])
        intent = self.intents[intent_id]
        dispute.update(
            id=self.new_id("dp"),
            amount=amount,
            currency=intent["currency"],
            payment_intent=intent_id,
            charge=intent["latest_charge"],
            status="needs_response",
        )
        self.disputes[dispute["id"]] = dispute
        return str(dispute["id"])

    disputes: dict[str, dict[str, Any]] = field(default_factory=dict)

    # -- HTTP --------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        params = decode_form(request.body.decode() if request.method != "GET" else request.query)
        self.requests.append((request.method, request.path, request.headers, params))
        auth = request.headers.get("authorization", "")
        if not auth.startswith(f"Bearer {self.api_key_prefix}"):
            return _error(401, "invalid_request_error", "api_key_invalid", "Invalid API Key")
        try:
            validate(request.method, request.path, params)
        except SpecViolation as exc:
            return _error(400, "invalid_request_error", "parameter_unknown", str(exc))
        # An outage answers before Stripe's idempotency layer is reached.
        if self.script and self.script[0] == "5xx" and request.method == "POST":
            self.script.pop(0)
            return _error(500, "api_error", None, "An unknown error occurred")
        key = request.headers.get("idempotency-key")
        fingerprint = hashlib.sha256(request.path.encode() + request.body).hexdigest()
        if request.method == "POST" and key and key in self.idempotent:
            stored_fingerprint, stored = self.idempotent[key]
            if stored_fingerprint != fingerprint:
                return _error(
                    400,
                    "idempotency_error",
                    "idempotency_key_in_use",
                    "Keys for idempotent "
                    "requests can only be used with the same parameters they were first used with.",
                )
            return Response(stored.status, stored.body, {"Idempotent-Replayed": "true"})
        behaviour = self.script[0] if self.script else None
        response = self._route(request, params)
        if request.method == "POST" and key and response.status < 500:
            self.idempotent[key] = (fingerprint, response)
        if (behaviour == "drop_after_charge" and request.path.endswith("/confirm")) or (
            behaviour == "drop_after_refund" and request.path == "/v1/refunds"
        ):
            self.script.pop(0)
            return Response(0, drop=True)
        return response

    def _route(self, request: Request, p: dict[str, Any]) -> Response:
        m, path = request.method, request.path
        parts = path.strip("/").split("/")[1:]  # drop "v1"
        match (m, parts):
            case ("POST", ["customers"]):
                return self._customer(None, p)
            case ("POST", ["customers", cid]):
                return self._customer(cid, p)
            case ("GET", ["customers", cid, "payment_methods"]):
                data = [x for x in self.methods.values() if x["customer"] == cid]
                return Response(200, _list(f"/v1/customers/{cid}/payment_methods", data))
            case ("POST", ["payment_methods", pm, "attach"]):
                if pm not in self.methods or p["customer"] not in self.customers:
                    return _missing("payment_method" if pm not in self.methods else "customer")
                self.methods[pm]["customer"] = p["customer"]
                return Response(200, self.methods[pm])
            case ("POST", ["payment_methods", pm, "detach"]):
                if pm not in self.methods:
                    return _missing("payment_method")
                self.methods[pm]["customer"] = None
                return Response(200, self.methods[pm])
            case ("POST", ["payment_intents"]):
                return self._create_intent(p)
            case ("POST", ["payment_intents", pi, "confirm"]):
                return self._confirm(pi, p)
            case ("POST", ["payment_intents", pi, "capture"]):
                if pi not in self.intents:
                    return _missing("payment_intent")
                return Response(200, self.intents[pi])
            case ("POST", ["refunds"]):
                return self._refund(p)
            case ("GET", ["disputes", dp]):
                if dp not in self.disputes:
                    return _missing("dispute")
                return Response(200, self.disputes[dp])
            case ("POST", ["subscriptions"]):
                sub = copy.deepcopy(fixtures()["subscription"])
                sub.update(
                    id=self.new_id("sub"),
                    customer=p["customer"],
                    metadata=p.get("metadata", {}),
                    status="active",
                )
                sub["items"]["data"] = sub["items"]["data"][:1]
                sub["items"]["data"][0]["price"]["id"] = p["items"][0]["price"]
                self.subscriptions[sub["id"]] = sub
                return Response(200, sub)
            case ("DELETE", ["subscriptions", sid]):
                if sid not in self.subscriptions:
                    return _missing("subscription")
                self.subscriptions[sid]["status"] = "canceled"
                return Response(200, self.subscriptions[sid])
        return _error(404, "invalid_request_error", None, f"Unrecognized request URL ({path})")

    def _customer(self, cid: str | None, p: dict[str, Any]) -> Response:
        if cid is None:
            customer = copy.deepcopy(fixtures()["customer"])
            customer.update(id=self.new_id("cus"), email=None, name=None, metadata={})
            self.customers[customer["id"]] = customer
        elif cid not in self.customers:
            return _missing("customer")
        customer = self.customers[cid or customer["id"]]
        for name in ("email", "name"):
            if name in p:
                customer[name] = p[name]
        customer["metadata"].update(p.get("metadata", {}))
        return Response(200, customer)

    def _create_intent(self, p: dict[str, Any]) -> Response:
        intent = copy.deepcopy(fixtures()["payment_intent"])
        ident = self.new_id("pi")
        intent.update(
            id=ident,
            amount=int(p["amount"]),
            amount_received=0,
            currency=p["currency"],
            customer=p.get("customer"),
            description=p.get("description"),
            metadata=p.get("metadata", {}),
            payment_method=p.get("payment_method"),
            payment_method_types=p.get("payment_method_types", ["card"]),
            client_secret=f"{ident}_secret_fake",
            latest_charge=None,
            last_payment_error=None,
            next_action=None,
            status="requires_confirmation"
            if p.get("payment_method")
            else "requires_payment_method",
        )
        self.intents[ident] = intent
        # A snapshot, as Stripe stores it for an idempotent replay.
        return Response(200, copy.deepcopy(intent))

    def _confirm(self, pi: str, p: dict[str, Any]) -> Response:
        if pi not in self.intents:
            return _missing("payment_intent")
        intent = self.intents[pi]
        if "payment_method" in p:
            intent["payment_method"] = p["payment_method"]
        if not intent["payment_method"]:
            return _error(
                400,
                "invalid_request_error",
                "payment_intent_unexpected_state",
                "You cannot confirm this PaymentIntent: it has no payment method.",
            )
        behaviour = self.script[0] if self.script else None
        if behaviour == "decline":
            self.script.pop(0)
            intent["status"] = "requires_payment_method"
            error = {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "insufficient_funds",
                "message": "Your card has insufficient funds.",
                "payment_intent": copy.deepcopy(intent),
            }
            return Response(402, {"error": error})
        if behaviour == "3ds":
            self.script.pop(0)
            intent["status"] = "requires_action"
            intent["next_action"] = {
                "type": "use_stripe_sdk",
                "use_stripe_sdk": {"type": "three_d_secure_redirect"},
            }
            return Response(200, copy.deepcopy(intent))
        charge_id = self.new_id("ch")
        self.charges.append(charge_id)
        intent.update(status="succeeded", amount_received=intent["amount"], latest_charge=charge_id)
        return Response(200, copy.deepcopy(intent))

    def _refund(self, p: dict[str, Any]) -> Response:
        pi = p.get("payment_intent")
        if pi not in self.intents:
            return _missing("payment_intent")
        intent = self.intents[pi]
        amount = int(p.get("amount", intent["amount"]))
        done = sum(
            r["amount"]
            for r in self.refunds.values()
            if r["payment_intent"] == pi and r["status"] not in ("failed", "canceled")
        )
        if amount + done > intent["amount_received"]:
            return _error(
                400,
                "invalid_request_error",
                "charge_already_refunded",
                "Refund amount is greater than the unrefunded amount.",
            )
        refund = copy.deepcopy(fixtures()["refund"])
        refund.update(
            id=self.new_id("re"),
            amount=amount,
            currency=intent["currency"],
            payment_intent=pi,
            charge=intent["latest_charge"],
            metadata=p.get("metadata", {}),
            status="succeeded",
        )
        self.refunds[refund["id"]] = refund
        return Response(200, refund)


def _list(url: str, data: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": False, "url": url}


def _error(status: int, kind: str, code: str | None, message: str) -> Response:
    error: dict[str, Any] = {"type": kind, "message": message}
    if code:
        error["code"] = code
    return Response(status, {"error": error})


def _missing(resource: str) -> Response:
    return _error(404, "invalid_request_error", "resource_missing", f"No such {resource}")
