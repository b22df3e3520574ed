"""The /quota API on SQLite and PostgreSQL (in-process counters), and on Redis."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.kit.periods import Period
from aihub_billing.models import Job
from aihub_billing.quota.service import UsageTotals
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth, create_account, issue_key
from tests.invoices.helpers import metered_plan
from tests.quota.conftest import lose_counters
from tests.subscriptions.helpers import add_plan, subscribe

QUOTA = f"{API}/quota"


async def owner(client: httpx.AsyncClient, admin_key: str) -> tuple[str, str]:
    account = await create_account(client, admin_key)
    return account["id"], await issue_key(client, admin_key, account["id"])


async def override(client: httpx.AsyncClient, admin_key: str, **body: Any) -> dict[str, Any]:
    response = await client.put(f"{QUOTA}/overrides", json=body, headers=auth(admin_key))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def check(client: httpx.AsyncClient, key: str, **body: Any) -> httpx.Response:
    return await client.post(
        f"{QUOTA}/check", json={"model": "gpt-4o-mini", **body}, headers=auth(key)
    )


async def test_check_reserves_and_status_reports_the_seed_fields(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    _, key = await owner(client, admin_key)
    response = await check(client, key, estimated_tokens=500)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reservation_id"].startswith("rsv_")
    assert (body["remaining_calls"], body["remaining_tokens"], body["overage"]) == (99, 9500, False)
    # The free plan's periods are anchored at the account's creation (the frozen clock).
    assert body["reset_at"] == "2026-02-28T12:00:00Z"
    status = (await client.get(QUOTA, headers=auth(key))).json()
    assert status["plan_type"] == "free"
    assert (status["remaining_calls"], status["remaining_tokens"]) == (99, 9500)
    assert status["reset_at"] == "2026-02-28T12:00:00Z"
    assert status["rate_limits"]["concurrency"]["in_flight"] == 1
    assert status["rate_limits"]["tpm"]["used"] == 500

    commit = await client.post(
        f"{QUOTA}/reservations/{body['reservation_id']}/commit",
        json={"actual_tokens": 320},
        headers=auth(key),
    )
    assert commit.status_code == 200, commit.text
    assert commit.json()["difference"] == -180
    status = (await client.get(QUOTA, headers=auth(key))).json()
    assert (status["used_calls"], status["used_tokens"]) == (1, 320)
    assert status["rate_limits"]["concurrency"]["in_flight"] == 0
    again = await client.post(
        f"{QUOTA}/reservations/{body['reservation_id']}/commit",
        json={"actual_tokens": 320},
        headers=auth(key),
    )
    assert again.status_code == 404
    assert again.json()["code"] == "reservation_not_found"


async def test_release_returns_the_call(client: httpx.AsyncClient, admin_key: str) -> None:
    _, key = await owner(client, admin_key)
    rid = (await check(client, key, estimated_tokens=100)).json()["reservation_id"]
    released = await client.post(f"{QUOTA}/reservations/{rid}/release", headers=auth(key))
    assert released.status_code == 200, released.text
    assert released.json()["reserved_tokens"] == 100
    status = (await client.get(QUOTA, headers=auth(key))).json()
    assert (status["used_calls"], status["used_tokens"]) == (0, 0)


async def test_blocking_monthly_limit_is_402_and_recorded(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account_id, key = await owner(client, admin_key)
    await override(client, admin_key, account_id=account_id, included_api_calls=2)
    for _ in range(2):
        assert (await check(client, key)).status_code == 200
    refused = await check(client, key)
    assert refused.status_code == 402
    problem = refused.json()
    assert problem["code"] == "quota_exceeded"
    assert (problem["limit"], problem["limit_value"], problem["attempted"]) == ("calls", 2, 3)
    status = (await client.get(QUOTA, headers=auth(key))).json()
    assert problem["reset_at"] == status["reset_at"] and problem["reset_at"].endswith("Z")
    assert await billing.flush_quota_events() >= 1
    page = (await client.get(f"{QUOTA}/violations", headers=auth(key))).json()
    assert [(v["limit_name"], v["action"], v["attempted"]) for v in page["items"]] == [
        ("calls", "blocked", 3)
    ]
    assert page["items"][0]["api_key_id"] is not None


async def test_billing_policy_admits_with_overage(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account_id, key = await owner(client, admin_key)
    # `bill` needs an overage price on the account's price (a free account has none).
    await add_plan(client, admin_key, **metered_plan("metered", 1000))
    await subscribe(client, key, plan_type="metered")
    await override(
        client, admin_key, account_id=account_id, included_api_calls=1, calls_policy="bill"
    )
    assert (await check(client, key)).json()["overage"] is False
    second = await check(client, key)
    assert second.status_code == 200
    assert second.json()["calls_overage"] is True
    assert second.json()["remaining_calls"] == 0
    await billing.flush_quota_events()
    page = (await client.get(f"{QUOTA}/violations", headers=auth(admin_key))).json()
    assert [(v["limit_name"], v["action"]) for v in page["items"]] == [("calls", "billed")]


async def test_an_override_cannot_bill_a_limit_its_price_has_no_overage_price_for(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    """Usage past a `bill` limit is admitted and invoiced at the account's overage price:
    without one it would be admitted and billed by no invoice."""
    free_id, _ = await owner(client, admin_key)  # no subscription: nothing is invoiced
    pro_id, pro_key = await owner(client, admin_key)
    await subscribe(client, pro_key)  # the seeded pro price has no overage prices
    for account_id, body in (
        (free_id, {"calls_policy": "bill"}),
        (pro_id, {"tokens_policy": "bill"}),
        (pro_id, {"included_api_calls": 5, "calls_policy": "bill"}),
    ):
        refused = await client.put(
            f"{QUOTA}/overrides", json={"account_id": account_id, **body}, headers=auth(admin_key)
        )
        assert refused.status_code == 422, (body, refused.text)
        assert refused.json()["code"] == "validation_error"
    got = await client.get(
        f"{QUOTA}/overrides", params={"account_id": pro_id}, headers=auth(admin_key)
    )
    assert got.json() is None
    # `block` needs no overage price.
    await override(client, admin_key, account_id=pro_id, included_api_calls=5, calls_policy="block")


async def test_rate_limit_is_429_with_ratelimit_headers(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    account_id, key = await owner(client, admin_key)
    await override(client, admin_key, account_id=account_id, rpm_limit=1)
    assert (await check(client, key)).status_code == 200
    refused = await check(client, key)
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    # The test clock stands at 12:00:00: the window ends in 60 seconds.
    assert refused.headers["Retry-After"] == "60"
    assert refused.headers["RateLimit-Limit"] == "1"
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert refused.headers["RateLimit-Reset"] == "60"


async def test_an_estimate_above_the_tpm_limit_is_422_not_a_429_to_retry(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    account_id, key = await owner(client, admin_key)
    await override(client, admin_key, account_id=account_id, tpm_limit=100)
    never = await check(client, key, estimated_tokens=101)
    assert never.status_code == 422, never.text
    assert never.json()["code"] == "estimate_above_rate_limit"
    assert "Retry-After" not in never.headers
    # One that a later minute would admit is still a 429.
    assert (await check(client, key, estimated_tokens=60)).status_code == 200
    later = await check(client, key, estimated_tokens=60)
    assert (later.status_code, later.json()["code"]) == (429, "rate_limited")


async def test_model_outside_the_plan_is_403(client: httpx.AsyncClient, admin_key: str) -> None:
    account_id, key = await owner(client, admin_key)
    await override(client, admin_key, account_id=account_id, allowed_models=["gpt-4o-mini"])
    assert (await check(client, key)).status_code == 200
    refused = await check(client, key, model="o1")
    assert refused.status_code == 403
    assert refused.json()["code"] == "model_not_allowed"


async def test_member_cap_inside_the_account(client: httpx.AsyncClient, admin_key: str) -> None:
    account_id, key = await owner(client, admin_key)
    await override(
        client,
        admin_key,
        account_id=account_id,
        member_calls_limit=1,
        member_caps={"mem_vip": {"calls": 3}},
    )
    assert (await check(client, key, member_id="mem_a")).status_code == 200
    refused = await check(client, key, user_id="mem_a")
    assert (refused.status_code, refused.json()["limit"]) == (402, "member_calls")
    for _ in range(3):
        assert (await check(client, key, member_id="mem_vip")).status_code == 200
    assert (await check(client, key, member_id="mem_vip")).status_code == 402


async def test_overrides_are_for_the_operator(client: httpx.AsyncClient, admin_key: str) -> None:
    account_id, key = await owner(client, admin_key)
    denied = await client.put(
        f"{QUOTA}/overrides", json={"account_id": account_id, "rpm_limit": 5}, headers=auth(key)
    )
    assert denied.status_code == 403
    assert (await client.get(f"{QUOTA}/overrides", headers=auth(key))).json() is None
    set_ = await override(client, admin_key, account_id=account_id, plan_code="pro", rpm_limit=5)
    assert set_["rpm_limit"] == 5
    status = (await client.get(QUOTA, headers=auth(key))).json()
    assert (status["plan_type"], status["limit_calls"]) == ("pro", 10_000)
    assert status["rate_limits"]["rpm"]["limit"] == 5
    unknown = await client.put(
        f"{QUOTA}/overrides",
        json={"account_id": account_id, "plan_code": "nope"},
        headers=auth(admin_key),
    )
    assert unknown.status_code == 404
    invalid = await client.put(
        f"{QUOTA}/overrides",
        json={"account_id": account_id, "rpm_limit": 0},
        headers=auth(admin_key),
    )
    assert invalid.status_code == 422


async def test_accounts_only_see_their_own_quota(client: httpx.AsyncClient, admin_key: str) -> None:
    _, key = await owner(client, admin_key)
    other_id, _ = await owner(client, admin_key)
    assert (await check(client, key, account_id=other_id)).status_code == 404
    assert (
        await client.get(QUOTA, params={"account_id": other_id}, headers=auth(key))
    ).status_code == 404
    # Operator keys name the account.
    assert (await check(client, admin_key)).status_code == 400
    admitted = await check(client, admin_key, account_id=other_id)
    assert admitted.status_code == 200 and admitted.json()["account_id"] == other_id
    # A reservation of another account is not found.
    rid = admitted.json()["reservation_id"]
    stolen = await client.post(f"{QUOTA}/reservations/{rid}/release", headers=auth(key))
    assert stolen.status_code == 404


async def test_revoked_key_is_refused_at_once_despite_the_cache(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    account_id, key = await owner(client, admin_key)
    member_key = await issue_key(client, key, account_id, role="member")
    assert (await check(client, member_key)).status_code == 200  # now cached
    keys = (await client.get(f"{API}/accounts/{account_id}/api-keys", headers=auth(key))).json()
    member = next(k for k in keys if k["role"] == "member")
    revoked = await client.delete(
        f"{API}/accounts/{account_id}/api-keys/{member['id']}", headers=auth(key)
    )
    assert revoked.status_code == 200
    assert (await check(client, member_key)).status_code == 401


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        return


@pytest.fixture
def webhook_receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    received: list[tuple[dict[str, str], bytes]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def config_overrides() -> dict[str, object]:
    """The receivers listen on 127.0.0.1, which webhook targets may not be by default."""
    return {"notifications_allow_private_targets": True}


async def test_thresholds_notify_once_with_a_signed_webhook(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    webhook_receiver: tuple[str, list[tuple[dict[str, str], bytes]]],
) -> None:
    url, received = webhook_receiver
    account_id, key = await owner(client, admin_key)
    await override(client, admin_key, account_id=account_id, included_api_calls=5)
    target = await client.put(
        f"{QUOTA}/notifications",
        json={"webhook_url": url, "email": "ops@acme.test"},
        headers=auth(key),
    )
    assert target.status_code == 200, target.text
    secret = target.json()["webhook_secret"]
    assert secret.startswith("whsec_")
    shown = (await client.get(f"{QUOTA}/notifications", headers=auth(key))).json()
    assert shown["has_webhook_secret"] and "webhook_secret" not in shown

    for _ in range(5):  # 4 of 5 = 80%, 5 of 5 = 100%
        assert (await check(client, key)).status_code == 200
    assert (await check(client, key)).status_code == 402
    await billing.flush_quota_events()
    # A rebuild that crosses 80% again enqueues nothing new: one job per threshold and period.
    await lose_counters(billing)
    billing.quota.usage_source = _FixedUsage(calls=3)
    assert (await check(client, key)).status_code == 200
    assert await billing.flush_quota_events() == 1
    async with billing.db.sessions() as session:
        jobs = list(
            (await session.execute(select(Job).where(Job.name == "quota.notify"))).scalars()
        )
    assert sorted(j.payload["threshold"] for j in jobs) == [80, 100]

    # Each quota.notify job hands its event to a webhook job and an email job.
    assert await billing.worker().drain() == 6
    assert len(received) == 2
    for headers, body in received:
        stamp, signature = (part.split("=", 1)[1] for part in headers["AIHub-Signature"].split(","))
        expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
        assert hmac.compare_digest(signature, expected.hexdigest())
        event = json.loads(body)
        assert event["type"] == "quota.threshold_reached"
        assert event["data"]["account_id"] == account_id


async def test_a_threshold_is_not_notified_again_after_its_job_was_pruned(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    clock: FrozenClock,
    webhook_receiver: tuple[str, list[tuple[dict[str, str], bytes]]],
) -> None:
    """Once per (account, limit, threshold, period) holds after the hourly `jobs.prune` has
    deleted the week-old succeeded job that carried the dedupe key."""
    url, received = webhook_receiver
    account_id, key = await owner(client, admin_key)
    await override(client, admin_key, account_id=account_id, included_api_calls=5)
    target = await client.put(
        f"{QUOTA}/notifications", json={"webhook_url": url}, headers=auth(key)
    )
    assert target.status_code == 200, target.text
    for _ in range(4):  # 4 of 5: 80%
        assert (await check(client, key)).status_code == 200
    await billing.flush_quota_events()
    worker = billing.worker()
    assert await worker.drain() == 2  # quota.notify, then its webhook job
    assert len(received) == 1

    clock.advance(days=8)  # the same period (anchored at the account's creation)
    await worker.tick()  # the hourly jobs.prune deletes both succeeded jobs
    await worker.drain()
    async with billing.db.sessions() as session:
        names = (await session.execute(select(Job.name))).scalars()
        assert not {"quota.notify", "notifications.webhook"} & set(names)
    # The same limits set again report the thresholds the usage is past: 80% was reported.
    await override(client, admin_key, account_id=account_id, included_api_calls=5)
    await billing.flush_quota_events()
    await worker.drain()
    assert len(received) == 1


class _FixedUsage:
    def __init__(self, calls: int, tokens: int = 0) -> None:
        self.totals = UsageTotals(calls=calls, tokens=tokens)

    async def used(self, account_id: str, period: Period) -> UsageTotals:
        return self.totals


async def test_lost_counters_are_rebuilt_from_the_usage_source(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    _, key = await owner(client, admin_key)
    assert (await check(client, key)).json()["remaining_calls"] == 99
    await lose_counters(billing)
    billing.quota.usage_source = _FixedUsage(40, 4000)
    body = (await check(client, key, estimated_tokens=10)).json()
    assert (body["remaining_calls"], body["remaining_tokens"]) == (59, 5990)


async def test_new_limits_apply_at_once_in_this_process(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    account_id, key = await owner(client, admin_key)
    assert (await check(client, key)).status_code == 200  # the free plan's limits, cached
    await override(client, admin_key, account_id=account_id, included_api_calls=1)
    assert (await check(client, key)).status_code == 402


async def test_lean_check_path_keeps_the_api_contract(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    _, key = await owner(client, admin_key)
    invalid = await check(client, key, estimated_tokens=-1)
    assert invalid.status_code == 422
    assert invalid.headers["content-type"] == "application/problem+json"
    assert invalid.json()["errors"][0]["loc"] == ["body", "estimated_tokens"]
    unknown = await check(client, key, surprise=1)
    assert unknown.status_code == 422
    anonymous = await client.post(f"{QUOTA}/check", json={"model": "m"})
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"
    # With an Idempotency-Key the regular path stores and replays the first answer.
    headers = auth(key, **{"Idempotency-Key": "chk-1"})
    one = await client.post(f"{QUOTA}/check", json={"model": "m"}, headers=headers)
    two = await client.post(f"{QUOTA}/check", json={"model": "m"}, headers=headers)
    assert one.status_code == two.status_code == 200
    assert one.json()["reservation_id"] == two.json()["reservation_id"]
    assert two.headers["Idempotent-Replayed"] == "true"
    status = (await client.get(QUOTA, headers=auth(key))).json()
    assert status["used_calls"] == 1


async def test_an_empty_threshold_list_turns_notifications_off(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    """`thresholds: []` is the operator's "no notifications", not "the defaults" (null is)."""
    account_id, key = await owner(client, admin_key)
    set_ = await override(
        client, admin_key, account_id=account_id, included_api_calls=5, thresholds=[]
    )
    assert set_["thresholds"] == []
    for _ in range(5):  # 80% and 100% of the calls, which the defaults would report
        assert (await check(client, key)).status_code == 200
    await billing.flush_quota_events()
    async with billing.db.sessions() as session:
        jobs = list(
            (await session.execute(select(Job).where(Job.name == "quota.notify"))).scalars()
        )
    assert jobs == []


