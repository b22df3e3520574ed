"""Counting on commit (never on rollback, nor for a rolled-back savepoint), the multiprocess
directory `serve` prepares, and several processes' counts added up by one scrape."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.kit.db import Database, open_database
from aihub_billing.kit.metrics import (
    MULTIPROC_ENV,
    count_on_commit,
    exposition,
    prepare_multiprocess_dir,
    serve_metrics,
)

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
async def db(sqlite_url: str) -> AsyncIterator[Database]:
    database = open_database(sqlite_url)
    yield database
    await database.dispose()


@pytest.fixture
def counter() -> Counter:
    return Counter("t_events", "test", registry=None)


def value(counter: Counter) -> float:
    """The counter's value as a scrape reads it."""
    registry = CollectorRegistry()
    registry.register(counter)
    return registry.get_sample_value("t_events_total") or 0.0


async def begin(session: AsyncSession) -> None:
    await session.execute(text("SELECT 1"))


async def test_a_count_waits_for_the_commit(db: Database, counter: Counter) -> None:
    async with db.sessions() as session:
        await begin(session)
        count_on_commit(session, counter.inc, 3)
        count_on_commit(session, counter.inc)
        assert value(counter) == 0
        await session.commit()
        assert value(counter) == 4
        # The next transaction of the same session starts from nothing.
        await begin(session)
        await session.commit()
    assert value(counter) == 4


async def test_a_rollback_or_a_close_without_commit_counts_nothing(
    db: Database, counter: Counter
) -> None:
    async with db.sessions() as session:
        await begin(session)
        count_on_commit(session, counter.inc, 5)
        await session.rollback()
        await begin(session)
        await session.commit()
        await begin(session)
        count_on_commit(session, counter.inc, 7)
        await session.close()
        # Closed without a commit: nothing is left behind for its next transaction.
        await begin(session)
        await session.commit()
    assert value(counter) == 0


async def test_a_rolled_back_savepoint_drops_only_its_own_counts(
    db: Database, counter: Counter
) -> None:
    async with db.sessions() as session:
        await begin(session)
        count_on_commit(session, counter.inc, 1)
        with pytest.raises(RuntimeError):
            async with session.begin_nested():
                count_on_commit(session, counter.inc, 10)
                raise RuntimeError("the savepoint fails")
        async with session.begin_nested():
            count_on_commit(session, counter.inc, 100)  # released: waits for the outer commit
        assert value(counter) == 0
        await session.commit()
    assert value(counter) == 101


def test_serve_alone_needs_no_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, "x")
    monkeypatch.delenv(MULTIPROC_ENV)  # restored (unset) after the test
    assert prepare_multiprocess_dir(1) == (None, False)
    path, made = prepare_multiprocess_dir(3)
    try:
        assert made and os.environ[MULTIPROC_ENV] == path and Path(path).is_dir()
    finally:
        Path(path).rmdir()


def test_the_operators_directory_is_emptied_of_other_processes_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    stale = [tmp_path / "counter_999999.db", tmp_path / "gauge_livesum_999999.db"]
    own = tmp_path / f"histogram_{os.getpid()}.db"
    other = tmp_path / "notes.txt"
    for file in (*stale, own, other):
        file.write_bytes(b"x")
    assert prepare_multiprocess_dir(2) == (str(tmp_path), False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([own.name, other.name])


def _count_in_another_process(directory: Path, events: int) -> None:
    script = (
        "from aihub_billing.kit.metrics import HTTP_REQUEST_DURATION, USAGE_EVENTS\n"
        f"USAGE_EVENTS.inc({events})\n"
        "HTTP_REQUEST_DURATION.labels('/x', 'GET', '2xx').observe(0.01)\n"
    )
    env = {**os.environ, MULTIPROC_ENV: str(directory), "PYTHONPATH": str(SRC)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)


def test_one_scrape_adds_up_every_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _count_in_another_process(tmp_path, 3)
    _count_in_another_process(tmp_path, 4)
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    body, content_type = exposition(None)
    assert content_type.startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert samples[("aihub_billing_usage_events_total", ())] == 7
    labels = (("method", "GET"), ("route", "/x"), ("status_class", "2xx"))
    assert samples[("aihub_billing_http_request_duration_seconds_count", labels)] == 2


def test_a_process_without_the_api_serves_its_metrics_from_a_thread() -> None:
    server = serve_metrics(0)  # what `aihub-billing worker --metrics-port` starts
    try:
        response = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert response.status_code == 200
    assert "# TYPE aihub_billing_payment_attempts_total counter" in response.text
