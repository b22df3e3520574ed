"""Counters moved by usage that was never stored, and late usage of an earlier period.

The counters move inside the recording transaction, before its commit: a transaction that
then does not commit leaves them counting events the database does not hold, and the
client's retry would count them again. Late usage stamped in an earlier period is stored
and billed there, never charged to the current period's allowance (with or without the
reservation its check made).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from aihub_billing.accounts.schemas import AccountCreate
from aihub_billing.idempotency.service import IdempotencyService
from aihub_billing.kit.clock import FrozenClock, monotonic
from aihub_billing.kit.db import Session
from aihub_billing.kit.periods import Period
from aihub_billing.quota import service as quota_service
from aihub_billing.quota.service import STALE_RETRY_SECONDS, UsageTotals
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.quota.conftest import lose_counters
from tests.quota.test_api import QUOTA, check, owner
from tests.quota.test_wiring import FREE_CALLS, FREE_TOKENS, call, remaining

LOST = OperationalError("COMMIT", {}, ConnectionResetError("connection reset by peer"))


@pytest.fixture
def fail_next_commit(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Arms the next session commit to fail as a lost connection does: before the database
    committed (nothing stored), or with `acknowledged_lost` after it did."""
    armed: list[bool] = []
    commit = Session.commit

    async def failing(self: Session) -> None:
        if not armed:
            return await commit(self)
        if armed.pop():
            await commit(self)
        raise LOST

    monkeypatch.setattr(Session, "commit", failing)

    def arm(*, acknowledged_lost: bool = False) -> None:
        armed.append(acknowledged_lost)

    return arm


async def send(client: httpx.AsyncClient, key: str, path: str, event_id: str) -> httpx.Response:
    """One call of 150 tokens by /usage/track (a group commit), /usage/batch, or /usage/track
    with an Idempotency-Key (a transaction of its own)."""
    if path == "batch":
        body: Any = {"events": [call(event_id=event_id)]}
        return await client.post(f"{API}/usage/batch", json=body, headers=auth(key))
    headers = auth(key, **({"Idempotency-Key": f"k-{event_id}"} if path == "keyed" else {}))
    return await client.post(f"{API}/usage/track", json=call(event_id=event_id), headers=headers)


@pytest.mark.parametrize("path", ["track", "batch", "keyed"])
async def test_a_commit_that_fails_after_counting_leaves_the_stored_usage_counted_once(
    client: httpx.AsyncClient,
    admin_key: str,
    fail_next_commit: Callable[..., None],
    path: str,
) -> None:
    _, key = await owner(client, admin_key)
    assert (await send(client, key, path, "kept")).status_code in (200, 201)
    fail_next_commit()
    failed = await send(client, key, path, "lost")
    assert failed.status_code == 503, failed.text
    # Only the stored call: the one of the failed commit is not (nor was it ever) usage.
    assert await remaining(client, key) == (FREE_CALLS - 1, FREE_TOKENS - 150, 0)
    # The client's retry of the same event counts it once.
    assert (await send(client, key, path, "lost")).status_code in (200, 201)
    assert await remaining(client, key) == (FREE_CALLS - 2, FREE_TOKENS - 300, 0)
    checked = (await check(client, key)).json()
    assert (checked["remaining_calls"], checked["remaining_tokens"]) == (
        FREE_CALLS - 3,
        FREE_TOKENS - 300,
    )


