"""Gapless numbers under concurrent finalization (both databases; PostgreSQL for real)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from aihub_billing.invoices.service import invoices
from aihub_billing.models import Invoice, InvoiceSequence
from aihub_billing.service import BillingService
from tests.invoices.helpers import metered_plan
from tests.subscriptions.helpers import SEED_BODY, add_plan, ok, owner


class _Abort(Exception):
    pass


async def test_twenty_concurrent_finalizations_take_numbers_one_to_twenty(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    await add_plan(client, admin_key, **metered_plan("metered", 5000))
    for _ in range(21):
        _, key = await owner(client, admin_key)
        await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered"})
    await billing.worker().drain()  # generates the 21 drafts (finalized an hour later)
    async with billing.db.sessions() as session:
        drafts = list(await session.scalars(select(Invoice.id).where(Invoice.status == "draft")))
    assert len(drafts) == 21
    ctx = billing.context()

    async def finalize(invoice_id: str, *, abort: bool) -> None:
        try:
            async with billing.transaction() as session:
                await invoices.finalize(session, ctx, invoice_id)
                await asyncio.sleep(0.01)  # hold the sequence row while others queue
                if abort:
                    raise _Abort  # rolled back: its number must go to someone else
        except _Abort:
            pass

    await asyncio.gather(*(finalize(i, abort=n == 7) for n, i in enumerate(drafts)))
    async with billing.db.sessions() as session:
        rows = (await session.execute(select(Invoice.status, Invoice.number))).all()
        sequence = await session.get(InvoiceSequence, "INV-2026")
    numbers = sorted(n for s, n in rows if n is not None)
    assert numbers == [f"INV-2026-{n:06d}" for n in range(1, 21)]
    assert sorted(s for s, _ in rows).count("draft") == 1
    assert sequence is not None and sequence.next_value == 21


async def test_batched_period_closes_number_their_invoices_gaplessly_in_batch_order(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Period close numbers a batch's invoices with one statement at its end: concurrent
    batches take consecutive ranges, a rolled-back batch gives its range back."""
    monkeypatch.setattr(invoices, "finalize_after", timedelta(0))
    await add_plan(client, admin_key, **metered_plan("metered", 5000))
    for _ in range(9):
        _, key = await owner(client, admin_key)
        await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered"})
    ctx = billing.context()
    async with billing.db.sessions() as session:
        ids = await invoices.closable(session, None)
    batches = [ids[0:3], ids[3:6], ids[6:9]]

    async def close(batch: list[str], *, abort: bool) -> None:
        try:
            async with billing.transaction() as session:
                done = await invoices.close_period(session, ctx, subscription_ids=batch)
                assert (done.created, done.finalized) == (3, 3)
                await asyncio.sleep(0.01)  # hold the sequence row while others queue
                if abort:
                    raise _Abort
        except _Abort:
            pass

    await asyncio.gather(*(close(b, abort=n == 1) for n, b in enumerate(batches)))
    async with billing.db.sessions() as session:
        rows = (await session.execute(select(Invoice.subscription_id, Invoice.sequence))).all()
    by_sub = dict(rows)
    assert sorted(by_sub) == sorted(batches[0] + batches[2])  # the aborted batch made nothing
    for batch in (batches[0], batches[2]):
        numbers = [by_sub[s] for s in batch]  # consecutive, in the batch's order
        assert numbers == list(range(numbers[0], numbers[0] + 3))
    assert sorted(by_sub.values()) == list(range(1, 7))
    # The aborted batch's subscriptions close in a rerun, numbered after the others.
    async with billing.transaction() as session:
        await invoices.close_period(session, ctx, subscription_ids=batches[1])
    async with billing.db.sessions() as session:
        numbers = await session.scalars(
            select(Invoice.sequence).where(Invoice.subscription_id.in_(batches[1]))
        )
        assert sorted(numbers) == [7, 8, 9]
