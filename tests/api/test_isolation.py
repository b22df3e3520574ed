"""Tenant isolation, endpoint by endpoint: account B's owner key with account A's ids.

The endpoints come from the OpenAPI document, so a new one that takes an id fails this test
until it is listed here: as account-scoped (B must get the 404 an unknown id gets, and the
database must not change) or as operator-only (an owner key gets 403 whatever the id, so the
answer says nothing about what exists).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from aihub_billing.main import create_app
from aihub_billing.models import Base
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.api.world import Operator, Tenant, make_operator_objects, make_tenant

# (method, path) -> body; the body is valid, so that what answers is the lookup.
ACCOUNT_SCOPED: dict[tuple[str, str], Any] = {
    ("POST", "/quota/reservations/{reservation_id}/commit"): {"actual_tokens": 10},
    ("POST", "/quota/reservations/{reservation_id}/release"): {},
    ("GET", "/accounts/{account_id}"): None,
    ("PATCH", "/accounts/{account_id}"): {"name": "Hijacked", "email": "x@b.example.test"},
    ("POST", "/accounts/{account_id}/members"): {"email": "intruder@b.example.test"},
    ("GET", "/accounts/{account_id}/members"): None,
    ("POST", "/accounts/{account_id}/api-keys"): {"role": "owner"},
    ("GET", "/accounts/{account_id}/api-keys"): None,
    ("DELETE", "/accounts/{account_id}/api-keys/{key_id}"): None,
    ("GET", "/accounts/{account_id}/balance"): None,
    ("GET", "/subscriptions/{subscription_id}/invoice-items"): None,
    ("POST", "/subscriptions/{subscription_id}/change"): {"plan_type": "enterprise"},
    ("POST", "/subscriptions/{subscription_id}/cancel"): {"at_period_end": False},
    ("POST", "/subscriptions/{subscription_id}/resume"): None,
    ("POST", "/subscriptions/{subscription_id}/pause"): None,
    ("GET", "/payments/{payment_id}"): None,
    ("POST", "/payments/{payment_id}/confirm"): {},
    ("POST", "/payments/{payment_id}/refund"): {"amount_minor": 100},
    ("DELETE", "/payment-methods/{method_id}"): None,
    ("GET", "/invoices/{invoice_id}"): None,
    ("GET", "/invoices/{invoice_id}/pdf"): None,
    ("POST", "/invoices/{invoice_id}/credit-notes"): {
        "reason": "order_change",
        "outcome": "credit",
        "amount_minor": 100,
    },
    ("GET", "/credit-notes/{credit_note_id}"): None,
}
# Role checks come before any lookup: 403 for an owner key, whether the id exists or not.
OPERATOR_ONLY: dict[tuple[str, str], Any] = {
    ("PATCH", "/plans/{code}"): {"name": "Hijacked"},
    ("POST", "/plans/{code}/archive"): None,
    ("GET", "/coupons/{code}"): None,
    ("POST", "/coupons/{code}/archive"): None,
    ("GET", "/test-clocks/{clock_id}"): None,
    ("POST", "/test-clocks/{clock_id}/accounts"): {"account_id": "{account_id}"},
    ("POST", "/test-clocks/{clock_id}/advance"): {"frozen_time": "2026-03-01T00:00:00Z"},
    ("POST", "/accounts/{account_id}/balance-adjustments"): {
        "amount_minor": 1000,
        "currency": "USD",
        "reason": "goodwill",
    },
    ("POST", "/invoices/{invoice_id}/finalize"): None,
    ("POST", "/invoices/{invoice_id}/mark-paid"): {},
    ("POST", "/invoices/{invoice_id}/void"): None,
    ("POST", "/invoices/{invoice_id}/mark-uncollectible"): None,
}
# Global objects every key may read: no tenant to isolate.
GLOBAL = {("GET", "/plans/{code}")}


def _id_taking_operations() -> set[tuple[str, str]]:
    document = create_app().openapi()
    return {
        (method.upper(), path.removeprefix(API))
        for path, operations in document["paths"].items()
        if "{" in path
        for method in operations
    }


def test_every_endpoint_that_takes_an_id_is_classified() -> None:
    listed = set(ACCOUNT_SCOPED) | set(OPERATOR_ONLY) | GLOBAL
    unlisted = _id_taking_operations() - listed
    assert not unlisted, (
        f"list these in test_isolation.py (account-scoped or operator-only): {unlisted}"
    )
    assert not listed - _id_taking_operations(), "listed endpoints that no longer exist"


def _fill(template: str, a: Tenant, operator: Operator) -> str:
    ids = {
        "account_id": a.account_id,
        "key_id": a.owner_key_id,
        "subscription_id": a.subscription_id,
        "invoice_id": a.invoice_id,
        "credit_note_id": a.credit_note_id,
        "payment_id": a.payment_id,
        "method_id": a.payment_method_id,
        "reservation_id": a.reservation_id,
        "clock_id": operator.test_clock_id,
        "code": operator.coupon_code if template.startswith("/coupons") else operator.plan_code,
    }
    return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], template)


def _unknown(template: str) -> str:
    """The same path with ids that exist nowhere (shaped like real ones)."""
    return re.sub(r"\{(\w+)\}", lambda m: f"{m.group(1)[:4]}_01KG9YS7G0NOTHING0000000000", template)


# Derived from usage_events (compared) by the background roller on PostgreSQL, which moves
# its watermark with any transaction.
DERIVED = {"usage_daily", "usage_rollup_state"}


async def _database(billing: BillingService) -> dict[str, list[str]]:
    """Every row of every table: a refused request must leave all of them as they were."""
    async with billing.db.engine.connect() as conn:
        return {
            table.name: sorted(repr(tuple(row)) for row in await conn.execute(select(table)))
            for table in Base.metadata.sorted_tables
            if table.name not in DERIVED
        }


async def _send(
    client: httpx.AsyncClient, key: str, method: str, path: str, body: Any
) -> httpx.Response:
    return await client.request(method, f"{API}{path}", json=body, headers=auth(key))


@pytest.fixture
async def tenants(
    client: httpx.AsyncClient, billing: BillingService, admin_key: str
) -> tuple[Tenant, Tenant, Operator]:
    a = await make_tenant(client, billing, admin_key, "acme")
    b = await make_tenant(client, billing, admin_key, "globex")
    operator = await make_operator_objects(client, admin_key)
    await billing.roll_up_usage()  # nothing left for the background roller to change
    return a, b, operator


async def test_another_accounts_ids_are_not_found(
    client: httpx.AsyncClient,
    billing: BillingService,
    tenants: tuple[Tenant, Tenant, Operator],
) -> None:
    a, b, operator = tenants
    before = await _database(billing)
    for (method, template), body in ACCOUNT_SCOPED.items():
        foreign = await _send(client, b.owner_key, method, _fill(template, a, operator), body)
        unknown = await _send(client, b.owner_key, method, _unknown(template), body)
        where = f"{method} {template}: {foreign.text}"
        assert foreign.status_code == 404, where
        assert foreign.headers["content-type"] == "application/problem+json", where
        # Indistinguishable from an id that exists nowhere: no existence oracle.
        assert foreign.json()["code"] == unknown.json()["code"], where
        assert await _database(billing) == before, f"{method} {template} changed the database"
    # A's objects still work for A (the reservation is live, the key valid).
    released = await _send(
        client, a.owner_key, "POST", f"/quota/reservations/{a.reservation_id}/release", {}
    )
    assert released.status_code == 200, released.text


async def test_operator_only_endpoints_refuse_owner_keys(
    client: httpx.AsyncClient,
    billing: BillingService,
    tenants: tuple[Tenant, Tenant, Operator],
) -> None:
    a, b, operator = tenants
    before = await _database(billing)
    for (method, template), body in OPERATOR_ONLY.items():
        filled = body
        if isinstance(body, dict):
            filled = {
                k: _fill(v, a, operator) if isinstance(v, str) else v for k, v in body.items()
            }
        for key in (a.owner_key, b.owner_key):
            response = await _send(client, key, method, _fill(template, a, operator), filled)
            unknown = await _send(client, key, method, _unknown(template), filled)
            where = f"{method} {template}: {response.text}"
            assert response.status_code == unknown.status_code == 403, where
            assert response.json()["code"] == "forbidden", where
        assert await _database(billing) == before, f"{method} {template} changed the database"


def _account_filtered_reads() -> list[str]:
    document = create_app().openapi()
    return sorted(
        path.removeprefix(API)
        for path, operations in document["paths"].items()
        if "get" in operations
        and any(
            (p["name"], p["in"]) == ("account_id", "query")
            for p in operations["get"].get("parameters", ())
        )
    )


async def test_account_id_filters_do_not_reach_another_account(
    client: httpx.AsyncClient, tenants: tuple[Tenant, Tenant, Operator]
) -> None:
    """Reads that take `?account_id=` (the operator's filter) answer another account's id
    with the 404 an unknown one gets, and never with its data."""
    a, b, _ = tenants
    paths = _account_filtered_reads()
    assert len(paths) > 5
    for path in paths:
        foreign = await client.get(
            f"{API}{path}", params={"account_id": a.account_id}, headers=auth(b.owner_key)
        )
        unknown = await client.get(
            f"{API}{path}", params={"account_id": "acct_nothing"}, headers=auth(b.owner_key)
        )
        where = f"GET {path}: {foreign.status_code} {foreign.text[:300]}"
        if foreign.status_code == 200:  # answered for the key's own account, not A's
            assert a.account_id not in foreign.text, where
        assert (foreign.status_code, foreign.json().get("code")) == (
            unknown.status_code,
            unknown.json().get("code"),
        ), where
