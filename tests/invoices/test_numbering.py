"""Gapless numbers under concurrent finalization (both databases; PostgreSQL for real)."""

from __future__ import annotations

import asyncio

import httpx
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
