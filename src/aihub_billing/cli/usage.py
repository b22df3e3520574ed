"""`usage import`: usage events from a CSV or JSONL file, through the tracker behind
POST /usage/batch, one transaction per batch of rows (see usage/files.py for the ids)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from itertools import islice
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from aihub_billing.cli.common import accepted, console, fail, progress, run
from aihub_billing.cli.formats import Formats
from aihub_billing.errors import BillingError
from aihub_billing.service import BillingService
from aihub_billing.usage.files import FileRow, Format, UsageFile, UsageFileError

SHOWN_REJECTIONS = 10
_SUFFIXES: dict[str, Format] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class FileFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


@dataclass(frozen=True, slots=True)
class Rejection:
    line: int
    event_id: str | None
    code: str
    detail: str


@dataclass
class ImportOutcome:
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches: int = 0
    cost: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    rejections: list[Rejection] = field(default_factory=list)  # the first SHOWN_REJECTIONS
    stopped: str | None = None  # why the file could not be read to its end
    accounts: set[str] = field(default_factory=set)  # those with accepted events
    counters: str = ""  # what became of their quota counters
    counters_failed: bool = False

    def reject(self, rejection: Rejection) -> None:
        self.rejected += 1
        if len(self.rejections) < SHOWN_REJECTIONS:
            self.rejections.append(rejection)


def import_usage(
    file: Annotated[Path, typer.Argument(help="CSV (a header row names the columns) or JSONL")],
    account: Annotated[
        str | None, typer.Option(help="the account of every row (else an account_id column)")
    ] = None,
    file_format: Annotated[
        FileFormat | None,
        typer.Option("--format", help="default: from the extension (.csv, .jsonl, .ndjson)"),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="rows per transaction")] = 1000,
) -> None:
    """Record usage events from a file as POST /usage/batch would; re-running adds nothing.

    Columns (CSV) or keys (JSONL) are the event fields: usage_type, model, input_tokens,
    output_tokens, cached_input_tokens, status_code, event_id, timestamp, user_id,
    cost_center, latency_ms, storage_gb, metadata (JSON), reservation_id; and account_id.
    A row without event_id gets one derived from its fields and needs a timestamp.
    """
    fmt: Format | None = (
        _SUFFIXES.get(file.suffix.lower())
        if file_format is None
        else ("csv" if file_format is FileFormat.CSV else "jsonl")
    )
    if fmt is None:
        fail(f"{file}: say --format csv or --format jsonl (unknown extension {file.suffix!r})")
    try:
        usage_file = UsageFile(file, fmt)
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    except UsageFileError as exc:
        fail(f"{file}: {exc}")
    with usage_file:
        if fmt == "csv" and account is None and "account_id" not in usage_file.columns:
            fail(f"{file}: no account_id column; give --account")
        target = f"account {account}" if account else "the account_id of each row"
        header = (
            f"[bold]usage import[/] {file} ({fmt}, {usage_file.size:,} bytes) into {target}, "
            f"{batch_size:,} rows per transaction"
        )

        async def work(billing: BillingService) -> tuple[ImportOutcome, Formats]:
            # An unknown --account: the command fails, nothing read, no header.
            await accepted(billing, header, account=account)
            outcome = await _import(billing, usage_file, account, batch_size)
            await _rebuild_counters(billing, outcome)
            return outcome, Formats(billing.config.documents.locale)

        outcome, formats = run(work)
    _report(outcome, formats)
    if outcome.stopped is not None:
        fail(f"{file}: {outcome.stopped}; the batches before it are committed, re-run when fixed")
    if outcome.rejected or outcome.counters_failed:
        raise typer.Exit(1)


async def _rebuild_counters(billing: BillingService, outcome: ImportOutcome) -> None:
    """The imported usage reaches the live quota counters by period: a rebuild of each
    account that got some (BillingService.record_usage says why batches do not feed them)."""
    if not outcome.accounts:
        return
    if billing.config.redis_url is None:
        outcome.counters = (
            "quota counters are each server's own (no Redis): a server counts this usage "
            "from its next start"
        )
        return
    try:
        done = await billing.rebuild_quota(account_ids=sorted(outcome.accounts))
    except BillingError as exc:
        outcome.counters_failed = True
        outcome.counters = (
            f"quota counters not rebuilt ({exc.code}: {exc.detail}): "
            "run `aihub-billing quota rebuild` once the counters are reachable"
        )
        return
    outcome.counters = f"quota counters of {done.accounts:,} account(s) rebuilt from stored usage"


async def _import(
    billing: BillingService, usage_file: UsageFile, account: str | None, batch_size: int
) -> ImportOutcome:
    outcome = ImportOutcome()
    known: set[str] = {account} if account else set()
    unknown: set[str] = set()
    rows = usage_file.rows(account)
    with progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn()
    ) as bar:
        task = bar.add_task("rows 0", total=usage_file.size)
        while True:
            try:
                batch = list(islice(rows, batch_size))
            except UsageFileError as exc:
                outcome.stopped = str(exc)
                return outcome
            if not batch:
                return outcome
            new = {r.account_id for r in batch if r.account_id} - known - unknown
            if new:
                found = await billing.known_accounts(new)
                known |= found
                unknown |= new - found
            await _record(billing, batch, unknown, outcome)
            bar.update(task, completed=usage_file.position, description=f"rows {outcome.rows:,}")


async def _record(
    billing: BillingService, batch: list[FileRow], unknown: set[str], outcome: ImportOutcome
) -> None:
    """One batch, one transaction: each account's events go through the tracker together."""
    outcome.rows += len(batch)
    outcome.batches += 1
    groups: dict[str, list[FileRow]] = defaultdict(list)
    rejected: list[Rejection] = []
    for row in batch:
        if row.error is not None or row.event is None or row.account_id is None:
            rejected.append(Rejection(row.line, row.event_id, "invalid_row", row.error or ""))
        elif row.account_id in unknown:
            detail = f"no account {row.account_id!r}"
            rejected.append(Rejection(row.line, row.event_id, "account_not_found", detail))
        else:
            groups[row.account_id].append(row)
    if groups:
        events: list[tuple[str, list[dict[str, Any]]]] = [
            (acct, [r.event for r in rows if r.event is not None]) for acct, rows in groups.items()
        ]
        results = await billing.record_usage(events)
        for (acct, rows), result in zip(groups.items(), results, strict=True):
            if result.accepted:
                outcome.accounts.add(acct)
            outcome.accepted += result.accepted
            outcome.duplicates += result.duplicates
            for row, event in zip(rows, result.results, strict=True):
                if event.status == "rejected":
                    code, detail = event.code or "", event.detail or ""
                    rejected.append(Rejection(row.line, event.event_id, code, detail))
                elif event.status == "accepted" and event.cost is not None and event.currency:
                    outcome.cost[event.currency] += event.cost
    for rejection in sorted(rejected, key=lambda r: r.line):
        outcome.reject(rejection)


def _report(outcome: ImportOutcome, fmt: Formats) -> None:
    console.print(
        f"rows {outcome.rows:,} in {outcome.batches:,} batch(es): accepted {outcome.accepted:,}, "
        f"duplicates {outcome.duplicates:,} (already counted), rejected {outcome.rejected:,}"
    )
    if outcome.cost:
        costs = ", ".join(fmt.cost(c, cur) for cur, c in sorted(outcome.cost.items()))
        console.print(f"cost of the accepted events: {costs}")
    if outcome.counters:
        console.print(outcome.counters)
    if not outcome.rejections:
        return
    table = Table("line", "event id", "code", "detail", title="Rejected rows", title_justify="left")
    for r in outcome.rejections:
        table.add_row(str(r.line), r.event_id or "-", r.code, r.detail)
    if outcome.rejected > len(outcome.rejections):
        table.caption = f"and {outcome.rejected - len(outcome.rejections):,} more"
    console.print(table)