async def test_a_member_cap_naming_one_limit_keeps_the_other_from_the_account(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    """A per-member cap that raises only the calls keeps the account-wide member token cap
    (a null field of a cap takes the next level's value, as in the override itself)."""
    account_id, key = await owner(client, admin_key)
    await override(
        client,
        admin_key,
        account_id=account_id,
        member_calls_limit=1,
        member_tokens_limit=100,
        member_caps={"mem_vip": {"calls": 3}, "mem_ops": {"tokens": 500}},
    )
    refused = await check(client, key, member_id="mem_vip", estimated_tokens=101)
    assert (refused.status_code, refused.json()["limit"]) == (402, "member_tokens")
    for _ in range(3):
        assert (
            await check(client, key, member_id="mem_vip", estimated_tokens=10)
        ).status_code == 200
    assert (await check(client, key, member_id="mem_ops", estimated_tokens=400)).status_code == 200
    refused = await check(client, key, member_id="mem_ops")
    assert (refused.status_code, refused.json()["limit"]) == (402, "member_calls")


async def test_an_override_that_lowers_a_limit_below_the_usage_notifies_what_it_passed(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    """No check crosses a threshold that a lowered limit puts below the usage already made:
    the change itself reports what the usage is past, once per threshold and period."""
    account_id, key = await owner(client, admin_key)
    await override(client, admin_key, account_id=account_id, included_api_calls=10)
    for _ in range(5):  # 50%: nothing to report
        assert (await check(client, key)).status_code == 200
    await override(client, admin_key, account_id=account_id, included_api_calls=6)  # 83%
    assert (await check(client, key)).status_code == 200  # 6 of 6: crosses 100% itself
    await override(client, admin_key, account_id=account_id, included_api_calls=5)  # again
    await billing.flush_quota_events()
    async with billing.db.sessions() as session:
        jobs = (await session.execute(select(Job).where(Job.name == "quota.notify"))).scalars()
        reported = sorted((j.payload["threshold"], j.payload["limit_value"]) for j in jobs)
    assert reported == [(80, 6), (100, 6)]


async def test_a_member_key_cannot_escape_its_cap_by_naming_another_member(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    account = await create_account(client, admin_key)
    owner = await issue_key(client, admin_key, account["id"], "owner")
    member = await client.post(
        f"{API}/accounts/{account['id']}/members", json={"email": "m@a.test"}, headers=auth(owner)
    )
    assert member.status_code == 201, member.text
    member_id = member.json()["id"]
    member_key = await issue_key(client, owner, account["id"], "member", member_id=member_id)
    capped = await client.put(
        f"{API}/quota/overrides",
        json={"account_id": account["id"], "member_calls_limit": 1},
        headers=auth(admin_key),
    )
    assert capped.status_code == 200, capped.text

    async def check(**body: object) -> httpx.Response:
        return await client.post(
            f"{API}/quota/check", json={"model": "gpt-4o", **body}, headers=auth(member_key)
        )

    assert (await check()).status_code == 200
    refused = await check()
    assert (refused.status_code, refused.json().get("limit")) == (402, "member_calls")
    # The same member key naming someone else, or an end user: still this member's cap
    # (any id would otherwise be a fresh cap, or spend a colleague's).
    for other in ({"member_id": "mem_someone_else"}, {"user_id": "end-user-1"}):
        escaped = await check(**other)
        assert (escaped.status_code, escaped.json().get("limit")) == (402, "member_calls")
