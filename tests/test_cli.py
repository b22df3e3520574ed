"""The operator CLI through Typer's runner: migrate, seed, accounts, keys, plans, worker on a
SQLite file; accounts show, invoices list, usage import and quota rebuild on both databases."""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import pytest
from click.testing import Result
from typer.testing import CliRunner

from aihub_billing import cli
from aihub_billing.cli import app, common
from aihub_billing.cli.invoices import Status
from aihub_billing.creditnotes.schemas import BalanceAdjustmentCreate
from aihub_billing.creditnotes.service import credit_notes
from aihub_billing.invoices.service import invoices
from aihub_billing.jobs.registry import registry
from aihub_billing.kit.clock import FrozenClock
from aihub_billing.models.invoice import INVOICE_STATUSES
from aihub_billing.service import BillingService
from aihub_billing.subscriptions.schemas import SubscriptionCreate
from aihub_billing.subscriptions.service import subscriptions
from aihub_billing.usage.service import usage
from tests.conftest import free_port, make_config, wipe

runner = CliRunner()
T = TypeVar("T")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AIHUB_BILLING_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("AIHUB_BILLING_ENVIRONMENT", "test")
    monkeypatch.setattr(cli.console, "width", 200)  # tables unwrapped, as on a wide terminal
    return tmp_path


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_operator_workflow(env: Path) -> None:
    assert "database is at head" in invoke("migrate")
    seeded = invoke("seed")
    assert "plans created: free, pro, enterprise" in seeded
    assert re.search(r"ahb_[A-Za-z0-9_-]{40,}", seeded)
    assert "already present" in invoke("seed")

    plans = invoke("plans", "list")
    # Babel-formatted from the minor units, as `accounts show` prints a subscription's price.
    assert "$29.99 monthly" in plans and "$0.00 monthly" in plans and "100,000,000" in plans
    assert "USD/" not in plans

    created = invoke("accounts", "create", "Acme", "--currency", "EUR")
    account_id = re.search(r"account (acct_\w+) \(Acme, EUR\)", created)
    assert account_id, created
    key = invoke("api-keys", "create", "--role", "owner", "--account", account_id.group(1))
    assert re.search(r"role owner .*\n\s+ahb_", key)
    admin = invoke("api-keys", "create", "--role", "admin")
    assert "role admin" in admin

    assert f"ran {len(registry.periodic)} job(s)" in invoke(
        "worker", "--once"
    )  # one per periodic job


