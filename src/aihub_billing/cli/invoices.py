"""`invoices list` (newest first, from the API's keyset pages) and the invoice table it shares
with `accounts show`."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table

from aihub_billing.cli.common import accepted, console, run
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
    """Invoices, newest first: number, account, status, total, amount still owed, period."""
    filters = [
        f for f in (account and f"account {account}", status and f"status {status.value}") if f
    ]
    header = f"[bold]invoices[/] {', '.join(filters) or 'every account'}, newest {limit:,} at most"

    async def work(billing: BillingService) -> tuple[list[InvoiceSummary], Formats]:
        await accepted(billing, header, account=account)
        rows = await billing.list_invoices(
            account_id=account, status=None if status is None else status.value, limit=limit
        )
        return rows, Formats(billing.config.documents.locale)

    rows, fmt = run(work)
    # One account's listing leaves its id out: the table fits narrower terminals.
    table = invoice_table(rows, fmt, title=f"{len(rows):,} invoice(s)", with_account=not account)
    console.print(table)


def invoice_table(
    rows: list[InvoiceSummary], fmt: Formats, *, title: str, with_account: bool = True
) -> Table:
    """Invoices as `invoices list` and `accounts show` print them."""
    table = Table(title=title, title_justify="left")
    # What an operator copies is never cut or wrapped: the number, or a draft's id (drafts
    # are numbered at finalization), and the account id.
    table.add_column("number", no_wrap=True)
    if with_account:
        table.add_column("account", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("total", justify="right", no_wrap=True)
    table.add_column("owed", justify="right", no_wrap=True)
    # On a narrow terminal these wrap between their dates rather than lose digits.
    table.add_column("period", min_width=12)
    table.add_column("created (UTC)", min_width=10)
    for inv in rows:
        table.add_row(
            inv.number or inv.id or "-",
            *([inv.account_id] if with_account else []),
            inv.status,
            fmt.money(inv.total_minor, inv.currency),
            fmt.money(inv.amount_remaining_minor, inv.currency),
            fmt.period(inv.period_start, inv.period_end),
            fmt.time(inv.created_at).removesuffix(" UTC"),
        )
    if not rows:
        table.caption = "no invoices"
    return table
