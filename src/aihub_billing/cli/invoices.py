"""`invoices list`: invoices newest first, as a table, from the API's keyset pages."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from aihub_billing.cli.accounts import invoice_table
from aihub_billing.cli.common import console, run
from aihub_billing.cli.formats import Formats
from aihub_billing.invoices.schemas import InvoiceSummary
from aihub_billing.service import BillingService


class Status(StrEnum):
    """The invoice statuses (models.invoice.INVOICE_STATUSES; a test keeps them equal)."""

    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"


def list_invoices(
    account: Annotated[str | None, typer.Option(help="only this account's")] = None,
    status: Annotated[Status | None, typer.Option(help="only invoices in this status")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many, newest first")] = 20,
) -> None:
    """Invoices, newest first: number, account, status, total, amount due, period."""
    filters = [
        f for f in (account and f"account {account}", status and f"status {status.value}") if f
    ]
    console.print(
        f"[bold]invoices[/] {', '.join(filters) or 'every account'}, newest {limit:,} at most"
    )

    async def work(billing: BillingService) -> tuple[list[InvoiceSummary], Formats]:
        rows = await billing.list_invoices(
            account_id=account, status=None if status is None else status.value, limit=limit
        )
        return rows, Formats(billing.config.documents.locale)

    rows, fmt = run(work)
    # One account's listing leaves its id out: the table fits narrower terminals.
    table = invoice_table(rows, fmt, title=f"{len(rows):,} invoice(s)", with_account=not account)
    console.print(table)
