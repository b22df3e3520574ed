"""`quota rebuild`: the live quota counters (Redis) set again from the stored usage."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

from aihub_billing.cli.common import accepted, console, fail, load_config, progress, run
from aihub_billing.service import BillingService, QuotaRebuild


def rebuild(
    account: Annotated[str | None, typer.Option(help="only this account")] = None,
) -> None:
    """Set the current period's quota counters to the stored usage (plus live reservations)."""
    config = load_config()
    if config.redis_url is None:
        # Each process keeps its own counters then, and rebuilds them itself at start.
        fail(
            "quota counters are in each server's memory (AIHUB_BILLING_REDIS_URL is not set): "
            "restarting a server rebuilds its own; nothing to rebuild from here"
        )
    scope = f"account {account}" if account else "every active account"
    header = f"[bold]quota rebuild[/] {scope}: counters from stored usage"

    async def work(billing: BillingService) -> QuotaRebuild:
        await accepted(billing, header, account=account)
        with progress(
            TextColumn("accounts"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
        ) as bar:
            task = bar.add_task("accounts", total=None)
            return await billing.rebuild_quota(
                account_ids=None if account is None else [account],
                on_start=lambda total: bar.update(task, total=total),
                on_account=lambda _id, _rebuilt: bar.advance(task),
            )

    done = run(work, config=config)
    console.print(f"accounts {done.accounts:,}: counters rebuilt {done.rebuilt:,}")
