"""The operator CLI (Typer): serve, migrate, worker, seed, close-period, accounts, api-keys,
plans, invoices, usage import, quota rebuild."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
from datetime import UTC, datetime
from typing import Annotated

import typer
import uvicorn
from rich.table import Table

from aihub_billing.accounts.schemas import AccountCreate, AccountUpdate
from aihub_billing.cli import accounts, invoices, quota, usage
from aihub_billing.cli.common import (
    accepted,
    console,
    database_unavailable,
    fail,
    load_config,
    progress,
    run,
)
from aihub_billing.cli.formats import Formats
from aihub_billing.config import BillingConfig, redacted_database_url
from aihub_billing.invoices.service import CloseOutcome
from aihub_billing.kit.db import UNREACHABLE
from aihub_billing.kit.metrics import MULTIPROC_ENV, prepare_multiprocess_dir, serve_metrics
from aihub_billing.plans.schemas import Plan, PlanPrice
from aihub_billing.service import BillingService, Bootstrap, migrate_database

__all__ = ["app", "console"]

app = typer.Typer(help="aihub-billing: billing and quota for paid AI APIs.", no_args_is_help=True)
accounts_app = typer.Typer(help="Accounts.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
plans_app = typer.Typer(help="The plan catalog.", no_args_is_help=True)
invoices_app = typer.Typer(help="Invoices.", no_args_is_help=True)
usage_app = typer.Typer(help="Usage events.", no_args_is_help=True)
quota_app = typer.Typer(help="Live quota counters.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(keys_app, name="api-keys")
app.add_typer(plans_app, name="plans")
app.add_typer(invoices_app, name="invoices")
app.add_typer(usage_app, name="usage")
app.add_typer(quota_app, name="quota")
accounts_app.command("show")(accounts.show)
invoices_app.command("list")(invoices.list_invoices)
usage_app.command("import")(usage.import_usage)
quota_app.command("rebuild")(quota.rebuild)


def _migrate(config: BillingConfig) -> None:
    console.print(f"[bold]migrate[/] {redacted_database_url(config.database_url)} → head")
    try:
        migrate_database(config.database_url)
    except UNREACHABLE as exc:
        database_unavailable(exc, config.database_url)


def _report_bootstrap(result: Bootstrap, host: str, port: int) -> None:
    if result.plans_created:
        console.print(f"[bold]seed[/] plans created: {', '.join(result.plans_created)}")
    else:
        console.print("[bold]seed[/] default plans already present")
    if result.admin_secret:
        console.print(
            "[bold green]admin API key[/] (shown once, store it now):\n"
            f"  {result.admin_secret}\n"
            f"  curl -H 'Authorization: Bearer {result.admin_secret}' "
            f"http://{host}:{port}/api/v1/billing/plans"
        )
    elif result.admin_key_from_env:
        console.print(
            f"[bold]admin API key[/] from AIHUB_BILLING_ADMIN_KEY ({result.admin_key_id})"
        )
    else:
        console.print(
            f"[bold]admin API key[/] exists ({result.admin_key_id}); issue another with "
            "`aihub-billing api-keys create --role admin`"
        )


@app.command()
def migrate() -> None:
    """Apply the database migrations."""
    _migrate(load_config())
    console.print("[green]database is at head[/]")


@app.command()
def seed() -> None:
    """Seed the default plans and make sure an operator key exists."""
    _report_bootstrap(run(lambda b: b.bootstrap()), "127.0.0.1", 8000)


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="uvicorn worker processes (more than one needs Redis)")
    ] = 1,
) -> None:
    """Migrate, seed, and serve the API (with the embedded job worker on SQLite)."""
    config = load_config()
    # Both before migrating and seeding, not after.
    _check_workers(workers, config)
    _check_port_free(host, port)
    _migrate(config)
    _report_bootstrap(run(lambda b: b.bootstrap(), config=config), host, port)
    worker_note = "embedded job worker" if config.run_embedded_worker() else "no embedded worker"
    console.print(
        f"[bold]serve[/] http://{host}:{port}  (docs: http://{host}:{port}/docs; "
        f"environment {config.environment}; {worker_note}; "
        f"counters {'Redis' if config.redis_url else 'in-process'})"
    )
    # Several workers count into one directory (set before they start, so they inherit it)
    # and /metrics adds them up, whichever worker answers the scrape.
    metrics_dir, made_here = prepare_multiprocess_dir(workers)
    if metrics_dir is not None:
        console.print(
            f"[bold]metrics[/] /metrics adds up the processes of {MULTIPROC_ENV}={metrics_dir}"
        )
    try:
        uvicorn.run(
            "aihub_billing.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=config.log_level.lower(),
            # The app writes one access line per request (route template, request id), and
            # uvicorn's own lines go through the app's logging (JSON with log_json).
            access_log=False,
            log_config=None,
            # uvicorn restarts a worker that has not answered its health check in 5 s; on a
            # loaded two-core host importing the app took 11 s, so the workers were
            # restarted forever without serving (measured). One minute is a hung worker.
            timeout_worker_healthcheck=60,
        )
    finally:
        if made_here and metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _check_workers(workers: int, config: BillingConfig) -> None:
    """Ends the command with one line when several workers would each count on their own."""
    # Without Redis every process keeps its own quota counters and caches: N workers would
    # admit N times a limit. SQLite itself is safe for several processes: one writer at a
    # time (BEGIN IMMEDIATE, a 30 s busy timeout) and a job is claimed by one UPDATE.
    if workers > 1 and not config.redis_url:
        fail(
            f"--workers {workers} needs AIHUB_BILLING_REDIS_URL: in-process quota counters "
            "(and caches) are exact for one process only"
        )


def _check_port_free(host: str, port: int) -> None:
    """Ends the command with one line when nothing could listen on host:port."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc}")
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As uvicorn binds: SO_REUSEADDR, so a port in TIME_WAIT is not taken for busy.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


