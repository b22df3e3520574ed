"""`accounts show`: one account at a glance (plan, quota, this month's usage, balance,
recent invoices), from BillingService.account_overview."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from typing import Annotated

import typer
from rich.table import Table

from aihub_billing.cli.common import console, run
from aihub_billing.cli.formats import Formats
from aihub_billing.cli.invoices import invoice_table
from aihub_billing.service import AccountOverview, BillingService


def show(
    account_id: Annotated[str, typer.Argument(help="the account's id (acct_…)")],
    invoices: Annotated[int, typer.Option(min=1, max=200, help="recent invoices shown")] = 5,
) -> None:
    """The account, its subscription, quota, this month's usage, balance and invoices."""

    async def work(billing: BillingService) -> tuple[AccountOverview, Formats, str]:
        overview = await billing.account_overview(account_id, recent=invoices)
        counters = "Redis, live" if billing.redis is not None else "from stored usage"
        return overview, Formats(billing.config.documents.locale), counters

    overview, fmt, counters = run(work)
    for table in (
        _account(overview, fmt),
        _plan(overview, fmt),
        _quota(overview, fmt, counters),
        _usage(overview, fmt),
        _balance(overview, fmt),
        invoice_table(overview.invoices, fmt, title="Recent invoices", with_account=False),
    ):
        console.print(table)


def _fields(title: str) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    return table


def _account(o: AccountOverview, fmt: Formats) -> Table:
    a = o.account
    table = _fields(f"Account {a.id}")
    table.add_row("name", a.name)
    table.add_row("email", a.email or "-")
    table.add_row("currency", a.currency)
    tax = "exempt" if a.tax_exempt else ("default rate" if a.tax_rate is None else str(a.tax_rate))
    table.add_row("tax", tax)
    table.add_row("status", a.status)
    table.add_row("created", fmt.time(a.created_at))
    return table


def _plan(o: AccountOverview, fmt: Formats) -> Table:
    current, sub = o.plan, o.plan.subscription
    table = _fields("Subscription")
    table.add_row("plan", f"{current.plan.code} v{current.plan.version} ({current.plan.name})")
    table.add_row("period", fmt.period(current.period_start, current.period_end))
    table.add_row("period end", fmt.time(current.period_end))
    if sub is None:
        table.add_row("subscription", "none (the free plan applies)")
        return table
    table.add_row("subscription", f"{sub.id}: {sub.status}")
    table.add_row("price", f"{fmt.money(sub.amount_minor, sub.currency)} {sub.billing_cycle}")
    if sub.trial_end is not None:
        table.add_row("trial end", fmt.time(sub.trial_end))
    if sub.cancel_at_period_end:
        table.add_row("cancels", f"at period end ({fmt.time(sub.current_period_end)})")
    if sub.pending_change is not None:
        change = sub.pending_change
        table.add_row(
            "pending change",
            f"{change.plan.code} {change.billing_cycle} from {fmt.time(change.effective_at)}",
        )
    return table


def _quota(o: AccountOverview, fmt: Formats, counters: str) -> Table:
    q = o.quota
    if q is None:
        table = _fields("Quota")
        table.add_row("counters", f"unavailable ({o.quota_error})")
        return table
    table = Table("counter", "used", "limit", "remaining", "policy", title=f"Quota ({counters})")
    table.title_justify = "left"
    for name, used, limit, remaining, policy in (
        ("calls / period", q.used_calls, q.limit_calls, q.remaining_calls, q.calls_policy),
        ("tokens / period", q.used_tokens, q.limit_tokens, q.remaining_tokens, q.tokens_policy),
    ):
        table.add_row(
            name, fmt.count(used), fmt.count(limit), fmt.count(remaining, "-"), str(policy)
        )
    rates = q.rate_limits
    for name, state in (("requests / minute", rates.rpm), ("tokens / minute", rates.tpm)):
        table.add_row(
            name, fmt.count(state.used), fmt.count(state.limit), fmt.count(state.remaining, "-"), ""
        )
    table.add_row(
        "concurrent requests",
        fmt.count(rates.concurrency.in_flight),
        fmt.count(rates.concurrency.limit),
        "",
        "",
    )
    table.caption = f"plan {q.plan_type}; monthly counters reset {fmt.time(q.reset_at)}"
    return table


def _usage(o: AccountOverview, fmt: Formats) -> Table:
    stats = o.usage
    table = Table(
        "model",
        "requests",
        "input tokens",
        "cached",
        "output tokens",
        "cost",
        title=f"Usage this month (UTC days {stats.start} – {stats.end - timedelta(days=1)})",
        title_justify="left",
    )
    requests: dict[str, int] = defaultdict(int)
    costs: dict[str, Decimal] = defaultdict(Decimal)
    for row in stats.rows:
        table.add_row(
            row.group or "-",
            fmt.count(row.requests),
            fmt.count(row.input_tokens),
            fmt.count(row.cached_input_tokens),
            fmt.count(row.output_tokens),
            fmt.cost(row.cost, row.currency),
        )
        if row.currency is not None:
            requests[row.currency] += row.requests
            costs[row.currency] += row.cost
    if not stats.rows:
        table.add_row("no usage", "0", "0", "0", "0", "-")
    for currency in sorted(costs):
        table.add_row(
            f"[bold]total {currency}[/]",
            f"[bold]{fmt.count(requests[currency])}[/]",
            "",
            "",
            "",
            f"[bold]{fmt.cost(costs[currency], currency)}[/]",
        )
    return table


def _balance(o: AccountOverview, fmt: Formats) -> Table:
    table = _fields("Balance (credit)")
    balances = [b for b in o.balance.balances if b.amount_minor]
    for b in balances:
        table.add_row(b.currency, fmt.money(b.amount_minor, b.currency))
    if not balances:
        table.add_row("credit", fmt.money(0, o.account.currency))
    return table
