"""The operator CLI against a real SQLite file: migrate, seed, accounts, keys, plans, worker."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aihub_billing import cli
from aihub_billing.cli import app
from aihub_billing.jobs.registry import registry

runner = CliRunner()


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
    assert "29.99 USD/monthly" in plans and "100,000,000" in plans

    created = invoke("accounts", "create", "Acme", "--currency", "EUR")
    account_id = re.search(r"account (acct_\w+) \(Acme, EUR\)", created)
    assert account_id, created
    key = invoke("api-keys", "create", "--role", "owner", "--account", account_id.group(1))
    assert re.search(r"role owner .*\n\s+ahb_", key)
    admin = invoke("api-keys", "create", "--role", "admin")
    assert "role admin" in admin

    assert f"ran {len(registry.periodic)} job(s)" in invoke("worker", "--once")  # one per periodic job


def test_bad_key_requests_exit_2(env: Path) -> None:
    invoke("migrate")
    result = runner.invoke(app, ["api-keys", "create", "--role", "owner"])
    assert result.exit_code == 2 and "need an account" in result.output
