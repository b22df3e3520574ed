"""What every command shares: the console, the clock, a BillingService per run, one-line
failures."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, ProgressColumn

from aihub_billing.config import BillingConfig
from aihub_billing.errors import BillingError
from aihub_billing.kit.clock import Clock, SystemClock
from aihub_billing.kit.logs import configure_logging
from aihub_billing.service import BillingService

T = TypeVar("T")

# soft_wrap: keys and URLs stay on one line, so they can be copied.
console = Console(soft_wrap=True)
if not console.is_terminal and "COLUMNS" not in os.environ:
    # Piped or redirected, Rich would fit tables to 80 columns and cut ids short; a file or
    # a pager takes whole lines.
    console.width = 200
# Every command's BillingService reads the time here (tests put a FrozenClock in).
clock: Clock = SystemClock()


def progress(*columns: str | ProgressColumn) -> Progress:
    """A progress bar that goes away when done, and is not drawn at all when the output is
    not a terminal (a log file would keep every redraw)."""
    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal)


def fail(message: str, code: int = 2) -> NoReturn:
    """Prints one line saying what is wrong and exits with `code` (2: nothing was done)."""
    console.print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def run(work: Callable[[BillingService], Awaitable[T]]) -> T:
    """Runs `work` against a BillingService built from the environment; a BillingError
    (unknown account, refused action) ends the command with its one-line message."""

    async def main() -> T:
        config = BillingConfig()
        configure_logging(config.log_level, json=config.log_json)
        billing = BillingService(config, clock=clock)
        try:
            return await work(billing)
        finally:
            await billing.close()

    try:
        return asyncio.run(main())
    except BillingError as exc:
        fail(f"{exc.code}: {exc.detail}")
