"""Helpers for the invoice tests: plans with overage, clocked accounts, usage, invoices."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.helpers import API, auth
from tests.subscriptions.helpers import ok, owner

INVOICES = f"{API}/invoices"


def metered_plan(
    code: str, amount_minor: int, currency: str = "USD", **limits: Any
) -> dict[str, Any]:
    """A monthly plan whose calls and tokens beyond the included ones are billed."""
    price: dict[str, Any] = {
        "currency": currency,
        "amount_minor": amount_minor,
        "overage_per_1k_calls": limits.pop("per_1k_calls", "500"),
        "overage_per_1m_tokens": limits.pop("per_1m_tokens", "5000"),
    }
    if "per_gb_month" in limits:
        price["overage_per_gb_month"] = limits.pop("per_gb_month")
    if "setup_fee_minor" in limits:
        price["setup_fee_minor"] = limits.pop("setup_fee_minor")
    return {
        "code": code,
        "name": code.title(),
        "limits": {
            "included_api_calls": 10,
            "included_tokens": 1000,
            "calls_policy": "bill",
            "tokens_policy": "bill",
            **limits,
        },
        "prices": [price],
    }


async def clocked_account(
    client: httpx.AsyncClient, admin_key: str, frozen_time: str, **account: Any
) -> tuple[str, str, str]:
    clock = await ok(client, admin_key, "/test-clocks", {"frozen_time": frozen_time})
    account_id, key = await owner(client, admin_key, **account)
    await ok(client, admin_key, f"/test-clocks/{clock['id']}/accounts", {"account_id": account_id})
    return clock["id"], account_id, key


async def advance(
    client: httpx.AsyncClient, admin_key: str, clock_id: str, to: str
) -> list[tuple[str, str]]:
    moved = await ok(client, admin_key, f"/test-clocks/{clock_id}/advance", {"frozen_time": to})
    return [(j["name"], j["run_at"]) for j in moved["jobs_run"]]


# Jobs that follow an invoice's changes (collection, PDF, notifications; tested elsewhere).
_FOLLOWERS = {"invoices.collect", "invoices.render_pdf", "notifications.deliver"}


def billing_jobs(ran: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The renewal and invoice jobs of an advance, without those that follow them."""
    return [job for job in ran if job[0] not in _FOLLOWERS]


async def track(
    client: httpx.AsyncClient, key: str, model: str, tokens: int, at: str, n: int = 1
) -> None:
    events = [
        {"model": model, "input_tokens": tokens, "output_tokens": 0, "timestamp": at}
        for _ in range(n)
    ]
    response = await client.post(f"{API}/usage/batch", json={"events": events}, headers=auth(key))
    assert response.status_code in (200, 201), response.text
    assert response.json()["accepted"] == n, response.text


async def list_invoices(client: httpx.AsyncClient, key: str, **params: str) -> list[dict[str, Any]]:
    response = await client.get(INVOICES, params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def invoice(client: httpx.AsyncClient, key: str, invoice_id: str) -> dict[str, Any]:
    response = await client.get(f"{INVOICES}/{invoice_id}", headers=auth(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def kinds(inv: dict[str, Any]) -> list[tuple[str, int]]:
    return [(line["kind"], line["amount_minor"]) for line in inv["lines"]]


async def invoices_by_period(client: httpx.AsyncClient, key: str) -> list[tuple[Any, ...]]:
    """Every invoice of the key's account as (billing reason, period start, period end, line
    kinds), in period order."""
    found = []
    for summary in await list_invoices(client, key):
        full = await invoice(client, key, summary["id"])
        found.append(
            (full["billing_reason"], full["period_start"], full["period_end"], kinds(full))
        )
    return sorted(found, key=lambda x: (x[1], x[0]))


def check_sums(inv: dict[str, Any]) -> None:
    """The invoice's figures are the integer sums of its lines."""
    lines = inv["lines"]
    assert inv["subtotal_minor"] == sum(x["amount_minor"] for x in lines)
    assert inv["tax_minor"] == sum(x["tax_minor"] for x in lines)
    assert inv["total_minor"] == inv["subtotal_minor"] + inv["tax_minor"]
    assert inv["amount_due_minor"] == inv["total_minor"] - inv["balance_applied_minor"]
