"""Test clocks: create, attach accounts, advance by running the clock's jobs in time order.

Jobs of an account on a test clock carry `test_clock_id`; workers never claim them. Advancing
runs them through the registry's own handlers, each with a clock set to the job's time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.accounts.changes import limits_changed
from aihub_billing.accounts.service import accounts
from aihub_billing.audit.service import audit
from aihub_billing.errors import Forbidden
from aihub_billing.jobs.queue import DEFAULT_MAX_ATTEMPTS
from aihub_billing.jobs.registry import JobRun, gives_up, registry
from aihub_billing.jobs.worker import backoff
from aihub_billing.kit.cache import account_scope, touch
from aihub_billing.kit.clock import FrozenClock
from aihub_billing.kit.context import SYSTEM, Context
from aihub_billing.kit.ids import new_id
from aihub_billing.kit.pagination import id_page
from aihub_billing.models import TestClock, TestClockAccount
from aihub_billing.testclocks import schemas
from aihub_billing.testclocks.errors import (
    AccountAlreadyAttached,
    AccountHasHistory,
    AccountHasSubscription,
    TestClockNotFound,
    TestClocksDisabled,
    TimeGoesForward,
    TooManyJobs,
)
from aihub_billing.testclocks.repository import TestClockRepository

# One advance runs at most this many jobs (a daily job over years stays well below).
MAX_JOBS_PER_ADVANCE = 5000


class TestClockService:
    __test__ = False

    def __init__(self) -> None:
        # Off in production (BillingService): advancing collects invoices through the
        # configured providers, whose keys there are live.
        self.enabled = True

    def _check_enabled(self) -> None:
        if not self.enabled:
            raise TestClocksDisabled("test clocks are not available in production")

    async def create(
        self, session: AsyncSession, ctx: Context, data: schemas.TestClockCreate
    ) -> TestClock:
        _operator(ctx)
        self._check_enabled()
        now = ctx.clock.now()
        clock = TestClock(
            id=new_id("clock", now), name=data.name, frozen_time=data.frozen_time, created_at=now
        )
        TestClockRepository(session).add(clock)
        await session.flush()
        await audit.record(
            session,
            ctx,
            action="test_clock.created",
            object_type="test_clock",
            object_id=clock.id,
            account_id=None,
            after=schemas.TestClock.model_validate(clock),
        )
        return clock

    async def get(
        self, session: AsyncSession, ctx: Context, clock_id: str, *, lock: bool = False
    ) -> TestClock:
        _operator(ctx)
        clock = await TestClockRepository(session).get(clock_id, lock=lock)
        if clock is None:
            raise TestClockNotFound(f"no test clock {clock_id!r}")
        return clock

    async def page(
        self, session: AsyncSession, ctx: Context, *, cursor: str | None, limit: int | None
    ) -> tuple[list[tuple[TestClock, list[str]]], str | None]:
        """The clocks in id order, each with the accounts on it."""
        _operator(ctx)
        repo = TestClockRepository(session)
        clocks, next_cursor = await id_page(
            cursor, limit, lambda after_id, n: repo.page(limit=n, after_id=after_id)
        )
        attached = await repo.accounts_of_clocks([c.id for c in clocks])
        return [(c, attached[c.id]) for c in clocks], next_cursor

    async def with_accounts(
        self, session: AsyncSession, ctx: Context, clock_id: str
    ) -> tuple[TestClock, list[str]]:
        clock = await self.get(session, ctx, clock_id)
        attached = await TestClockRepository(session).accounts_of_clocks([clock.id])
        return clock, attached[clock.id]

    async def attach(
        self, session: AsyncSession, ctx: Context, clock_id: str, account_id: str
    ) -> TestClockAccount:
        """From now on the account's API calls and jobs run on the clock's time."""
        self._check_enabled()
        clock = await self.get(session, ctx, clock_id)
        await accounts.get(session, ctx, account_id)
        await accounts.lock(session, account_id)  # a concurrent subscribe waits, or is seen
        repo = TestClockRepository(session)
        if await repo.attachment(account_id) is not None:
            raise AccountAlreadyAttached(f"account {account_id!r} is on a test clock")
        # Its existing jobs would stay on real time, and its real documents (a draft
        # invoice, an open one in collection) would be numbered and collected on the
        # clock's: only a fresh account may move.
        if await repo.has_open_subscription(account_id):
            raise AccountHasSubscription(f"account {account_id!r} has an open subscription")
        if (history := await repo.history(account_id)) is not None:
            raise AccountHasHistory(f"account {account_id!r} has {history} on real time")
        link = TestClockAccount(
            account_id=account_id, test_clock_id=clock.id, attached_at=ctx.clock.now()
        )
        repo.add(link)
        await session.flush()
        limits_changed(session, account_id)  # its quota now runs on the clock's time
        await audit.record(
            session,
            ctx,
            action="test_clock.account_attached",
            object_type="test_clock",
            object_id=clock.id,
            account_id=account_id,
            after=schemas.Attachment.model_validate(link),
        )
        return link

    async def context_for(
        self, session: AsyncSession, ctx: Context, account_id: str
    ) -> tuple[Context, str | None]:
        """The context to act on the account with (the test clock's time when attached)."""
        return _clocked(ctx, await TestClockRepository(session).clock_of_account(account_id))

    async def contexts_for(
        self, session: AsyncSession, ctx: Context, account_ids: list[str]
    ) -> dict[str, tuple[Context, str | None]]:
        """`context_for` of many accounts in one query."""
        clocks = await TestClockRepository(session).clocks_of_accounts(account_ids)
        return {account_id: _clocked(ctx, clocks.get(account_id)) for account_id in account_ids}

    async def advance(
        self,
        session: AsyncSession,
        ctx: Context,
        clock_id: str,
        target: datetime,
        *,
        settings: dict[str, Any] | None = None,
    ) -> tuple[TestClock, list[Attempt]]:
        """Runs the clock's jobs due by `target` in time order, then sets it to `target`;
        returns each attempt made.

        Jobs the handlers enqueue on the clock run in the same pass when due. A job that
        fails is handled as the worker handles it, on the clock's time: its own changes are
        undone (a savepoint), it is retried after its backoff, or dead once its attempts run
        out or its failure is permanent; the advance goes on. Everything else is one
        transaction."""
        self._check_enabled()
        clock = await self.get(session, ctx, clock_id, lock=True)
        if target < clock.frozen_time:
            raise TimeGoesForward(
                f"{target.isoformat()} is before the clock's time, "
                f"{clock.frozen_time.isoformat()}: a clock only goes forward"
            )
        before = schemas.TestClock.model_validate(clock)
        repo = TestClockRepository(session)
        ran: list[Attempt] = []
        while (job := await repo.next_due_job(clock.id, target)) is not None:
            if len(ran) >= MAX_JOBS_PER_ADVANCE:
                raise TooManyJobs(f"more than {MAX_JOBS_PER_ADVANCE} jobs due")
            at = max(job.run_at, clock.frozen_time)
            clock.frozen_time = at
            job.attempts += 1
            run = JobRun(
                job_id=job.id,
                name=job.name,
                payload=dict(job.payload),
                attempt=job.attempts,
                ctx=Context(actor=SYSTEM, clock=FrozenClock(at), request_id=job.id),
                settings=settings or {},
                test_clock_id=job.test_clock_id,
            )
            handler = registry.handlers.get(job.name)
            if handler is None:
                raise LookupError(f"no handler registered for job {job.name!r}")
            try:
                async with session.begin_nested():
                    await handler(session, run)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:2000]
                dead = gives_up(exc, job.attempts, job.max_attempts or DEFAULT_MAX_ATTEMPTS)
                job.status, job.last_error = ("dead" if dead else "pending"), error
                if dead:
                    job.finished_at = at
                else:
                    job.run_at = at + backoff(job.attempts)
                await session.flush()
                outcome = "dead" if dead else "retrying"
                ran.append(Attempt(job.name, at, dict(job.payload), outcome, error))
                continue
            job.status = "succeeded"
            job.finished_at = at
            await session.flush()
            ran.append(Attempt(job.name, at, dict(job.payload), "succeeded", None))
        clock.frozen_time = target
        await session.flush()
        # What was cached of its accounts (quota limits included) was true at the clock's
        # old time.
        attached = await repo.account_ids(clock.id)
        touch(session, *(account_scope(a) for a in attached))
        for account_id in attached:
            limits_changed(session, account_id)
        await audit.record(
            session,
            ctx,
            action="test_clock.advanced",
            object_type="test_clock",
            object_id=clock.id,
            account_id=None,
            before=before,
            after=schemas.TestClock.model_validate(clock),
        )
        return clock, ran


@dataclass(frozen=True, slots=True)
class Attempt:
    """One run of a job during an advance, at the clock's time `at`."""

    name: str
    at: datetime
    payload: dict[str, Any]
    status: str  # succeeded | retrying | dead
    error: str | None


def _operator(ctx: Context) -> None:
    if not ctx.actor.is_operator:
        raise Forbidden("only the operator uses test clocks")


def _clocked(ctx: Context, clock: TestClock | None) -> tuple[Context, str | None]:
    if clock is None:
        return ctx, None
    return on_clock(ctx, clock.frozen_time), clock.id


def on_clock(ctx: Context, frozen_time: datetime) -> Context:
    """`ctx` on a test clock's time."""
    return Context(ctx.actor, FrozenClock(frozen_time), ctx.request_id)


test_clocks = TestClockService()
