"""Period close numbers a batch, then settles it: the number's year must be the year of the
finalization date it carries (series INV-{year of finalization})."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from aihub_billing.invoices.repository import InvoiceRepository
from aihub_billing.invoices.service import invoices
from aihub_billing.kit.clock import FrozenClock
from aihub_billing.service import BillingService
from tests.invoices.helpers import invoice, list_invoices
from tests.subscriptions.helpers import SEED_BODY, ok, owner


async def test_batch_number_year_matches_finalization_date_across_midnight(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(invoices, "finalize_after", timedelta(0))
    clock.set(datetime(2026, 12, 31, 23, 59, 59, 900000, tzinfo=UTC))
    _, key = await owner(client, admin_key)
    await ok(client, key, "/subscriptions", SEED_BODY)

    real = InvoiceRepository.next_numbers

    async def slow_next_numbers(self: InvoiceRepository, series: str, count: int) -> int:
        first = await real(self, series, count)
        # The batch's numbering took a moment: UTC midnight passes before it settles.
        clock.set(datetime(2027, 1, 1, 0, 0, 0, 100000, tzinfo=UTC))
        return first

    monkeypatch.setattr(InvoiceRepository, "next_numbers", slow_next_numbers)
    done = await ok(client, admin_key, "/invoices/generate", {})
    assert done["finalized"] == 1
    [summary] = await list_invoices(client, key)
    inv = await invoice(client, key, summary["id"])
    year = inv["finalized_at"][:4]
    assert inv["number"].startswith(f"INV-{year}-"), (inv["number"], inv["finalized_at"])
