"""GET/POST /plans on both databases."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.plans.schemas import PlanUpdate
from aihub_billing.plans.service import plans
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
            # `bill` needs the overage price in every currency and cycle.
            {
                "currency": "JPY",
                "interval_count": 12,
                "amount_minor": 70000,
                "overage_per_1m_tokens": "1",
            },
            {"currency": "KWD", "amount_minor": 15250, "overage_per_1m_tokens": "0.001"},
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


async def test_patching_some_limits_keeps_the_others(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    """Omitted fields are kept: setting a rate limit must not make the plan's monthly
    allowances unlimited (null) or reset its policies."""
    before = (await client.get(f"{PLANS}/pro", headers=auth(admin_key))).json()["limits"]
    patched = await client.patch(
        f"{PLANS}/pro", json={"limits": {"rpm_limit": 60}}, headers=auth(admin_key)
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["limits"] == {**before, "rpm_limit": 60}
    # An explicit null still lifts one limit, and only that one.
    lifted = await client.patch(
        f"{PLANS}/pro", json={"limits": {"included_tokens": None}}, headers=auth(admin_key)
    )
    assert lifted.json()["limits"] == {**before, "rpm_limit": 60, "included_tokens": None}
    assert lifted.json()["version"] == 3


@pytest.mark.parametrize("first", ["patch", "archive"])
async def test_an_archive_racing_a_patch_is_not_lost(
    billing: BillingService, admin_key: str, first: str
) -> None:
    """PATCH copies the plan's status into the new version: an archive committed meanwhile
    must end up on the version the catalog serves, whichever of the two came first."""
    if billing.db.engine.dialect.name == "sqlite":
        pytest.skip("SQLite runs one writer at a time: no race to lose")
    ctx = billing.context()

    async def patch(session: AsyncSession) -> None:
        await plans.update(session, ctx, "pro", PlanUpdate(name="Pro 2"))

    async def archive(session: AsyncSession) -> None:
        await plans.archive(session, ctx, "pro")

    early, late = (patch, archive) if first == "patch" else (archive, patch)
    async with billing.db.sessions() as one, billing.db.sessions() as two:
        await early(one)
        racing = asyncio.create_task(late(two))
        await asyncio.sleep(0.3)  # the late one reads (or waits) while the early one is open
        await one.commit()
        await racing
        await two.commit()
    async with billing.db.sessions() as session:
        latest = await plans.latest(session, "pro")
    assert (latest.version, latest.name, latest.status) == (2, "Pro 2", "archived")


async def test_a_change_of_the_free_plan_reaches_cached_quota_limits_at_once(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    from tests.api.helpers import API, auth, create_account

    account = await create_account(client, admin_key)  # no subscription: the free plan

    async def calls_limit() -> int:
        response = await client.get(
            f"{API}/quota", params={"account_id": account["id"]}, headers=auth(admin_key)
        )
        assert response.status_code == 200, response.text
        return int(response.json()["limit_calls"])

    assert await calls_limit() == 100  # read, and now cached
    patched = await client.patch(
        f"{API}/plans/free",
        json={"limits": {"included_api_calls": 50}},
        headers=auth(admin_key),
    )
    assert patched.status_code == 200, patched.text
    assert await calls_limit() == 50


def _bill_plan(code: str, price: dict[str, object], **limits: object) -> dict[str, object]:
    return {
        "code": code,
        "name": code.title(),
        "limits": {"included_api_calls": 10, "included_tokens": 1000, **limits},
        "prices": [{"currency": "USD", "amount_minor": 1000, **price}],
    }


@pytest.mark.parametrize(
    ("limits", "price", "missing"),
    [
        ({"tokens_policy": "bill"}, {"overage_per_1k_calls": "1"}, "overage_per_1m_tokens"),
        ({"calls_policy": "bill"}, {"overage_per_1m_tokens": "1"}, "overage_per_1k_calls"),
        (
            {"included_storage_gb": "5", "storage_policy": "bill"},
            {},
            "overage_per_gb_month",
        ),
    ],
)
async def test_a_bill_limit_without_its_overage_price_is_refused(
    client: httpx.AsyncClient,
    admin_key: str,
    limits: dict[str, object],
    price: dict[str, object],
    missing: str,
) -> None:
    """`bill` admits usage past the limit and invoices it at the overage price: without that
    price the usage would be admitted and billed by no invoice."""
    response = await client.post(
        PLANS, json=_bill_plan("leaky", price, **limits), headers=auth(admin_key)
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert missing in response.json()["detail"]
    assert (await client.get(f"{PLANS}/leaky", headers=auth(admin_key))).status_code == 404


async def test_a_bill_policy_on_an_unlimited_allowance_needs_no_overage_price(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    # No limit, nothing past it: `bill` changes nothing there.
    body = _bill_plan("open", {}, included_tokens=None, tokens_policy="bill")
    created = await client.post(PLANS, json=body, headers=auth(admin_key))
    assert created.status_code == 201, created.text


@pytest.mark.parametrize(
    "patch",
    [
        # Limits only: the current price has no overage price for tokens.
        {"limits": {"tokens_policy": "bill"}},
        # Prices only: drops the overage price the plan's `bill` limit needs.
        {"prices": [{"currency": "USD", "amount_minor": 1000, "overage_per_1k_calls": "1"}]},
    ],
)
async def test_a_patch_cannot_leave_a_bill_limit_without_its_overage_price(
    client: httpx.AsyncClient, admin_key: str, patch: dict[str, object]
) -> None:
    body = _bill_plan("metered", {"overage_per_1k_calls": "1"}, calls_policy="bill")
    if "prices" in patch:
        body = _bill_plan(
            "metered",
            {"overage_per_1k_calls": "1", "overage_per_1m_tokens": "2"},
            calls_policy="bill",
            tokens_policy="bill",
        )
    assert (await client.post(PLANS, json=body, headers=auth(admin_key))).status_code == 201
    patched = await client.patch(f"{PLANS}/metered", json=patch, headers=auth(admin_key))
    assert patched.status_code == 422, patched.text
    assert patched.json()["code"] == "validation_error"
    assert "overage_per_1m_tokens" in patched.json()["detail"]
    current = (await client.get(f"{PLANS}/metered", headers=auth(admin_key))).json()
    assert current["version"] == 1


@pytest.mark.parametrize("gb", ["0.0000001", "123456789012345"])
async def test_a_storage_allowance_beyond_the_column_is_422(
    client: httpx.AsyncClient, admin_key: str, gb: str
) -> None:
    """The column is NUMERIC(20, 6): a value it cannot hold is a validation error, not a 500
    from the database driver."""
    body = {
        "code": "stored",
        "name": "Stored",
        "limits": {"included_storage_gb": gb},
        "prices": [{"currency": "USD", "amount_minor": 1000}],
    }
    created = await client.post(PLANS, json=body, headers=auth(admin_key))
    assert created.status_code == 422, created.text
    assert created.json()["code"] == "validation_error"
    patched = await client.patch(
        f"{PLANS}/pro", json={"limits": {"included_storage_gb": gb}}, headers=auth(admin_key)
    )
    assert patched.status_code == 422, patched.text
