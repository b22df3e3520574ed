"""GET/POST /plans on both databases."""

from __future__ import annotations

import httpx

from aihub_billing.service import BillingService

PLANS = "/api/v1/billing/plans"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_seeded_plans_match_the_spec(client: httpx.AsyncClient, admin_key: str) -> None:
    response = await client.get(PLANS, headers=auth(admin_key))
    assert response.status_code == 200
    plans = {p["code"]: p for p in response.json()}
    assert sorted(plans) == ["enterprise", "free", "pro"]
    expected = {
        "free": ("0.00", 100, 10_000),
        "pro": ("29.99", 10_000, 1_000_000),
        "enterprise": ("99.99", 1_000_000, 100_000_000),
    }
    for code, (amount, calls, tokens) in expected.items():
        plan = plans[code]
        [price] = plan["prices"]
        assert (price["amount"], price["currency"], price["billing_cycle"]) == (
            amount,
            "USD",
            "monthly",
        )
        assert plan["limits"]["included_api_calls"] == calls
        assert plan["limits"]["included_tokens"] == tokens
        assert plan["version"] == 1


async def test_seeding_twice_creates_nothing(billing: BillingService, admin_key: str) -> None:
    again = await billing.bootstrap()
    assert again.plans_created == []
    assert again.admin_secret is None


async def test_get_plan_by_code_and_unknown(client: httpx.AsyncClient, admin_key: str) -> None:
    ok = await client.get(f"{PLANS}/pro", headers=auth(admin_key))
    assert ok.status_code == 200 and ok.json()["code"] == "pro"
    missing = await client.get(f"{PLANS}/nope", headers=auth(admin_key))
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["code"] == "plan_not_found"


async def test_admin_creates_a_plan_with_decimal_overage(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    body = {
        "code": "team",
        "name": "Team",
        "trial_days": 14,
        "limits": {
            "included_api_calls": 50_000,
            "included_tokens": 5_000_000,
            "rpm_limit": 600,
            "allowed_models": ["gpt-4o-mini"],
            "tokens_policy": "bill",
        },
        "prices": [
            {
                "currency": "usd",
                "amount_minor": 4900,
                "overage_per_1m_tokens": "0.0000015",
            },
            {"currency": "JPY", "interval_count": 12, "amount_minor": 70000},
            {"currency": "KWD", "amount_minor": 15250},
        ],
    }
    created = await client.post(PLANS, json=body, headers=auth(admin_key))
    assert created.status_code == 201, created.text
    plan = created.json()
    prices = {p["currency"]: p for p in plan["prices"]}
    assert prices["USD"]["amount"] == "49.00"
    assert prices["USD"]["overage_per_1m_tokens"] == "0.0000015"
    assert (prices["JPY"]["amount"], prices["JPY"]["billing_cycle"]) == ("70000", "yearly")
    assert prices["KWD"]["amount"] == "15.250"
    assert plan["limits"]["tokens_policy"] == "bill"
    fetched = await client.get(f"{PLANS}/team", headers=auth(admin_key))
    assert fetched.json() == plan

    again = await client.post(PLANS, json=body, headers=auth(admin_key))
    assert again.status_code == 409 and again.json()["code"] == "plan_exists"


async def test_invalid_plans_are_422_and_write_nothing(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    bad_bodies = [
        {"code": "x", "name": "X", "prices": []},
        {"code": "Bad Code", "name": "X", "prices": [{"currency": "USD", "amount_minor": 1}]},
        {"code": "x", "name": "X", "prices": [{"currency": "ZZZ", "amount_minor": 1}]},
        {"code": "x", "name": "X", "prices": [{"currency": "USD", "amount_minor": -1}]},
        {"code": "x", "name": "X", "prices": [{"currency": "USD", "amount_minor": 1.5}]},
        {
            "code": "x",
            "name": "X",
            "prices": [
                {"currency": "USD", "amount_minor": 1},
                {"currency": "USD", "amount_minor": 2},
            ],
        },
        {"code": "x", "name": "X", "prices": [{"currency": "USD", "amount_minor": 1}], "extra": 1},
    ]
    for body in bad_bodies:
        response = await client.post(PLANS, json=body, headers=auth(admin_key))
        assert response.status_code == 422, body
        problem = response.json()
        assert problem["code"] == "validation_error"
        assert problem["type"] == "urn:aihub-billing:problem:validation_error"
        assert problem["request_id"] == response.headers["x-request-id"]
    listed = await client.get(PLANS, headers=auth(admin_key))
    assert [p["code"] for p in listed.json()] == ["enterprise", "free", "pro"]


async def test_malformed_json_is_a_problem_not_a_500(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    response = await client.post(
        PLANS,
        content=b"{not json",
        headers={**auth(admin_key), "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
