"""Fixtures: every storage test runs on SQLite and again on PostgreSQL (schema by migrations)."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from aihub_billing.accounts.changes import on_limits_change
from aihub_billing.config import BillingConfig
from aihub_billing.kit.clock import FrozenClock
from aihub_billing.main import create_app
from aihub_billing.models import Base
from aihub_billing.service import BillingService, migrate_database
from tests.backends import (
    IN_CI,
    PG_ERROR,
    REDIS_ERROR,
    REDIS_URL,
    require,
    throwaway_postgres,
)

# The developer's own settings must not leak into the tests.
for name in list(os.environ):
    if name.startswith("AIHUB_BILLING_") and not name.startswith("AIHUB_BILLING_TEST_"):
        del os.environ[name]

BACKENDS = ["sqlite", "postgresql"]


def pytest_report_header(config: pytest.Config) -> list[str]:
    pg = "up" if PG_ERROR is None else f"DOWN ({PG_ERROR})"
    rd = "up" if REDIS_ERROR is None else f"DOWN ({REDIS_ERROR})"
    mode = "required (CI=true)" if IN_CI else "skipped when down"
    return [f"aihub-billing backends: sqlite always; postgresql {pg}; redis {rd}; {mode}"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for service, error in (("PostgreSQL", PG_ERROR), ("Redis", REDIS_ERROR)):
        if error is not None:
            terminalreporter.write_line(
                f"NOTE: {service} was unreachable: its tests were skipped ({error})", yellow=True
            )


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("db") / "billing.db"
    url = f"sqlite+aiosqlite:///{path}"
    migrate_database(url)
    return url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with throwaway_postgres("aihub_billing_test") as url:
        migrate_database(url)
        yield url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """Parametrizes a test over both databases."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return str(request.getfixturevalue("sqlite_url"))


@pytest.fixture
def redis_url() -> str:
    require("Redis", REDIS_ERROR)
    return REDIS_URL


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 1, 31, 12, 0, tzinfo=UTC))


def free_port() -> int:
    """A TCP port nothing listens on now, for a server a test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_config(database_url: str, **overrides: object) -> BillingConfig:
    # Stored PDFs cost ~0.3 s of CPU per invoice change; tests/invoices/test_pdf.py turns them
    # on, the rest of the suite asks for PDFs only where it reads them.
    overrides.setdefault("documents", {"store": False})
    return BillingConfig(
        environment="test", database_url=database_url, embedded_worker=False, **overrides
    )


async def wipe(billing: BillingService) -> None:
    """Empties every table: tests commit for real (the entrypoint owns the transaction).

    DELETE, children first, on PostgreSQL too: a test leaves a few rows, and TRUNCATE of
    every table took some 200 ms (new files for every table and partition) against 20 ms,
    twice for each PostgreSQL test.
    """
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with billing.db.engine.begin() as conn:
        for table in tables:
            await conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
def config_overrides() -> dict[str, object]:
    """Settings of the `billing` fixtures' config; a test module overrides this fixture, e.g.
    with `notifications_allow_private_targets` for webhook receivers on 127.0.0.1."""
    return {}


@pytest.fixture
async def billing(
    database_url: str, clock: FrozenClock, config_overrides: dict[str, object]
) -> AsyncIterator[BillingService]:
    service = BillingService(make_config(database_url, **config_overrides), clock=clock)
    await wipe(service)
    try:
        yield service
    finally:
        await wipe(service)
        await service.close()


@pytest.fixture
async def client(billing: BillingService) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(billing=billing)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


@pytest.fixture
async def admin_key(billing: BillingService) -> str:
    result = await billing.bootstrap()
    assert result.admin_secret is not None
    return result.admin_secret


@pytest.fixture
def limits_changes() -> Iterator[list[str]]:
    """The account ids the `on_limits_change` hooks are told of during the test, in order."""
    seen: list[str] = []

    async def hook(account_id: str) -> None:
        seen.append(account_id)

    on_limits_change.append(hook)
    yield seen
    on_limits_change.remove(hook)
