"""Input the generated fuzzing rarely reaches: times at the ends of the calendar, NUL
characters, integers sent as other JSON types, a body without a key. Each gets a problem+json
4xx, never a 500 (and on PostgreSQL never a 503 that blames the database)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from aihub_billing.service import BillingService
from tests.api.helpers import API, auth, create_account, issue_key

TRACK = f"{API}/usage/track"
BATCH = f"{API}/usage/batch"
EVENT = {"model": "gpt-4o-mini", "input_tokens": 10, "output_tokens": 5}
# 0001-01-01 at +01:00 is in year 0 in UTC: Python cannot hold it (OverflowError).
BEFORE_YEAR_ONE = "0001-01-01T00:00:00+01:00"


@pytest.fixture
async def owner(client: httpx.AsyncClient, admin_key: str) -> dict[str, Any]:
    account = await create_account(client, admin_key)
    return {"account": account, "key": await issue_key(client, admin_key, account["id"])}


def refused(response: httpx.Response, status: int = 422) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    code: str = response.json()["code"]
    return code


async def test_times_no_utc_datetime_holds_are_422(
    client: httpx.AsyncClient, owner: dict[str, Any], admin_key: str
) -> None:
    key = owner["key"]
    track = await client.post(
        TRACK, json={**EVENT, "timestamp": BEFORE_YEAR_ONE}, headers=auth(key)
    )
    assert refused(track) == "validation_error"
    for path, body in [
        ("/model-prices", {"model": "m-x", "currency": "USD", "input_per_1m": "1",
                           "output_per_1m": "1", "effective_from": "9999-12-31T23:00:00-05:00"}),
        ("/coupons", {"code": "EDGE", "percent_off": "10", "expires_at": BEFORE_YEAR_ONE}),
        ("/test-clocks", {"frozen_time": BEFORE_YEAR_ONE}),
        ("/test-clocks", {"frozen_time": "1969-12-31T23:59:59Z"}),  # ids start at the epoch
        ("/test-clocks", {"frozen_time": "9999-12-20T00:00:00Z"}),  # periods would pass 9999
    ]:  # fmt: skip
        response = await client.post(f"{API}{path}", json=body, headers=auth(admin_key))
        assert refused(response) == "validation_error", (path, body)
    for value in (BEFORE_YEAR_ONE, "2026-01-01T00:00:00"):  # no UTC time; no offset
        listing = await client.get(
            f"{API}/invoices", params={"period_from": value}, headers=auth(key)
        )
        assert refused(listing) == "validation_error", value


async def test_a_batch_rejects_an_unrepresentable_time_in_its_event_only(
    client: httpx.AsyncClient, owner: dict[str, Any]
) -> None:
    events = [{**EVENT, "timestamp": BEFORE_YEAR_ONE}, EVENT]
    response = await client.post(BATCH, json={"events": events}, headers=auth(owner["key"]))
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["rejected", "accepted"]
    assert results[0]["errors"][0]["loc"] == ["timestamp"]


async def test_stats_at_the_end_of_the_calendar_answer(
    client: httpx.AsyncClient, owner: dict[str, Any]
) -> None:
    response = await client.get(
        f"{API}/usage/stats",
        params={"from": "9999-12-30", "to": "9999-12-31"},
        headers=auth(owner["key"]),
    )
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == []


async def test_nul_characters_reject_the_event_that_holds_one(
    client: httpx.AsyncClient, owner: dict[str, Any], billing: BillingService
) -> None:
    key = owner["key"]
    track = await client.post(TRACK, json={**EVENT, "user_id": "u\x00"}, headers=auth(key))
    assert refused(track) == "validation_error"
    assert track.json()["errors"][0]["loc"] == ["body", "user_id"]
    events = [
        {**EVENT, "cost_center": "c\x00"},
        {**EVENT, "metadata": {"k": ["v\x00"]}},
        {**EVENT, "metadata": {"k\x00": 1}},
        {**EVENT, "user_id": "fine"},
    ]
    batch = await client.post(BATCH, json={"events": events}, headers=auth(key))
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert [r["status"] for r in results] == ["rejected", "rejected", "rejected", "accepted"]
    assert [r["errors"][0]["loc"] for r in results[:3]] == [
        ["cost_center"], ["metadata"], ["metadata"]
    ]  # fmt: skip


async def test_text_postgresql_cannot_store_is_a_422_not_an_outage(
    client: httpx.AsyncClient, admin_key: str, database_url: str
) -> None:
    response = await client.post(
        f"{API}/accounts", json={"name": "nul\x00byte"}, headers=auth(admin_key)
    )
    if database_url.startswith("sqlite"):
        assert response.status_code == 201  # SQLite stores the character
        return
    assert refused(response) == "validation_error"
    assert "retry-after" not in response.headers
    lookup = await client.get(f"{API}/plans/pro%00x", headers=auth(admin_key))
    assert refused(lookup) == "validation_error"


async def test_integers_are_json_integers(
    client: httpx.AsyncClient, owner: dict[str, Any], admin_key: str
) -> None:
    account_id = owner["account"]["id"]
    for value in (True, "1", 1.0):
        adjustment = await client.post(
            f"{API}/accounts/{account_id}/balance-adjustments",
            json={"amount_minor": value, "currency": "USD", "description": "x"},
            headers=auth(admin_key),
        )
        assert refused(adjustment) == "validation_error", value
        check = await client.post(
            f"{API}/quota/check",
            json={"model": "gpt-4o-mini", "estimated_tokens": value},
            headers=auth(owner["key"]),
        )
        assert refused(check) == "validation_error", value
        coupon = await client.post(
            f"{API}/coupons",
            json={"code": "INT", "amounts_off": {"USD": value}},
            headers=auth(admin_key),
        )
        assert refused(coupon) == "validation_error", value
    batch = await client.post(
        BATCH, json={"events": [{**EVENT, "input_tokens": True}]}, headers=auth(owner["key"])
    )
    assert batch.json()["results"][0]["status"] == "rejected"


async def test_the_per_call_routes_ask_for_the_key_before_the_body(
    client: httpx.AsyncClient,
) -> None:
    for path in (TRACK, f"{API}/quota/check"):
        response = await client.post(path, json={"model": 5})
        assert refused(response, 401) == "unauthenticated", path


async def test_a_repeated_event_id_answers_200_as_documented(
    client: httpx.AsyncClient, owner: dict[str, Any]
) -> None:
    body = {**EVENT, "event_id": "same-1"}
    first = await client.post(TRACK, json=body, headers=auth(owner["key"]))
    again = await client.post(TRACK, json=body, headers=auth(owner["key"]))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["status"] == "duplicate"
    document = (await client.get("/openapi.json")).json()
    assert {"200", "201"} <= set(document["paths"][TRACK]["post"]["responses"])


async def test_decimals_sent_as_json_numbers_keep_every_digit(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    # A float holds about 15 digits: parsed through one, this price came back 1234567.123456789.
    body = (
        b'{"model": "m-exact", "currency": "USD", "input_per_1m": 1234567.123456789012,'
        b' "output_per_1m": 9876543210123.456789012345}'
    )
    headers = auth(admin_key, **{"Content-Type": "application/json"})
    created = await client.post(f"{API}/model-prices", content=body, headers=headers)
    assert created.status_code == 201, created.text
    assert (created.json()["input_per_1m"], created.json()["output_per_1m"]) == (
        "1234567.123456789012",
        "9876543210123.456789012345",
    )
    huge = body.replace(b"1234567.123456789012", b"1e999999").replace(b"m-exact", b"m-huge")
    assert refused(await client.post(f"{API}/model-prices", content=huge, headers=headers))


async def test_the_largest_model_price_accepted_costs_the_largest_event(
    client: httpx.AsyncClient, owner: dict[str, Any], admin_key: str
) -> None:
    # A price of 26 integer digits was accepted, and then every event of its model failed
    # (500 on SQLite, the whole batch 422 on PostgreSQL): the cost column holds 20.
    prices = f"{API}/model-prices"
    base = {"currency": "USD", "output_per_1m": "9" * 13 + "." + "9" * 12}
    too_big = await client.post(
        prices,
        json={**base, "model": "m-big", "input_per_1m": "1" + "0" * 13},
        headers=auth(admin_key),
    )
    assert refused(too_big) == "validation_error"
    largest = {**base, "model": "m-big", "input_per_1m": base["output_per_1m"]}
    assert (await client.post(prices, json=largest, headers=auth(admin_key))).status_code == 201
    most = {"model": "m-big", "input_tokens": 10**12, "output_tokens": 10**12}
    tracked = await client.post(TRACK, json=most, headers=auth(owner["key"]))
    assert tracked.status_code in (200, 201), tracked.text
    assert Decimal(tracked.json()["cost"]) == Decimal(base["output_per_1m"]) * 2 * 10**6
