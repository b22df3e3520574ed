"""Gapless number series (invoices `INV-2026`, credit notes `CN-2026`)."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.models import InvoiceSequence

# A document of an account on a test clock: a simulation, numbered apart from the real series
# (which must stay gapless, year by year, for the tax authorities).
TEST_PREFIX = "TEST-"


def series_for(kind: str, year: int, *, test_clock: bool) -> str:
    """The series of a document of `kind` (`INV`, `CN`) issued in `year`: `INV-2026`, or
    `TEST-INV-2026` for an account on a test clock."""
    return f"{TEST_PREFIX if test_clock else ''}{kind}-{year}"


async def next_number(session: AsyncSession, series: str) -> int:
    """The next value of `series`, taken under its row's lock in the caller's transaction:
    concurrent callers wait for each other's commit, and a rollback gives the number back."""
    return await next_numbers(session, series, 1)


async def next_numbers(session: AsyncSession, series: str, count: int) -> int:
    """The first of `count` consecutive values of `series` (one statement, same lock and
    rollback semantics as `next_number`)."""
    taken = (
        update(InvoiceSequence)
        .where(InvoiceSequence.series == series)
        .values(next_value=InvoiceSequence.next_value + count)
        .returning(InvoiceSequence.next_value)
    )
    value = (await session.execute(taken)).scalar_one_or_none()
    if value is None:  # the series' first number: create the row (once, race-safe)
        postgres = session.get_bind().dialect.name == "postgresql"
        insert = pg_insert if postgres else sqlite_insert
        await session.execute(
            insert(InvoiceSequence)
            .values(series=series, next_value=1)
            .on_conflict_do_nothing(index_elements=["series"])
        )
        value = (await session.execute(taken)).scalar_one()
    return int(value) - count