@app.command()
def worker(
    once: Annotated[bool, typer.Option(help="run what is due, then exit")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="serve this worker's Prometheus /metrics on this port (default: off)"),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="address for --metrics-port")] = "127.0.0.1",
) -> None:
    """Run the job worker: claims due jobs (any number of workers on PostgreSQL)."""

    async def work(billing: BillingService) -> None:
        runner = billing.worker()
        if once:
            await runner.tick()
            ran = await runner.drain()
            console.print(f"ran {ran} job(s)")
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # Jobs charge payments, apply webhooks and cancel in dunning: their counts are here.
        metrics = serve_metrics(metrics_port, metrics_host) if metrics_port is not None else None
        if metrics is not None:
            console.print(f"[bold]metrics[/] http://{metrics_host}:{metrics_port}/metrics")
        console.print(f"[bold]worker[/] {runner.worker_id} polling (Ctrl-C stops)")
        try:
            rollups = asyncio.create_task(billing.run_usage_rollups(stop))
            await runner.run(stop)
            await rollups
        finally:
            if metrics is not None:
                metrics.shutdown()
                metrics.server_close()

    run(work)


@app.command("close-period")
def close_period(
    at: Annotated[
        datetime | None, typer.Option(help="close periods ended by then (ISO, default now)")
    ] = None,
    account: Annotated[str | None, typer.Option(help="only this account")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="subscriptions per transaction")] = 50,
) -> None:
    """Invoice every closed period: overdue renewals first, then the missing invoices."""
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    scope = f"account {account}" if account else "every account"
    header = f"[bold]close-period[/] {scope}, periods ended by {at or 'now'}"

    async def work(billing: BillingService) -> CloseOutcome:
        billing.check_close_at(at)
        await accepted(billing, header, account=account)
        with progress() as bar:
            task = bar.add_task("subscriptions", total=None)

            def step(done: CloseOutcome, total: int) -> None:
                bar.update(task, total=total, advance=done.subscriptions)

            return await billing.close_period(
                account_id=account, at=at, batch_size=batch_size, on_batch=step
            )

    outcome = run(work)
    console.print(
        f"subscriptions {outcome.subscriptions}: renewed {outcome.renewed}, "
        f"invoices created {outcome.created}, already there {outcome.existing}, "
        f"nothing to bill {outcome.empty}, finalized at once {outcome.finalized}"
    )


