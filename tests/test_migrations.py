"""Alembic migrations on a fresh SQLite file and a fresh PostgreSQL database.

The migrated schema must match the models exactly (autogenerate finds nothing to do), the
migrations must be reversible, and running them again on a migrated database changes nothing.
The tests are sync: migrate_database runs alembic, which calls asyncio.run itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from aihub_billing.kit.db import create_engine
from aihub_billing.models import Base, include_in_migrations
from aihub_billing.service import ROOT, migrate_database
from tests.backends import throwaway_postgres


def alembic_config(url: str) -> AlembicConfig:
    """The Config migrate_database builds, for the commands it does not wrap."""
    cfg = AlembicConfig(str(ROOT / "alembic.ini"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["skip_logging_config"] = True
    return cfg


HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a database nobody has migrated yet."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"
        return
    with throwaway_postgres("aihub_billing_migr") as url:
        yield url


def _inspect(url: str, probe: Any) -> Any:
    """Runs `probe(sync_connection)` on the database at `url` and returns its result."""

    async def run() -> Any:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(probe)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _schema_diff(sync_conn: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection=sync_conn,
        opts={"compare_type": True, "include_object": include_in_migrations},
    )
    return list(compare_metadata(context, Base.metadata))


def _tables(sync_conn: Connection) -> set[str]:
    return set(inspect(sync_conn).get_table_names())


def _revision(sync_conn: Connection) -> str | None:
    return MigrationContext.configure(connection=sync_conn).get_current_revision()


def test_history_has_a_single_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert heads == [HEAD]


def test_upgrade_from_empty_matches_the_models(empty_url: str) -> None:
    assert _inspect(empty_url, _tables) == set()
    migrate_database(empty_url)
    assert _inspect(empty_url, _revision) == HEAD
    assert _inspect(empty_url, _schema_diff) == []


def test_downgrade_to_base_drops_everything_and_upgrade_rebuilds_it(empty_url: str) -> None:
    migrate_database(empty_url)
    command.downgrade(alembic_config(empty_url), "base")
    assert _inspect(empty_url, _revision) is None
    assert _inspect(empty_url, _tables) == {"alembic_version"}

    migrate_database(empty_url)
    assert _inspect(empty_url, _revision) == HEAD
    assert _inspect(empty_url, _schema_diff) == []


def test_migrating_twice_is_a_noop(empty_url: str) -> None:
    migrate_database(empty_url)

    def insert_marker(sync_conn: Connection) -> None:
        sync_conn.execute(
            text(
                "INSERT INTO accounts (id, name, currency, tax_exempt, status, "
                "created_at, updated_at) VALUES ('acct_marker', 'Marker', 'USD', false, "
                "'active', '2026-01-31 12:00:00', '2026-01-31 12:00:00')"
            )
        )
        sync_conn.commit()

    _inspect(empty_url, insert_marker)

    migrate_database(empty_url)

    def marker_ids(sync_conn: Connection) -> list[str]:
        return list(sync_conn.execute(text("SELECT id FROM accounts")).scalars())

    assert _inspect(empty_url, _revision) == HEAD
    assert _inspect(empty_url, marker_ids) == ["acct_marker"]
    assert _inspect(empty_url, _schema_diff) == []
