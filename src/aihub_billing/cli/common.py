"""What every command shares: the console, the clock, the configuration and a BillingService
per run, one-line failures."""

from __future__ import annotations

import asyncio
import json
import os
import re
import tomllib
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, ProgressColumn

from aihub_billing.config import (
    CONFIG_FILE_ENV,
    DEFAULT_CONFIG_FILE,
    ENV_PREFIX,
    BillingConfig,
    redacted_database_url,
)
from aihub_billing.errors import BillingError
from aihub_billing.kit.clock import Clock, SystemClock
from aihub_billing.kit.db import UNREACHABLE
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


def run(
    work: Callable[[BillingService], Awaitable[T]], *, config: BillingConfig | None = None
) -> T:
    """Runs `work` against a BillingService built from `config` (default: the environment's,
    see load_config). A BillingError (unknown account, refused action) or a ValidationError
    (the command's input refused by its schema) ends the command with its one-line message."""
    config = config or load_config()

    async def main() -> T:
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
    except ValidationError as exc:
        fail(f"validation_error: {validation_problems(exc)}")
    except UNREACHABLE as exc:
        database_unavailable(exc, config.database_url)


def database_unavailable(exc: BaseException, url: str | None = None) -> NoReturn:
    """Ends the command with one line (exit 1: nothing wrong with its input) naming why, and
    which database (a relative SQLite path depends on the directory the command runs in)."""
    reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300] or type(exc).__name__
    where = f" ({redacted_database_url(url)})" if url else ""
    fail(f"database_unavailable: {reason}{where}", code=1)


async def accepted(billing: BillingService, header: str, *, account: str | None = None) -> None:
    """Prints a command's header (what it is about to do) once its input is accepted, the
    account included when one is given: a refused command prints nothing but its error."""
    if account is not None:
        await billing.account(account)  # unknown: AccountNotFound, the command's one line
    else:
        await billing.db.ping()  # unreachable: the command's one line, not after the header
    console.print(header)


def load_config() -> BillingConfig:
    """The configuration (environment, .env, TOML file). One that cannot be read or is
    invalid ends the command with one line naming every problem, never a value given."""
    try:
        return BillingConfig()
    except ValidationError as exc:
        problems = validation_problems(exc)
    except SettingsError as exc:  # a value that is not JSON where a list or a table is due
        problems = _unparsable(exc)
    except tomllib.TOMLDecodeError as exc:
        problems = f"{os.environ.get(CONFIG_FILE_ENV) or DEFAULT_CONFIG_FILE}: {exc}"
    except OSError as exc:  # AIHUB_BILLING_CONFIG_FILE names a missing file, an unreadable one
        problems = str(exc)
    fail(f"invalid configuration: {problems}")


# Pydantic's prefixes for a validator's ValueError or assertion: noise on one line.
_VALIDATOR_PREFIX = re.compile(r"^(Value error|Assertion failed), ")


def validation_problems(exc: ValidationError) -> str:
    """Every error of `exc` as `loc: message`, joined by "; " (messages name no input)."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(part) for part in error["loc"])
        message = _VALIDATOR_PREFIX.sub("", error["msg"])
        problems.append(f"{loc}: {message}" if loc else message)
    return "; ".join(problems)


_SETTINGS_FIELD = re.compile(r'for field "(?P<field>[^"]+)" from source "(?P<source>[^"]+)"')


def _unparsable(exc: SettingsError) -> str:
    """pydantic-settings names the field only: name the variables (never their values) that
    are not valid JSON, with where each went wrong."""
    found = _SETTINGS_FIELD.search(str(exc))
    if found is None:
        return str(exc)
    field = found["field"]
    if found["source"] == "EnvSettingsSource":
        name = f"{ENV_PREFIX}{field}".upper()
        problems = []
        for variable, value in sorted(os.environ.items()):
            upper = variable.upper()
            # A nested variable (DUNNING__RETRY_DAYS) is JSON only for a list or a table.
            if upper == name or (
                upper.startswith(f"{name}__") and value.lstrip().startswith(("[", "{"))
            ):
                why = _json_error(value)
                if why is not None:
                    loc = upper.removeprefix(ENV_PREFIX).lower().replace("__", ".")
                    problems.append(f"{loc}: {variable} is not valid JSON ({why})")
        if problems:
            return "; ".join(problems)
    where = {"EnvSettingsSource": "the environment", "DotEnvSettingsSource": ".env"}
    cause = exc.__cause__
    why = f" ({cause})" if isinstance(cause, json.JSONDecodeError) else ""
    return f"{field}: its value in {where.get(found['source'], found['source'])} is not valid{why}"


def _json_error(value: str) -> str | None:
    """Why `value` is not JSON (position and reason: a JSONDecodeError never quotes it)."""
    try:
        json.loads(value)
    except json.JSONDecodeError as exc:
        return str(exc)
    except ValueError:
        return "not JSON"
    return None