@accounts_app.command("create")
def accounts_create(
    name: str,
    email: Annotated[str | None, typer.Option()] = None,
    currency: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Create an account."""
    # Validated inside the run: a refused name, email or currency is the runner's one line.
    account = run(
        lambda b: b.create_account(AccountCreate(name=name, email=email, currency=currency))
    )
    console.print(f"account {account.id} ({account.name}, {account.currency})")


@accounts_app.command("update")
def accounts_update(
    account_id: str,
    name: Annotated[str | None, typer.Option()] = None,
    email: Annotated[str | None, typer.Option(help='"" removes it')] = None,
    tax_rate: Annotated[
        str | None, typer.Option(help='a fraction, e.g. 0.19; "default" for the configured rate')
    ] = None,
    tax_exempt: Annotated[bool | None, typer.Option("--tax-exempt/--no-tax-exempt")] = None,
) -> None:
    """Change an account's name, email or tax settings (what is given; never its currency)."""
    fields: dict[str, object] = {}
    if name is not None:
        fields["name"] = name
    if email is not None:
        fields["email"] = email or None
    if tax_rate is not None:
        fields["tax_rate"] = None if tax_rate == "default" else tax_rate
    if tax_exempt is not None:
        fields["tax_exempt"] = tax_exempt
    if not fields:
        fail("nothing to change: give --name, --email, --tax-rate or --tax-exempt")
    # Validated inside the run, as `create`: a refused value is the runner's one line.
    account = run(lambda b: b.update_account(account_id, AccountUpdate.model_validate(fields)))
    rate = "exempt" if account.tax_exempt else (account.tax_rate or "default rate")
    console.print(f"account {account.id} ({account.name}, {account.email or 'no email'}, {rate})")


_ROLES = ("admin", "owner", "billing", "member")


@keys_app.command("create")
def api_keys_create(
    role: Annotated[str, typer.Option(help="admin, owner, billing or member")],
    account: Annotated[str | None, typer.Option(help="account id (not for admin)")] = None,
    name: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Issue an API key; the secret is printed once."""
    if role not in _ROLES:
        fail(f"--role must be one of {', '.join(_ROLES)}, not {role!r}")
    try:
        key, secret = run(lambda b: b.issue_api_key(account_id=account, role=role, name=name))
    except ValueError as exc:  # an admin key with an account, another one without
        fail(str(exc))
    console.print(f"key {key.id} role {key.role} (shown once):\n  {secret}")


@plans_app.command("list")
def plans_list() -> None:
    """The current version of every active plan."""

    async def work(billing: BillingService) -> tuple[list[Plan], Formats]:
        return await billing.list_plans(), Formats(billing.config.documents.locale)

    plans, fmt = run(work)
    table = Table("code", "version", "name", "prices", "api calls / mo", "tokens / mo")
    for plan in plans:
        prices = ", ".join(
            f"{fmt.money(p.amount_minor, p.currency)} {_cycle(p)}" for p in plan.prices
        )
        table.add_row(
            plan.code,
            str(plan.version),
            plan.name,
            prices,
            fmt.count(plan.limits.included_api_calls),
            fmt.count(plan.limits.included_tokens),
        )
    console.print(table)


def _cycle(price: PlanPrice) -> str:
    """monthly, yearly (as `accounts show` says it), or e.g. every 3 months."""
    if price.billing_cycle != "custom":
        return price.billing_cycle
    unit = price.interval_unit if price.interval_count == 1 else f"{price.interval_unit}s"
    return f"every {price.interval_count} {unit}"
