"""/usage/track's group commit (usage/grouped.py) on both databases: concurrent requests
share transactions and each gets the answer a transaction of its own would give; a group
that fails is written again an event at a time; closing the service writes what waits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aihub_billing.accounts.schemas import AccountCreate
from aihub_billing.kit.clock import FrozenClock
from aihub_billing.kit.context import Actor, Context, Role
from aihub_billing.kit.db import create_engine
from aihub_billing.kit.metrics import USAGE_TRACK_GROUPS
from aihub_billing.service import BillingService
from aihub_billing.usage.errors import UnknownModel
from aihub_billing.usage.grouped import GroupedTracks
from aihub_billing.usage.repository import UsageRepository
from aihub_billing.usage.service import CountingPeriod, model_prices, parse_event
from tests.api.helpers import API, auth, create_account, issue_key

TRACK = f"{API}/usage/track"


def _groups() -> tuple[float, float]:
    """(transactions, events) written by group commits so far in this process."""
    samples = {s.name: s.value for s in USAGE_TRACK_GROUPS.collect()[0].samples}
    return (
        samples["aihub_billing_usage_track_group_events_count"],
        samples["aihub_billing_usage_track_group_events_sum"],
    )


async def _stored(billing: BillingService, account_id: str) -> dict[str, Any]:
    async with billing.db.sessions() as session:
        return {e.event_id: e for e in await UsageRepository(session).events(account_id)}


def _events(prefix: str, n: int, model: str = "gpt-4o") -> list[dict[str, Any]]:
    """n parse_event dicts of 5 input tokens, event ids prefix0, prefix1, ..."""
    return [
        parse_event(
            b'{"model": "%s", "input_tokens": 5, "event_id": "%s%d"}'
            % (model.encode(), prefix.encode(), i)
        )
        for i in range(n)
    ]


def _broken(event: dict[str, Any], event_id: str) -> dict[str, Any]:
    """Not a parse_event dict: recording it raises KeyError (and fails its group)."""
    broken = dict(event, event_id=event_id)
    del broken["usage_type"]
    return broken


async def test_concurrent_tracks_share_transactions_and_keep_their_own_answers(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, clock: FrozenClock
) -> None:
    accounts = [await create_account(client, admin_key, name=f"A{n}") for n in range(3)]
    keys = [await issue_key(client, admin_key, a["id"]) for a in accounts]
    late = (clock.now() + timedelta(hours=1)).isoformat()
    bodies: list[tuple[int, dict[str, Any]]] = []
    for n in range(150):
        owner = n % 3
        body: dict[str, Any] = {
            "model": "gpt-4o-mini",
            "input_tokens": 1_000 + n,
            "output_tokens": 10,
            "event_id": f"ev-{n}",
        }
        if n % 25 == 1:
            body["model"] = "no-such-model"  # rejected alone: 422 unknown_model
        elif n % 25 == 2:
            body["timestamp"] = late  # rejected alone: in the future
        elif n % 25 == 3:
            body["event_id"] = "ev-0"  # the same id as an earlier event of account 0 or not
        bodies.append((owner, body))
    before = _groups()

    async def post(owner: int, body: dict[str, Any]) -> httpx.Response:
        return await client.post(TRACK, json=body, headers=auth(keys[owner]))

    responses = await asyncio.gather(*(post(o, b) for o, b in bodies))
    transactions, events = (a - b for a, b in zip(_groups(), before, strict=True))
    assert events == len(bodies)
    assert transactions < len(bodies) / 2, "concurrent tracks went one transaction each"

    # Per (account, event id): one request stores it (whichever the writes took first), the
    # others are told it is a duplicate.
    answers: dict[tuple[int, str], list[tuple[int, dict[str, Any]]]] = {}
    for (owner, body), response in zip(bodies, responses, strict=True):
        answer = response.json()
        if body["model"] == "no-such-model":
            assert response.status_code == 422, answer
            assert answer["code"] == UnknownModel.code
        elif "timestamp" in body:
            assert response.status_code == 422, answer
            assert answer["code"] == "timestamp_in_future"
        else:
            expected_code = 201 if answer["status"] == "accepted" else 200
            assert response.status_code == expected_code, answer
            answers.setdefault((owner, body["event_id"]), []).append((body["input_tokens"], answer))
    expected: dict[int, dict[str, Decimal]] = {0: {}, 1: {}, 2: {}}
    for (owner, event_id), told in answers.items():
        statuses = sorted(answer["status"] for _, answer in told)
        assert statuses == ["accepted"] + ["duplicate"] * (len(told) - 1), told
        [(input_tokens, answer)] = [t for t in told if t[1]["status"] == "accepted"]
        # gpt-4o-mini: 0.15 in and 0.60 out per 1M tokens, unrounded.
        cost = (input_tokens * Decimal("0.15") + 10 * Decimal("0.60")) / 10**6
        assert Decimal(answer["cost"]) == cost
        expected[owner][event_id] = cost
    assert sum(len(told) > 1 for told in answers.values()) >= 3  # duplicates were tried
    for owner, account in enumerate(accounts):
        stored = await _stored(billing, account["id"])
        assert {i: e.cost for i, e in stored.items()} == expected[owner]


async def test_a_failing_group_is_written_again_an_event_at_a_time(
    billing: BillingService, clock: FrozenClock
) -> None:
    async with billing.transaction() as session:
        await model_prices.seed_defaults(session, billing.context())
    tracks = GroupedTracks(billing.transaction, None)
    ctx = Context(actor=Actor(role=Role.OWNER, account_id="acct_grouped"), clock=clock)
    good = _events("g", 4)
    broken = _broken(good[0], "b0")

    outcomes = await asyncio.gather(
        *(tracks.track(ctx, event) for event in [*good[:2], broken, *good[2:]]),
        return_exceptions=True,
    )
    assert isinstance(outcomes[2], KeyError)
    answers = [o for n, o in enumerate(outcomes) if n != 2]
    assert [(a.event_id, a.status) for a in answers] == [  # type: ignore[union-attr]
        (f"g{n}", "accepted") for n in range(4)
    ]
    assert set(await _stored(billing, "acct_grouped")) == {"g0", "g1", "g2", "g3"}


async def test_closing_the_service_writes_what_waits_and_a_cancelled_wait_is_harmless(
    billing: BillingService, clock: FrozenClock
) -> None:
    await billing.bootstrap()  # the free plan and the model prices
    account = await billing.create_account(AccountCreate(name="Drain"))
    ctx = Context(actor=Actor(role=Role.OWNER, account_id=account.id), clock=clock)
    waiting = [
        asyncio.create_task(
            billing.tracks.track(
                ctx, parse_event(b'{"model": "gpt-4o", "input_tokens": 1, "event_id": "d%d"}' % n)
            )
        )
        for n in range(20)
    ]
    await asyncio.sleep(0)  # every task has handed its event in
    waiting[0].cancel()  # the caller went away; its event is written all the same
    await billing.tracks.drain()
    assert all(task.done() for task in waiting)
    assert waiting[0].cancelled()
    assert all(task.result().status == "accepted" for task in waiting[1:])
    # A retry of the cancelled one (same event id) finds it stored, counted once.
    again = await billing.tracks.track(ctx, parse_event(b'{"model": "gpt-4o", "event_id": "d0"}'))
    assert again.status == "duplicate"
    assert len(await _stored(billing, account.id)) == 20


async def test_an_unreachable_database_fails_the_group_at_once(clock: FrozenClock) -> None:
    # Nothing listens on port 1: every connection attempt is refused, for real.
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    attempts = 0

    @event.listens_for(engine.sync_engine, "do_connect")
    def _count(*_: object) -> None:
        nonlocal attempts
        attempts += 1

    sessions = async_sessionmaker(engine)

    @asynccontextmanager
    async def transaction() -> AsyncIterator[AsyncSession]:
        async with sessions() as session, session.begin():
            yield session

    tracks = GroupedTracks(transaction, None)
    ctx = Context(actor=Actor(role=Role.OWNER, account_id="acct_down"), clock=clock)
    events = _events("u", 10)
    try:
        first = asyncio.create_task(tracks.track(ctx, events[0]))
        await asyncio.sleep(0)  # the first goes alone; the other nine gather behind it
        outcomes = await asyncio.gather(
            first, *(tracks.track(ctx, e) for e in events[1:]), return_exceptions=True
        )
    finally:
        await engine.dispose()
    assert all(isinstance(o, OperationalError | OSError) for o in outcomes), outcomes
    assert attempts == 2, "the failed group of nine was retried an event at a time"


async def test_a_failing_group_counts_each_stored_call_once(
    billing: BillingService, clock: FrozenClock
) -> None:
    await billing.bootstrap()  # the free plan and the model prices
    accounts = sorted(
        [await billing.create_account(AccountCreate(name=f"Q{n}")) for n in range(2)],
        key=lambda a: a.id,
    )
    ctxs = [Context(actor=Actor(role=Role.OWNER, account_id=a.id), clock=clock) for a in accounts]

    async def used_calls() -> list[int]:
        async with billing.db.sessions() as session:
            return [
                (await billing.quota.status(session, ctx, a.id)).used_calls
                for a, ctx in zip(accounts, ctxs, strict=True)
            ]

    assert await used_calls() == [0, 0]  # the counters are loaded (from no usage)
    events = _events("q", 3, model="gpt-4o-mini")
    broken = _broken(events[0], "qb")
    # One group: the first account's two calls are recorded before the second account's
    # broken event fails the group, and are then written again one by one.
    outcomes = await asyncio.gather(
        billing.tracks.track(ctxs[0], events[0]),
        billing.tracks.track(ctxs[0], events[1]),
        billing.tracks.track(ctxs[1], events[2]),
        billing.tracks.track(ctxs[1], broken),
        return_exceptions=True,
    )
    assert isinstance(outcomes[3], KeyError)
    assert [o.status for o in outcomes[:3]] == ["accepted"] * 3  # type: ignore[union-attr]
    assert [len(await _stored(billing, a.id)) for a in accounts] == [2, 1]
    assert await used_calls() == [2, 1], "a call of the failed group was counted twice"


async def test_a_group_that_fails_once_counted_is_not_written_again(
    billing: BillingService, clock: FrozenClock
) -> None:
    await billing.bootstrap()
    account = await billing.create_account(AccountCreate(name="Counted"))
    ctx = Context(actor=Actor(role=Role.OWNER, account_id=account.id), clock=clock)
    counted: list[int] = []

    class FailsOnceCounted:
        """The quota manager, then an unexpected error once it has counted."""

        async def counting_period(self, *args: Any) -> CountingPeriod:
            return await billing.quota.counting_period(*args)

        async def counted(self, session: AsyncSession, *args: Any) -> None:
            counted.append(args[-1].calls)
            raise RuntimeError("after counting")

    tracks = GroupedTracks(billing.transaction, FailsOnceCounted())
    events = _events("c", 3)
    outcomes = await asyncio.gather(*(tracks.track(ctx, e) for e in events), return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes), outcomes
    assert counted == [3], "the counted group was written again event by event"
    assert await _stored(billing, account.id) == {}
