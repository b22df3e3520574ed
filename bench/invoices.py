"""Period close on PostgreSQL: N accounts with a subscription due and M usage events (their
daily rollups too); seconds from the close until every cycle invoice is finalized (finalize
delay 0). Loading is timed separately and is not part of the figure."""

from __future__ import annotations

import asyncio
import multiprocessing
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
from rich.console import Console
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from aihub_billing.accounts.schemas import AccountCreate
from aihub_billing.accounts.service import accounts
from aihub_billing.config import BillingConfig
from aihub_billing.invoices.service import invoices
from aihub_billing.kit.clock import FrozenClock, monotonic
from aihub_billing.kit.logs import configure_logging
from aihub_billing.models import Invoice
from aihub_billing.plans.schemas import PlanCreate
from aihub_billing.plans.service import plans
from aihub_billing.service import BillingService
from aihub_billing.subscriptions.schemas import SubscriptionCreate
from aihub_billing.subscriptions.service import subscriptions
from bench import usage as usage_bench
from bench.common import Result, database, postgres_available

settings: dict[str, int | None] = {"events": None, "accounts": None, "workers": None}

START = datetime(2026, 1, 1, tzinfo=UTC)
CLOSE_AT = datetime(2026, 2, 1, 0, 10, tzinfo=UTC)
SETUP_BATCH = 250
CLOSE_BATCH = 50


def _config(url: str) -> BillingConfig:
    return BillingConfig(
        environment="test",
        database_url=url,
        embedded_worker=False,
        invoice_finalize_after_seconds=0,
        log_level="WARNING",
    )


async def _setup(url: str, n_accounts: int) -> list[str]:
    """The plan, the accounts and their subscriptions (and their first invoices)."""
    billing = BillingService(_config(url), clock=FrozenClock(START))
    ctx = billing.context()
    try:
        await billing.bootstrap()
        async with billing.transaction() as session:
            await plans.create(
                session,
                ctx,
                PlanCreate.model_validate(
                    {
                        "code": "metered",
                        "name": "Metered",
                        "limits": {
                            "included_api_calls": 1000,
                            "included_tokens": 100_000,
                            "calls_policy": "bill",
                            "tokens_policy": "bill",
                        },
                        "prices": [
                            {
                                "currency": "USD",
                                "amount_minor": 2999,
                                "overage_per_1k_calls": "0.5",
                                "overage_per_1m_tokens": "2",
                            }
                        ],
                    }
                ),
            )
        ids: list[str] = []
        for start in range(0, n_accounts, SETUP_BATCH):
            async with billing.transaction() as session:
                for i in range(start, min(start + SETUP_BATCH, n_accounts)):
                    account = await accounts.create(
                        session, ctx, AccountCreate(name=f"bench-{i}"), default_currency="USD"
                    )
                    await session.flush()
                    await subscriptions.create(
                        session,
                        ctx,
                        SubscriptionCreate(
                            plan_type="metered",
                            payment_method_id="pm_bench",
                            account_id=account.id,
                        ),
                    )
                    ids.append(account.id)
        # The creation invoices (not part of the figure).
        await billing.close_period(batch_size=CLOSE_BATCH)
        return ids
    finally:
        await billing.close()


async def _load(url: str, account_ids: list[str], n_events: int) -> None:
    """n events over January spread over the accounts, and their daily rollups, in SQL."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            usage_bench.events_sql("($1::text[])[1 + i % $3]", "200"),
            account_ids,
            n_events,
            len(account_ids),
        )
        await conn.execute(usage_bench.rollups_sql("$1"), list(usage_bench.histogram.BOUNDS_MS))
        # As a database that was not bulk-loaded a minute ago: the new rows vacuumed and
        # analyzed, and written out, so that autovacuum and the checkpoint of ten million fresh
        # rows do not run inside the timed close.
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def _close_share(url: str, share: int, shares: int) -> int:
    """Closes the period of every `shares`-th subscription (one process per share)."""
    billing = BillingService(_config(url), clock=FrozenClock(CLOSE_AT))
    try:
        async with billing.db.sessions() as session:
            ids = (await invoices.closable(session, None))[share::shares]
        created = 0
        for start in range(0, len(ids), CLOSE_BATCH):
            async with billing.transaction() as session:
                done = await invoices.close_period(
                    session, billing.context(), subscription_ids=ids[start : start + CLOSE_BATCH]
                )
            created += done.created
        return created
    finally:
        await billing.close()


def _close_process(url: str, share: int, shares: int) -> int:
    configure_logging("WARNING")
    return asyncio.run(_close_share(url, share, shares))


async def _finalized_cycles(url: str) -> tuple[int, int]:
    billing = BillingService(_config(url), clock=FrozenClock(CLOSE_AT))
    try:
        async with billing.db.sessions() as session:
            query = select(func.count(), func.coalesce(func.sum(Invoice.total_minor), 0)).where(
                Invoice.billing_reason == "subscription_cycle", Invoice.finalized_at.is_not(None)
            )
            count, total = (await session.execute(query)).one()
            return int(count), int(total)
    finally:
        await billing.close()


async def run(*, quick: bool, console: Console) -> list[Result]:
    if not await postgres_available():
        console.print("   skipped: PostgreSQL is not reachable")
        return []
    n_accounts = settings["accounts"] or (500 if quick else 5000)
    n_events = settings["events"] or (200_000 if quick else 10_000_000)
    workers = settings["workers"] or 2
    async with database("postgresql") as url:
        started = monotonic()
        account_ids = await _setup(url, n_accounts)
        console.print(
            f"   {n_accounts:,} accounts and subscriptions (with their first invoices) in "
            f"{monotonic() - started:,.1f} s"
        )
        started = monotonic()
        await _load(url, account_ids, n_events)
        console.print(f"   loaded {n_events:,} events + rollups in {monotonic() - started:,.1f} s")
        # The figure: renewals, cycle invoices with overage, numbering, all finalized.
        started = monotonic()
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers) as pool:
            created = sum(
                await asyncio.to_thread(
                    pool.starmap, _close_process, [(url, i, workers) for i in range(workers)]
                )
            )
        seconds = monotonic() - started
        finalized, total_minor = await _finalized_cycles(url)
        console.print(
            f"   {created:,} cycle invoices created, {finalized:,} finalized in {seconds:,.1f} s "
            f"with {workers} processes (sum of totals {Decimal(total_minor) / 100:,} USD)"
        )
        if finalized != n_accounts:
            raise RuntimeError(f"{finalized} of {n_accounts} invoices finalized")
    return [
        Result(
            name=(
                f"period close: {n_accounts:,} invoices finalized, {n_events:,} usage events (s)"
            ),
            backend="postgresql",
            figure=seconds,
            unit="s",
            target="<= 60 s for 5,000 / 10M" if not quick else None,
        )
    ]