def test_bad_key_requests_exit_2(env: Path) -> None:
    invoke("migrate")
    result = runner.invoke(app, ["api-keys", "create", "--role", "owner"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: keys other than admin keys need an account"


# --- the operator commands on a database with data: both databases, a frozen clock ---------

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _service(url: str, **overrides: object) -> BillingService:
    return BillingService(make_config(url, **overrides), clock=common.clock)


def _in_service(url: str, work: Callable[[BillingService], Awaitable[T]], **over: object) -> T:
    """Runs `work` against the CLI's database in a service of its own (test setup, checks)."""

    async def main() -> T:
        billing = _service(url, **over)
        try:
            return await work(billing)
        finally:
            await billing.close()

    return asyncio.run(main())


# The import runs on both databases; the read-only commands on SQLite (their queries are the
# domain services', tested on both in their own modules).
@pytest.fixture
def db(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The CLI on an emptied, migrated database (SQLite, then PostgreSQL), seeded, at NOW."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AIHUB_BILLING_DATABASE_URL", database_url)
    monkeypatch.setenv("AIHUB_BILLING_ENVIRONMENT", "test")
    monkeypatch.setenv("AIHUB_BILLING_INVOICE_FINALIZE_AFTER_SECONDS", "0")
    monkeypatch.setenv("AIHUB_BILLING_DOCUMENTS__STORE", "false")
    monkeypatch.setattr(cli.console, "width", 200)
    monkeypatch.setattr(common, "clock", FrozenClock(NOW))
    _in_service(database_url, wipe)
    invoke("seed")
    yield database_url
    _in_service(database_url, wipe)


def run_cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


def new_account(name: str) -> str:
    created = re.search(r"account (acct_\w+)", invoke("accounts", "create", name))
    assert created, name
    return created.group(1)


def subscribe(url: str, account_id: str, credit_minor: int = 0) -> None:
    """The pro plan from NOW (and account credit first, which its first invoice uses)."""

    async def work(billing: BillingService) -> None:
        ctx = billing.context()
        async with billing.transaction() as session:
            if credit_minor:
                adjustment = BalanceAdjustmentCreate(
                    amount_minor=credit_minor, currency="USD", description="goodwill"
                )
                await credit_notes.adjust_balance(session, ctx, account_id, adjustment)
            data = SubscriptionCreate(
                plan_type="pro",
                account_id=account_id,
                payment_provider="stripe",
                payment_method_id="pm_card_visa",
            )
            await subscriptions.create(session, ctx, data)

    _in_service(url, work)


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def month_stats(url: str, account_id: str) -> dict[str | None, tuple[int, Decimal]]:
    """Requests and exact cost per model this month, as /usage/stats answers."""

    async def work(billing: BillingService) -> dict[str | None, tuple[int, Decimal]]:
        async with billing.db.sessions() as session:
            stats = await usage.stats(
                session,
                billing.context(),
                account_id=account_id,
                start=None,
                end=None,
                group_by="model",
            )
        return {row.group: (row.requests, row.cost) for row in stats.rows}

    return _in_service(url, work)


# gpt-4o: 2.50 / 10.00 / cached 1.25 USD per 1M tokens; gpt-4o-mini: 0.15 / 0.60.
USAGE_CSV = """\
model,input_tokens,output_tokens,cached_input_tokens,event_id,timestamp,user_id,metadata
gpt-4o,1000,200,,e1,2026-03-10T12:00:00Z,u1,
gpt-4o , 2000 ,100,500,,2026-03-10T12:00:00Z,u1,"{""team"": ""search""}"
gpt-4o-mini,10000,1000,,e3,2026-03-02T08:00:00Z,u2,
gpt-4o,1000,200,,e1,2026-03-10T12:00:00Z,u1,
no-such-model,1,1,,e5,2026-03-10T12:00:00Z,,
gpt-4o,-5,1,,e6,2026-03-10T12:00:00Z,,
gpt-4o,5,1,,e7,2026-03-10T12:00:00Z,,{not json
gpt-4o,5,1,,,,,
"""
E1, E2, E3 = Decimal("0.0045"), Decimal("0.005375"), Decimal("0.0021")


def test_usage_import_csv_then_jsonl_counts_once_and_reports_rejections(db: str) -> None:
    account_id = new_account("Importer")
    csv_file = write(Path("usage.csv"), USAGE_CSV)
    first = run_cli("usage", "import", csv_file, "--account", account_id, "--batch-size", "3")
    # Rejected rows make the exit code 1; the accepted ones are committed.
    assert first.exit_code == 1, first.output
    assert "rows 8 in 3 batch(es): accepted 3, duplicates 1" in first.output
    assert "rejected 4" in first.output
    assert "cost of the accepted events: $0.01197" in first.output  # E1 + E2 + E3, exact
    rejected = re.findall(r"│ (\d+)\s+│ (\S+)\s+│ (\w+)\s+│ ([^│]+?)\s+│", first.output)
    assert [(line, code) for line, _, code, _ in rejected] == [
        ("6", "unknown_model"),
        ("7", "validation_error"),
        ("8", "invalid_row"),
        ("9", "invalid_row"),
    ]
    assert "no price for 'no-such-model'" in first.output
    assert "input_tokens: Input should be greater than or equal to 0" in first.output
    assert "metadata: not valid JSON" in first.output
    assert "a row without event_id needs one" in first.output

    # The same file again (in other batches): every event was counted already.
    again = run_cli("usage", "import", csv_file, "--account", account_id)
    assert "rows 8 in 1 batch(es): accepted 0, duplicates 4" in again.output, again.output
    assert month_stats(db, account_id) == {"gpt-4o": (2, E1 + E2), "gpt-4o-mini": (1, E3)}

    other = new_account("Other")
    jsonl_file = write(
        Path("usage.jsonl"),
        "\n".join(
            [
                f'{{"account_id": "{account_id}", "model": "gpt-4o", "input_tokens": 1000, '
                '"output_tokens": 200, "event_id": "e1", "timestamp": "2026-03-10T12:00:00Z"}',
                "",  # blank lines are skipped, their numbers still count
                f'{{"account_id": "{other}", "model": "gpt-4o-mini", "input_tokens": 2000, '
                '"timestamp": "2026-03-09T00:00:00Z", "metadata": {"k": 1}}',
                '{"account_id": "acct_unknown", "model": "gpt-4o", '
                '"timestamp": "2026-03-10T12:00:00Z"}',
                "[1, 2]",
                f'{{"account_id": "{other}", "usage_type": "storage", "storage_gb": "1.5", '
                '"timestamp": "2026-03-10T11:00:00Z"}',
            ]
        )
        + "\n",
    )
    result = run_cli("usage", "import", jsonl_file)
    assert result.exit_code == 1, result.output
    assert "rows 5 in 1 batch(es): accepted 2, duplicates 1" in result.output
    assert re.search(
        r"│ 4\s+│ imp_[0-9a-f]{32} │ account_not_found │ no account 'acct_unknown'", result.output
    )
    assert re.search(r"│ 5\s+│ -\s+│ invalid_row\s+│ not a JSON object", result.output)
    rerun = run_cli("usage", "import", jsonl_file)
    assert "accepted 0, duplicates 3 (already counted), rejected 2" in rerun.output, rerun.output
    assert month_stats(db, other) == {"gpt-4o-mini": (1, Decimal("0.0003"))}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_accounts_show_subscription_quota_usage_balance_invoices(db: str) -> None:
    account_id = new_account("Acme")
    subscribe(db, account_id, credit_minor=500)
    run_cli("usage", "import", write(Path("u.csv"), USAGE_CSV), "--account", account_id)
    closed = invoke("close-period")
    assert "invoices created 1" in closed
    assert "close-period every account, periods ended by now" in closed  # the header

    async def more_credit(billing: BillingService) -> None:
        async with billing.transaction() as session:
            data = BalanceAdjustmentCreate(amount_minor=750, currency="USD", description="x")
            await credit_notes.adjust_balance(session, billing.context(), account_id, data)

    _in_service(db, more_credit)
    shown = invoke("accounts", "show", account_id)
    assert f"Account {account_id}" in shown and "Acme" in shown
    assert "pro v1 (Pro)" in shown and ": active" in shown and "$29.99 monthly" in shown
    assert "2026-04-10 12:00 UTC" in shown  # period end
    # The quota counts the period from the subscription's start (NOW): e1 and e2 only.
    assert re.search(r"calls / period\s+│ 2\s+│ 10,000\s+│ 9,998 ", shown), shown
    assert re.search(r"tokens / period\s+│ 3,300\s+│ 1,000,000\s+│ 996,700 ", shown), shown
    # This month: e3 (March 2) too, with exact unrounded costs.
    assert re.search(r"gpt-4o\s+│ 2\s+│ 3,000\s+│ 500\s+│ 300\s+│ \$0\.009875 ", shown), shown
    assert re.search(r"gpt-4o-mini\s+│ 1\s+│ 10,000 .*│ \$0\.0021 ", shown), shown
    assert re.search(r"total USD\s+│ 3\s+│.*│ \$0\.011975 ", shown), shown
    assert re.search(r"│ USD\s+│ \$7\.50 │", shown), shown  # 5.00 went to the invoice
    # The first invoice: $29.99, $5.00 of credit applied.
    assert re.search(
        r"INV-2026-000001 │ open\s+│ \$29\.99 │ +\$24\.99 │ 2026-03-10 – 2026-04-10",
        shown,
    ), shown


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_invoices_list_filters_by_account_and_status(db: str) -> None:
    first, second = new_account("First"), new_account("Second")
    subscribe(db, first)
    subscribe(db, second)
    assert "invoices created 2" in invoke("close-period")

    async def pay_second(billing: BillingService) -> dict[str, str]:
        listed = await billing.list_invoices()
        async with billing.transaction() as session:
            for inv in listed:
                if inv.account_id == second:
                    await invoices.mark_paid(session, billing.context(), inv.id or "")
        return {inv.account_id: inv.number or "" for inv in listed}

    numbers = _in_service(db, pay_second)
    listed = invoke("invoices", "list")
    assert "2 invoice(s)" in listed and numbers[first] in listed and numbers[second] in listed
    assert listed.index(numbers[second]) < listed.index(numbers[first])  # newest first

    paid = invoke("invoices", "list", "--status", "paid")
    assert "1 invoice(s)" in paid and numbers[second] in paid and numbers[first] not in paid
    assert re.search(r"│ paid\s+│ \$29\.99 │ +\$0\.00 │", paid), paid  # nothing owed
    open_ = invoke("invoices", "list", "--status", "open", "--account", first)
    assert "1 invoice(s)" in open_ and numbers[first] in open_ and numbers[second] not in open_
    assert re.search(r"│ open\s+│ \$29\.99 │ +\$29\.99 │", open_), open_
    assert "nothing" not in invoke("invoices", "list", "--account", second, "--status", "open")
    assert "0 invoice(s)" in invoke("invoices", "list", "--account", second, "--status", "open")
    assert "1 invoice(s)" in invoke("invoices", "list", "--limit", "1")
    assert "invoices every account, newest 20 at most" in listed  # the header, once accepted

    unknown = run_cli("invoices", "list", "--account", "acct_missing")
    assert unknown.exit_code == 2
    assert "error: account_not_found: no account 'acct_missing'" in unknown.output
    assert run_cli("invoices", "list", "--status", "late").exit_code == 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_quota_rebuild_sets_the_counters_to_stored_usage(
    db: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    monkeypatch.setenv("AIHUB_BILLING_REDIS_URL", redis_url)
    monkeypatch.setenv("AIHUB_BILLING_QUOTA_KEY_PREFIX", prefix)
    redis = {"redis_url": redis_url, "quota_key_prefix": prefix}
    first, second = new_account("First"), new_account("Second")
    csv_file = write(Path("u.csv"), USAGE_CSV)
    for account_id in (first, second):
        imported = run_cli("usage", "import", csv_file, "--account", account_id)
        assert "quota counters of 1 account(s) rebuilt from stored usage" in imported.output

    async def counters(billing: BillingService) -> dict[str, tuple[int, int]]:
        async with billing.db.sessions() as session:
            ctx = billing.context()
            used = {}
            for account_id in (first, second):
                status = await billing.quota.status(session, ctx, account_id)
                used[account_id] = (status.used_calls, status.used_tokens)
            return used

    async def corrupt(billing: BillingService) -> None:
        async with billing.db.sessions() as session:
            for account_id in (first, second):
                limits = await billing.quota.limits(session, billing.context(), account_id)
                await billing.quota.engine.load(
                    account_id,
                    limits.period_key,
                    limits.period.end,
                    NOW,
                    calls=999,
                    tokens=5,
                    force=True,
                )

    async def clean(billing: BillingService) -> None:
        assert billing.redis is not None
        async for key in billing.redis.scan_iter(match=f"{prefix}*", count=500):
            await billing.redis.delete(key)

    try:
        # The free plan's period starts at the account's creation (NOW): e3 is older. Fed
        # live per batch, it would count too; rebuilt after the import, it does not.
        stored = (2, 1200 + 2100)
        assert _in_service(db, counters, **redis) == {first: stored, second: stored}
        _in_service(db, corrupt, **redis)
        one = invoke("quota", "rebuild", "--account", first)
        assert f"quota rebuild account {first}" in one and "counters rebuilt 1" in one
        assert _in_service(db, counters, **redis) == {first: stored, second: (999, 5)}
        missing = run_cli("quota", "rebuild", "--account", "acct_missing")
        # Refused before anything is done: the error line only, no "quota rebuild" header.
        assert (missing.exit_code, missing.output) == (
            2,
            "error: account_not_found: no account 'acct_missing'\n",
        )
        every = invoke("quota", "rebuild")
        assert "accounts 2: counters rebuilt 2" in every
        assert _in_service(db, counters, **redis) == {first: stored, second: stored}
    finally:
        _in_service(db, clean, **redis)


def assert_one_line(result: Result, line: str) -> None:
    """The command was refused: exit code 2 and nothing printed but its error line."""
    assert (result.exit_code, result.output) == (2, line + "\n"), result.output


def test_bad_input_is_one_line_and_exit_2(env: Path) -> None:
    invoke("migrate")
    missing = "error: account_not_found: no account 'acct_missing'"
    write(env / "bad.csv", "model,tokens\n")
    write(env / "plain.csv", "model,timestamp\n")
    for args, message in [
        (["accounts", "show", "acct_missing"], missing),
        (["usage", "import", "missing.csv", "--account", "a"], "error: cannot read missing.csv"),
        (["usage", "import", "events.txt"], "say --format csv or --format jsonl"),
        (["quota", "rebuild"], "AIHUB_BILLING_REDIS_URL is not set"),
        (["usage", "import", "bad.csv", "--account", "a"], "unknown column(s) 'tokens'"),
        (["usage", "import", "plain.csv"], "no account_id column; give --account"),
    ]:
        result = run_cli(*args)
        assert (result.exit_code, result.output.strip().count("\n")) == (2, 0), result.output
        assert result.output.startswith("error: ") and message in result.output
    # Refused before anything is done: no header line ("close-period account …") first.
    for args in [
        ["close-period", "--at", "2026-03-10T00:00:00Z", "--account", "acct_missing"],
        ["invoices", "list", "--account", "acct_missing"],
        ["usage", "import", "plain.csv", "--account", "acct_missing"],
    ]:
        assert_one_line(run_cli(*args), missing)
    assert_one_line(
        run_cli("close-period", "--at", "2099-03-10T00:00:00Z"),
        "error: invalid_request: `at` is in the future: only closed periods are invoiced",
    )


def test_invalid_input_is_one_validation_error_line(env: Path) -> None:
    """Pydantic refusing a command's input: every error on one line, exit code 2."""
    invoke("migrate")
    for args, line in [
        (
            ["accounts", "create", "Bad Cur", "--currency", "XYZ"],
            "error: validation_error: currency: unknown currency code: 'XYZ'",
        ),
        (
            ["accounts", "create", ""],
            "error: validation_error: name: String should have at least 1 character",
        ),
        (
            ["accounts", "create", "Gold Bank", "--currency", "xau"],
            "error: validation_error: currency: XAU (Gold) is not legal tender in use: "
            "choose a current currency",
        ),
        (
            ["accounts", "create", "   "],
            "error: validation_error: name: must not be blank",
        ),
        (
            ["accounts", "create", "X", "--email", "notanemail"],
            "error: validation_error: email: String should match pattern '^[^@\\s]+@[^@\\s]+$'",
        ),
        (
            ["accounts", "create", "", "--currency", "XYZ"],
            "error: validation_error: name: String should have at least 1 character; "
            "currency: unknown currency code: 'XYZ'",
        ),
        (
            ["api-keys", "create", "--role", "superuser", "--account", "acct_x"],
            "error: --role must be one of admin, owner, billing, member, not 'superuser'",
        ),
    ]:
        assert_one_line(run_cli(*args), line)
    assert "account acct_" in invoke("accounts", "create", "Good", "--currency", "eur")


def test_accounts_update_changes_only_what_is_given(env: Path) -> None:
    invoke("migrate")
    account_id = new_account("Acme")
    changed = invoke(
        "accounts", "update", account_id, "--name", "Acme GmbH", "--email", "ap@acme.test",
        "--tax-rate", "0.19",
    )  # fmt: skip
    assert f"account {account_id} (Acme GmbH, ap@acme.test, 0.19)" in changed
    cleared = invoke("accounts", "update", account_id, "--email", "", "--tax-rate", "default")
    assert f"account {account_id} (Acme GmbH, no email, default rate)" in cleared
    assert "exempt" in invoke("accounts", "update", account_id, "--tax-exempt")
    for args, line in [
        (
            [account_id],
            "error: nothing to change: give --name, --email, --tax-rate or --tax-exempt",
        ),
        ([account_id, "--name", "   "], "error: validation_error: name: must not be blank"),
        (["acct_missing", "--name", "X"], "error: account_not_found: no account 'acct_missing'"),
    ]:
        assert_one_line(run_cli("accounts", "update", *args), line)


SECRET = "sk_live_0123456789abcdefSECRET"
# Every command that reads the configuration, and one run of each (none gets that far).
CONFIG_COMMANDS = [
    ["migrate"],
    ["seed"],
    ["serve", "--port", "1"],
    ["worker", "--once"],
    ["close-period"],
    ["accounts", "create", "X"],
    ["accounts", "show", "acct_x"],
    ["api-keys", "create", "--role", "admin"],
    ["plans", "list"],
    ["invoices", "list"],
    ["usage", "import", "usage.csv", "--account", "acct_x"],
    ["quota", "rebuild"],
]


@pytest.mark.parametrize(
    ("variables", "line"),
    [
        (
            {"DUNNING__RETRY_DAYS": "[1,3"},
            "dunning.retry_days: AIHUB_BILLING_DUNNING__RETRY_DAYS is not valid JSON "
            "(Expecting ',' delimiter: line 1 column 5 (char 4))",
        ),
        (
            {"DUNNING__RETRY_DAYS": "[3, 1]", "LOG_LEVEL": "LOUD"},
            "dunning.retry_days: retry_days are strictly increasing whole days >= 1; "
            "log_level: log_level must be one of ['CRITICAL', 'DEBUG', 'ERROR', 'INFO', "
            "'WARNING']",
        ),
        (
            {"STRIPE__ENABLED": "true", "STRIPE__API_KEY": SECRET},
            "invalid development config: stripe.api_key is a live key (sk_live_/rk_live_); "
            "not allowed in development",
        ),
        (
            {"STRIPE": f'{{"api_key": "{SECRET}"'},
            "stripe: AIHUB_BILLING_STRIPE is not valid JSON",
        ),
        (
            {"ENVIRONMENT": "production"},
            "invalid production config: encryption_enabled must be true in production",
        ),
        (
            {"CONFIG_FILE": "missing.toml"},
            "AIHUB_BILLING_CONFIG_FILE points to a missing file: missing.toml",
        ),
        ({"CONFIG_FILE": "broken.toml"}, "broken.toml: Expected '=' after a key"),
    ],
    ids=["json", "several", "live-key", "secret-json", "production", "no-file", "toml"],
)
def test_invalid_configuration_is_one_line_and_exit_2(
    env: Path, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], line: str
) -> None:
    write(env / "usage.csv", "model,timestamp\n")
    write(env / "broken.toml", "[dunning]\nretry_days\n")
    monkeypatch.setenv("AIHUB_BILLING_ENVIRONMENT", "development")
    for name, value in variables.items():
        monkeypatch.setenv(f"AIHUB_BILLING_{name}", value)
    for args in CONFIG_COMMANDS:
        result = run_cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith("error: invalid configuration: "), (args, result.output)
        assert result.output.count("\n") == 1 and line in result.output, (args, result.output)
        assert "SECRET" not in result.output


def test_invoice_status_choices_are_the_models() -> None:
    assert tuple(Status) == INVOICE_STATUSES


def test_serve_on_a_busy_port_is_one_line_before_any_work(env: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port))
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: cannot listen on 127.0.0.1:{port}: ")
    assert result.output.count("\n") == 1  # nothing migrated, seeded or started first
    assert not (env / "cli.db").exists()


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """A serve that gets as far as starting uvicorn fails the test instead of serving."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("serve started uvicorn")

    monkeypatch.setattr(cli.uvicorn, "run", refuse)


def test_serve_several_workers_without_redis_is_one_line_before_any_work(
    env: Path, no_server: None
) -> None:
    # Each uvicorn worker would count quota in its own memory: N workers admit N times a limit.
    result = run_cli("serve", "--workers", "2", "--port", str(free_port()))
    assert_one_line(
        result,
        "error: --workers 2 needs AIHUB_BILLING_REDIS_URL: in-process quota counters "
        "(and caches) are exact for one process only",
    )
    assert not (env / "cli.db").exists()  # nothing migrated or seeded first


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_serve_needs_at_least_one_worker(env: Path, no_server: None, workers: str) -> None:
    result = run_cli("serve", "--workers", workers, "--port", str(free_port()))
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--workers'" in result.output
    assert not (env / "cli.db").exists()


@pytest.mark.parametrize("args", [["migrate"], ["plans", "list"], ["invoices", "list"]])
def test_an_unreachable_database_is_one_line(
    env: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once it is closed
    monkeypatch.setenv(
        "AIHUB_BILLING_DATABASE_URL", f"postgresql+asyncpg://postgres:pw@127.0.0.1:{port}/x"
    )
    result = run_cli(*args)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[-1].startswith("error: database_unavailable: "), result.output
    assert lines[-1].endswith(f"(postgresql+asyncpg://postgres:***@127.0.0.1:{port}/x)")
    # No traceback; only `migrate` says what it is about to do before it connects.
    assert len(lines) == (2 if args == ["migrate"] else 1), result.output
    assert "pw" not in result.output
