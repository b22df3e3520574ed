"""Group commit of single usage events (/usage/track).

The events that concurrent requests of one process track are written together: one
transaction (BEGIN, per account and member the price lookup, one insert and the counter
settlements, COMMIT) instead of one transaction each. Every request is answered only once
that commit is through, so an acknowledged event is as durable as with a transaction of its
own, and the answers are the ones a transaction each would give (a second event with an id
already in the group is its duplicate).

Nothing waits for company: an event is written at once while the write slot is free, and
events gather only while it is busy, that is under load, which is when a shared
transaction pays. A group that fails is written again an event at a time, so one event's
trouble reaches its own request only (an unreachable database fails the group at once).
The group's calls go to the quota counters once all of its inserts have succeeded, just
before its commit: a group written again event by event never counts an event twice. A group
that fails after that (its commit, or the counting itself) fails all its requests, and the
quota manager rebuilds the accounts it counted from the stored usage before their next check:
the counters never keep a call the database does not hold, so the client's retry counts once.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.errors import BillingError
from aihub_billing.kit.context import Context
from aihub_billing.kit.metrics import USAGE_TRACK_GROUPS
from aihub_billing.usage import schemas
from aihub_billing.usage.errors import UsageNeedsAccountKey
from aihub_billing.usage.service import (
    CountedUsage,
    CountingPeriod,
    ParsedBatch,
    UsageCounter,
    recorded_of,
    usage,
)

# Transactions in flight per process. One: the next group gathers while it is written.
# Two split the load into smaller groups and cost more CPU per event (check + track at 50
# connections: about 1,750 against 1,900 to 2,200 flows/s, p99 32 against 23 to 29 ms).
WRITE_SLOTS = 1
# Events per transaction at most (a /usage/batch's worth).
MAX_GROUP = 1000

Transaction = Callable[[], AbstractAsyncContextManager[AsyncSession]]
Outcome = schemas.UsageRecorded | BillingError


@dataclass(slots=True)
class _Waiting:
    ctx: Context
    event: dict[str, Any]  # a parse_event dict
    future: asyncio.Future[schemas.UsageRecorded]


class GroupedTracks:
    def __init__(
        self,
        transaction: Transaction,
        counter: UsageCounter | None,
        *,
        slots: int = WRITE_SLOTS,
        max_group: int = MAX_GROUP,
    ) -> None:
        self._transaction = transaction
        self._counter = counter
        self._slots = slots
        self._max_group = max_group
        self._waiting: list[_Waiting] = []
        self._writes: set[asyncio.Task[None]] = set()
        self._scheduled = False

    async def track(self, ctx: Context, event: dict[str, Any]) -> schemas.UsageRecorded:
        """Records one event (a parse_event dict) as UsageTracker.track does, in a group;
        a rejection raises its BillingError."""
        if ctx.actor.account_id is None:
            raise UsageNeedsAccountKey("send usage with a key of the account that used it")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[schemas.UsageRecorded] = loop.create_future()
        self._waiting.append(_Waiting(ctx, event, future))
        if not self._scheduled:
            # At the end of this loop turn: the events of requests handled in the same turn
            # go together.
            self._scheduled = True
            loop.call_soon(self._start)
        return await future

    async def drain(self) -> None:
        """Waits until every event handed in so far is written (or has failed)."""
        while self._waiting or self._writes:
            self._start()
            if self._writes:
                await asyncio.wait(set(self._writes))

    def _start(self) -> None:
        self._scheduled = False
        while self._waiting and len(self._writes) < self._slots:
            group = self._waiting[: self._max_group]
            del self._waiting[: self._max_group]
            # A context of its own: the group is no one request's (its log lines, its
            # request id).
            task = asyncio.create_task(self._write(group), context=contextvars.Context())
            self._writes.add(task)
            task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        self._start()

    async def _write(self, group: list[_Waiting]) -> None:
        try:
            outcomes = await self._record(group)
        except asyncio.CancelledError:
            for waiting in group:  # its requests must not wait forever (loop shutdown)
                waiting.future.cancel()
            raise
        except _FailedAfterCounting as failed:
            # Written again one by one, its calls would be counted again.
            for waiting in group:
                _answer(waiting.future, failed.error)
            return
        except Exception as exc:
            if len(group) == 1 or _unavailable(exc):
                # An unreachable database fails every event alike: no retries one by one.
                for waiting in group:
                    _answer(waiting.future, exc)
                return
            await asyncio.gather(*(self._write([waiting]) for waiting in group))
            return
        USAGE_TRACK_GROUPS.observe(len(group))
        for waiting, outcome in zip(group, outcomes, strict=True):
            _answer(waiting.future, outcome)

    async def _record(self, group: list[_Waiting]) -> list[Outcome]:
        by_key: dict[tuple[str, str], list[int]] = {}
        for n, waiting in enumerate(group):
            actor = waiting.ctx.actor
            key = (actor.account_id or "", actor.member_id or "")
            by_key.setdefault(key, []).append(n)
        outcomes: list[Outcome | None] = [None] * len(group)
        counts = _CountedLater(self._counter) if self._counter is not None else None
        counting = False
        try:
            async with self._transaction() as session:
                # Accounts in one order: two groups lock the same keys in the same order.
                for key in sorted(by_key):
                    indexes = by_key[key]
                    batch = ParsedBatch(
                        [(i, group[n].event) for i, n in enumerate(indexes)],
                        [None] * len(indexes),
                    )
                    outcome = await usage.record_parsed(
                        session, group[indexes[0]].ctx, batch, counts
                    )
                    for n, result in zip(indexes, outcome.results, strict=True):
                        outcomes[n] = recorded_of(result)
                if counts is not None:
                    counting = True
                    await counts.count(session)
        except Exception as exc:
            if counting:
                raise _FailedAfterCounting(exc) from exc
            raise
        return outcomes  # type: ignore[return-value]  # every index is set above


class _CountedLater:
    """The usage counter as a group's inserts see it: what each insert counts is taken
    down, and handed to the real counter once every insert of the group has succeeded."""

    def __init__(self, counter: UsageCounter) -> None:
        self._counter = counter
        self._pending: list[tuple[Context, str, CountedUsage]] = []

    async def counting_period(
        self, session: AsyncSession, ctx: Context, account_id: str
    ) -> CountingPeriod:
        return await self._counter.counting_period(session, ctx, account_id)

    async def counted(
        self, session: AsyncSession, ctx: Context, account_id: str, usage: CountedUsage
    ) -> None:
        self._pending.append((ctx, account_id, usage))

    async def count(self, session: AsyncSession) -> None:
        for ctx, account_id, counted in self._pending:
            await self._counter.counted(session, ctx, account_id, counted)


class _FailedAfterCounting(Exception):
    """The group failed with `error` after its calls were counted (in the counting or the
    commit)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def _unavailable(exc: Exception) -> bool:
    """Whether `exc` is the database's trouble rather than an event's (a lost or refused
    connection, a timeout, a failing server)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError)


def _answer(future: asyncio.Future[schemas.UsageRecorded], outcome: object) -> None:
    if future.done():  # the request was cancelled meanwhile
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)  # type: ignore[arg-type]
