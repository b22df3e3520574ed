"""An operator key on a route about one account that does not say which account gets one
answer everywhere: 400 `account_required` (not 404 `no account ''`, nor `invalid_request`)."""

from __future__ import annotations

import httpx
import pytest

from tests.api.helpers import API, auth

ROUTES = [
    ("GET", "/usage/stats"),
    ("GET", "/invoices/upcoming"),
    ("GET", "/summary"),
    ("GET", "/subscriptions/current"),
    ("GET", "/subscriptions/history"),
    ("GET", "/payments/settings"),
    ("GET", "/quota"),
    ("GET", "/quota/overrides"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_an_operator_key_without_an_account_id_is_told_to_name_one(
    client: httpx.AsyncClient, admin_key: str, method: str, path: str
) -> None:
    response = await client.request(method, f"{API}{path}", headers=auth(admin_key))
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "account_required"
