"""What POST /accounts refuses or normalizes: currencies that are no money in use, a name of
blanks, a negative zero tax rate, an exemption sent with a rate."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.helpers import API, auth, create_account


async def refused(client: httpx.AsyncClient, admin_key: str, body: dict[str, Any]) -> list[Any]:
    """POSTs the account and returns the 422's errors (a problem+json validation_error)."""
    response = await client.post(f"{API}/accounts", json=body, headers=auth(admin_key))
    assert response.status_code == 422, (body, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation_error", problem
    errors: list[Any] = problem["errors"]
    return errors


# No currency, testing, metals, the IMF's SDR, funds codes, defunct currencies.
@pytest.mark.parametrize(
    "code",
    ["XXX", "xts", "XAU", "XAG", "XPT", "XPD", "XDR", "XSU", "USN", "VEF", "HRK", "DEM", "ZWL"],
)
async def test_a_currency_that_is_no_legal_tender_now_is_refused(
    client: httpx.AsyncClient, admin_key: str, code: str
) -> None:
    [error] = await refused(client, admin_key, {"name": "Acme", "currency": code})
    assert error["loc"] == ["body", "currency"], error
    assert "not legal tender" in error["msg"], error


# What the seed's plans, the tests and the README price in, plus a few exponents.
@pytest.mark.parametrize("code", ["USD", "eur", "CNY", "JPY", "KWD", "ISK", "GBP", "XOF", "VES"])
async def test_current_currencies_are_accepted(
    client: httpx.AsyncClient, admin_key: str, code: str
) -> None:
    account = await create_account(client, admin_key, currency=code)
    assert account["currency"] == code.upper()


@pytest.mark.parametrize("name", [" ", "   ", "\t\n", "\u3000", "\u00a0 "])
async def test_a_name_of_blanks_is_refused(
    client: httpx.AsyncClient, admin_key: str, name: str
) -> None:
    [error] = await refused(client, admin_key, {"name": name})
    assert error["loc"] == ["body", "name"], error


async def test_a_name_is_stored_without_surrounding_blanks(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    account = await create_account(client, admin_key, name="  Acme GmbH\t")
    assert account["name"] == "Acme GmbH"
    fetched = await client.get(f"{API}/accounts/{account['id']}", headers=auth(admin_key))
    assert fetched.json()["name"] == "Acme GmbH"


@pytest.mark.parametrize("rate", ["-0", "-0.000", "-0E-10", "0E+3", "0.000000"])
async def test_a_zero_tax_rate_is_stored_and_echoed_as_0(
    client: httpx.AsyncClient, admin_key: str, rate: str
) -> None:
    account = await create_account(client, admin_key, tax_rate=rate)
    assert account["tax_rate"] == "0"
    fetched = await client.get(f"{API}/accounts/{account['id']}", headers=auth(admin_key))
    assert fetched.json()["tax_rate"] == "0"


async def test_tax_rate_range_is_unchanged(client: httpx.AsyncClient, admin_key: str) -> None:
    """[0, 1) with at most 6 places, as before."""
    for rate in ("-0.000001", "1", "1.0", "0.0000001", "NaN", "-Infinity"):
        [error] = await refused(client, admin_key, {"name": "Acme", "tax_rate": rate})
        assert error["loc"] == ["body", "tax_rate"], (rate, error)
    account = await create_account(client, admin_key, tax_rate="0.999999")
    assert account["tax_rate"] == "0.999999"


@pytest.mark.parametrize("rate", ["0.07", "0"])
async def test_an_exemption_sent_with_a_rate_is_refused(
    client: httpx.AsyncClient, admin_key: str, rate: str
) -> None:
    [error] = await refused(
        client, admin_key, {"name": "Acme", "tax_exempt": True, "tax_rate": rate}
    )
    assert "tax_exempt" in error["msg"] and "tax_rate" in error["msg"], error


async def test_an_exemption_without_a_rate_is_accepted(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    exempt = await create_account(client, admin_key, tax_exempt=True, tax_rate=None)
    assert (exempt["tax_exempt"], exempt["tax_rate"]) == (True, None)
    taxed = await create_account(client, admin_key, tax_exempt=False, tax_rate="0.07")
    assert (taxed["tax_exempt"], taxed["tax_rate"]) == (False, "0.07")