async def test_a_failure_after_counting_inside_the_unit_of_work_uncounts_it(
    client: httpx.AsyncClient, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the commit: the Idempotency-Key record's write fails once the call was counted."""
    _, key = await owner(client, admin_key)
    complete = IdempotencyService.complete
    calls = 0

    async def failing_once(self: IdempotencyService, *args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise LOST
        await complete(self, *args)

    monkeypatch.setattr(IdempotencyService, "complete", failing_once)
    assert (await send(client, key, "keyed", "e1")).status_code == 503
    assert await remaining(client, key) == (FREE_CALLS, FREE_TOKENS, 0)
    assert (await send(client, key, "keyed", "e1")).status_code == 201
    assert await remaining(client, key) == (FREE_CALLS - 1, FREE_TOKENS - 150, 0)


async def test_a_reserved_call_whose_commit_failed_is_settled_once_by_its_retry(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    fail_next_commit: Callable[..., None],
) -> None:
    _, key = await owner(client, admin_key)
    rid = (await check(client, key, estimated_tokens=1000)).json()["reservation_id"]
    fail_next_commit()
    event = call(event_id="r1", reservation_id=rid)
    failed = await client.post(f"{API}/usage/track", json=event, headers=auth(key))
    assert failed.status_code == 503, failed.text
    retried = await client.post(f"{API}/usage/track", json=event, headers=auth(key))
    assert retried.status_code == 201, retried.text
    # The check's call, with the real 150 tokens: as stored.
    assert await remaining(client, key) == (FREE_CALLS - 1, FREE_TOKENS - 150, 0)
    await lose_counters(billing)
    assert await remaining(client, key) == (FREE_CALLS - 1, FREE_TOKENS - 150, 0)


async def test_a_commit_whose_acknowledgement_was_lost_counts_its_usage_once(
    client: httpx.AsyncClient, admin_key: str, fail_next_commit: Callable[..., None]
) -> None:
    _, key = await owner(client, admin_key)
    fail_next_commit(acknowledged_lost=True)
    assert (await send(client, key, "batch", "e1")).status_code == 503
    again = await send(client, key, "batch", "e1")
    assert again.json()["results"][0]["status"] == "duplicate"
    assert await remaining(client, key) == (FREE_CALLS - 1, FREE_TOKENS - 150, 0)


async def test_a_stale_account_is_checked_on_its_counters_while_the_database_is_down(
    billing: BillingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rebuild of stale counters needs the database: out of reach, the checks go on with
    the counters as they are (no worse than before the failure), and rebuild once it is back."""
    await billing.bootstrap()
    account = await billing.create_account(AccountCreate(name="Acme"))
    quota, ctx, sessions = billing.quota, billing.context(), billing.db.sessions

    async def remaining_calls() -> int | None:
        result = await quota.check(sessions, ctx, account_id=account.id, model="gpt-4o-mini")
        return result.remaining_calls

    assert await remaining_calls() == FREE_CALLS - 1
    async with billing.transaction() as session:  # counted, never stored: stale
        await quota.record(session, ctx, account_id=account.id, calls=10, tokens=0)
    quota._stale.add(account.id)

    class Unreachable:
        async def used(self, account_id: str, period: Period) -> UsageTotals:
            raise LOST

    stored, quota.usage_source = quota.usage_source, Unreachable()
    assert await remaining_calls() == FREE_CALLS - 12
    quota.usage_source = stored  # back, but not tried again at once
    assert await remaining_calls() == FREE_CALLS - 13
    later = monotonic() + STALE_RETRY_SECONDS
    monkeypatch.setattr(quota_service, "monotonic", lambda: later)
    # Rebuilt: no stored usage, the three checks' live reservations, and this one.
    assert await remaining_calls() == FREE_CALLS - 4
    assert account.id not in quota._stale


async def _next_period(client: httpx.AsyncClient, key: str, clock: FrozenClock) -> datetime:
    """Moves the clock past the current period's end; returns that end."""
    status = (await client.get(QUOTA, headers=auth(key))).json()
    end = datetime.fromisoformat(status["reset_at"])
    clock.set(end + timedelta(minutes=1))
    return end


@pytest.mark.parametrize("path", ["track", "batch"])
async def test_late_usage_of_an_expired_reservation_is_not_counted_in_the_next_period(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, path: str
) -> None:
    _, key = await owner(client, admin_key)
    clock: FrozenClock = billing.clock  # type: ignore[assignment]
    rid = (await check(client, key, estimated_tokens=1000)).json()["reservation_id"]
    used_at = clock.now().isoformat()
    if path == "batch":  # a batch holding a duplicate recounts what it stored (_counted_of)
        assert (await send(client, key, "batch", "known")).status_code == 200
    await _next_period(client, key, clock)  # the reservation expired long ago
    assert await remaining(client, key) == (FREE_CALLS, FREE_TOKENS, 0)
    late = call(event_id="late", reservation_id=rid, timestamp=used_at)
    if path == "batch":
        events = [late, call(event_id="known")]
        response = await client.post(
            f"{API}/usage/batch", json={"events": events}, headers=auth(key)
        )
        statuses = [r["status"] for r in response.json()["results"]]
        assert statuses == ["accepted", "duplicate"]
    else:
        response = await client.post(f"{API}/usage/track", json=late, headers=auth(key))
        assert response.status_code == 201, response.text
    # Stored and billed in its own period; nothing of it in this one's allowance.
    assert await remaining(client, key) == (FREE_CALLS, FREE_TOKENS, 0)
    await lose_counters(billing)
    assert await remaining(client, key) == (FREE_CALLS, FREE_TOKENS, 0)


async def test_late_usage_settles_a_live_reservation_without_counting_it_now(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    """A reservation of the earlier period still live across the boundary: its slot is
    freed, the current counters stay untouched. One of this period for a call stamped in
    the earlier one is returned whole: the call is that period's usage."""
    _, key = await owner(client, admin_key)
    clock: FrozenClock = billing.clock  # type: ignore[assignment]
    status = (await client.get(QUOTA, headers=auth(key))).json()
    end = datetime.fromisoformat(status["reset_at"])
    clock.set(end - timedelta(seconds=30))
    before = (await check(client, key, estimated_tokens=1000)).json()["reservation_id"]
    used_at = clock.now().isoformat()
    clock.set(end + timedelta(seconds=10))
    after = (await check(client, key, estimated_tokens=1000)).json()["reservation_id"]
    assert await remaining(client, key) == (FREE_CALLS - 1, FREE_TOKENS - 1000, 2)
    for event_id, rid in (("before", before), ("after", after)):
        late = call(event_id=event_id, reservation_id=rid, timestamp=used_at)
        response = await client.post(f"{API}/usage/track", json=late, headers=auth(key))
        assert response.status_code == 201, response.text
    assert await remaining(client, key) == (FREE_CALLS, FREE_TOKENS, 0)
    await lose_counters(billing)
    assert await remaining(client, key) == (FREE_CALLS, FREE_TOKENS, 0)


@pytest.mark.parametrize("billing", ["redis"], indirect=True)  # in-process: one process
async def test_every_process_rebuilds_after_a_failed_commit(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    fail_next_commit: Callable[..., None],
) -> None:
    """The counters are shared (Redis): another process, which never saw the failure, counts
    the stored usage only, not the call of the commit that failed."""
    account_id, key = await owner(client, admin_key)
    other = BillingService(billing.config, clock=billing.clock)
    try:
        assert (await send(client, key, "track", "kept")).status_code in (200, 201)
        fail_next_commit()
        assert (await send(client, key, "track", "lost")).status_code == 503
        await asyncio.gather(*billing.quota._unloads)  # the marker goes after the failure
        async with other.db.sessions() as session:
            status = await other.quota.status(session, other.context(), account_id)
        assert (status.remaining_calls, status.remaining_tokens) == (
            FREE_CALLS - 1,
            FREE_TOKENS - 150,
        )
    finally:
        await other.close()
