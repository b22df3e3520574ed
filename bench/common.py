"""Shared pieces of the benchmarks: results, timing, throwaway databases."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.engine import make_url

from aihub_billing.kit.clock import monotonic
from aihub_billing.service import migrate_database

PG_ADMIN_URL = os.environ.get(
    "AIHUB_BILLING_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@dataclass
class Result:
    name: str
    backend: str
    figure: float
    unit: str
    baseline: str | None = None
    baseline_figure: float | None = None
    target: str | None = None

    def figure_text(self) -> str:
        return f"{self.figure:,.1f} {self.unit}"

    def baseline_text(self) -> str:
        if self.baseline_figure is None:
            return "-"
        return f"{self.baseline_figure:,.1f} {self.unit}"

    def ratio_text(self) -> str:
        if not self.baseline_figure:
            return "-"
        return f"{self.figure / self.baseline_figure:.2f}x"


class Timer:
    def __enter__(self) -> Timer:
        self.started = monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = monotonic() - self.started


async def postgres_available() -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
    except Exception:
        return False
    await conn.close()
    return True


@asynccontextmanager
async def database(backend: str) -> AsyncIterator[str]:
    """A freshly migrated throwaway database; dropped afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{tmp}/bench.db"
            await asyncio.to_thread(migrate_database, url)
            yield url
        return
    import asyncpg

    name = f"aihub_billing_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(PG_ADMIN_URL)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    url = make_url(PG_ADMIN_URL).set(drivername="postgresql+asyncpg", database=name)
    rendered = url.render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(migrate_database, rendered)
        yield rendered
    finally:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def backends() -> list[str]:
    return ["sqlite", "postgresql"] if await postgres_available() else ["sqlite"]
