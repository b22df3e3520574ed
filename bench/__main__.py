"""Runs every benchmark and prints one table; `python -m bench --quick` for a short run."""

from __future__ import annotations

import argparse
import asyncio
from types import ModuleType

from rich.console import Console
from rich.table import Table

from aihub_billing.kit.logs import configure_logging
from bench import api, invoice_pdf, invoices, jobs, quota, usage
from bench.common import Result


async def main(quick: bool, suites: tuple[ModuleType, ...]) -> None:
    configure_logging("WARNING")  # a log line per job would drown the figures
    console = Console(width=150)
    results: list[Result] = []
    for suite in suites:
        console.print(
            f"[bold]>> {suite.__name__}[/] {suite.__doc__.strip() if suite.__doc__ else ''}"
        )
        results += await suite.run(quick=quick, console=console)
    table = Table(
        "benchmark", "backend", "figure", "baseline", "baseline figure", "ratio", "target"
    )
    for r in results:
        table.add_row(
            r.name,
            r.backend,
            r.figure_text(),
            r.baseline or "-",
            r.baseline_text(),
            r.ratio_text(),
            r.target or "-",
        )
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument(
        "--usage-events", type=int, help="events behind the stats benchmark (default 10M)"
    )
    parser.add_argument(
        "--usage-batch-only", action="store_true", help="only the /usage/batch benchmark"
    )
    parser.add_argument(
        "--only", help="comma-separated suites to run, e.g. invoice_pdf (default: all)"
    )
    parser.add_argument(
        "--invoice-events", type=int, help="usage events behind period close (default 10M)"
    )
    parser.add_argument(
        "--invoice-accounts", type=int, help="accounts closed by period close (default 5,000)"
    )
    parser.add_argument("--invoice-workers", type=int, help="period-close processes (default 2)")
    parser.add_argument("--invoices-only", action="store_true", help="only period close")
    args = parser.parse_args()
    invoices.settings["events"] = args.invoice_events
    invoices.settings["accounts"] = args.invoice_accounts
    invoices.settings["workers"] = args.invoice_workers
    usage.settings["stats_events"] = args.usage_events
    usage.settings["batch_only"] = args.usage_batch_only
    suites: tuple[ModuleType, ...] = (api, jobs, quota, usage, invoices, invoice_pdf)
    if args.usage_batch_only:
        suites = (usage,)
    elif args.invoices_only:
        suites = (invoices,)
    elif args.only:
        wanted = set(args.only.split(","))
        suites = tuple(s for s in suites if s.__name__.removeprefix("bench.") in wanted)
        if not suites:
            parser.error(f"--only: no suite named {args.only!r}")
    asyncio.run(main(args.quick, suites))
