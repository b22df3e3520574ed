"""A real `aihub-billing worker` killed with SIGKILL mid-generation, then a rerun: one invoice
per (subscription, reason, period), the same totals as a clean run, numbers without gaps."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from aihub_billing.invoices.service import invoices
from aihub_billing.kit.clock import FrozenClock, SystemClock
from aihub_billing.models import Invoice, InvoiceItem, Job
from aihub_billing.service import BillingService
from tests.invoices.helpers import metered_plan, track
from tests.subscriptions.helpers import SEED_BODY, add_plan, ok, owner

SRC = Path(__file__).resolve().parents[2] / "src"
N = 40  # subscriptions per group


def _env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIHUB_BILLING_")}
    env.update(
        PYTHONPATH=str(SRC),
        AIHUB_BILLING_DATABASE_URL=database_url,
        AIHUB_BILLING_ENVIRONMENT="test",
        AIHUB_BILLING_EMBEDDED_WORKER="false",
        AIHUB_BILLING_INVOICE_FINALIZE_AFTER_SECONDS="0",
        AIHUB_BILLING_JOBS_POLL_INTERVAL_SECONDS="0.05",
        AIHUB_BILLING_LOG_LEVEL="WARNING",
        AIHUB_BILLING_DOCUMENTS__STORE="false",  # PDFs are tested in test_pdf.py
    )
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "aihub_billing.cli", *args]


async def _run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *_cli(*args), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _group(client: httpx.AsyncClient, admin_key: str) -> list[tuple[str, str]]:
    """N subscriptions (id, owner key), created at the clock's time."""
    subs = []
    for i in range(N):
        _, key = await owner(client, admin_key, name=f"acct-{i}")
        sub = await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered"})
        subs.append((sub["subscription"]["id"], key))
    return subs


async def _use(client: httpx.AsyncClient, subs: list[tuple[str, str]], at: datetime) -> list[str]:
    """Usage growing with the subscription's index; returns the subscription ids."""
    for i, (_, key) in enumerate(subs):
        await track(client, key, "gpt-4o-mini", 500 + 97 * i, at.isoformat(), n=1 + i % 4)
        await track(client, key, "gpt-3.5-turbo", 300 + 13 * i, at.isoformat(), n=1 + i % 3)
    return [s for s, _ in subs]


async def _totals(billing: BillingService, subs: list[str]) -> list[list[tuple[Any, ...]]]:
    async with billing.db.sessions() as session:
        rows = (
            await session.execute(
                select(
                    Invoice.subscription_id,
                    Invoice.billing_reason,
                    Invoice.period_start,
                    Invoice.total_minor,
                    Invoice.status,
                ).where(Invoice.subscription_id.in_(subs))
            )
        ).all()
    by_sub: dict[str, list[tuple[Any, ...]]] = {s: [] for s in subs}
    for sub, reason, start, total, status in rows:
        by_sub[sub].append((reason, start, total, status))
    return [sorted(by_sub[s]) for s in subs]


async def _count(billing: BillingService, subs: list[str]) -> int:
    # A snapshot: it never waits for the write lock a stopped worker may hold on SQLite.
    async with billing.db.snapshots() as session:
        query = select(func.count()).where(Invoice.subscription_id.in_(subs))
        return int(await session.scalar(query) or 0)


async def test_kill_9_mid_generation_then_rerun(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    clock: FrozenClock,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(invoices, "finalize_after", timedelta(0))
    await add_plan(client, admin_key, **metered_plan("metered", 5000))
    real_now = SystemClock().now().replace(microsecond=0)
    # One period (a month) has ended since the subscriptions started: each has its creation
    # invoice and one cycle invoice due.
    created = real_now - timedelta(days=40)

    clock.set(created)
    clean_subs, crashed_subs = await _group(client, admin_key), await _group(client, admin_key)
    clock.set(created + timedelta(days=10))
    clean = await _use(client, clean_subs, created + timedelta(days=3))
    crashed = await _use(client, crashed_subs, created + timedelta(days=3))

    # The clean run, in this process, through the period-close service function.
    clock.set(real_now)
    async with billing.transaction() as session:
        await invoices.close_period(session, billing.context(), subscription_ids=clean)
    expected = await _totals(billing, clean)
    assert all(len(t) == 2 and t[0][3] in ("open", "paid") for t in expected)

    # The same again, through a worker process killed mid-run (it also runs the clean
    # group's jobs, which find their invoices). The worker runs in short slices between
    # SIGSTOPs and is counted while stopped, so however busy the machine, the kill lands
    # within one slice of the sixth invoice rather than after the last.
    proc = await asyncio.create_subprocess_exec(
        *_cli("worker"),
        env=_env(database_url),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(0.005)
            if proc.returncode is not None:
                assert proc.stderr is not None
                pytest.fail(f"worker exited: {(await proc.stderr.read()).decode()}")
            proc.send_signal(signal.SIGSTOP)
            if await _count(billing, crashed) >= 6:
                break
            proc.send_signal(signal.SIGCONT)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 30)
    at_kill = await _count(billing, crashed)
    assert 0 < at_kill < 2 * N, "the kill must land mid-run"

    # Five minutes later the dead worker's leases have expired (simulated), and the operator
    # closes the period, then a worker finishes the rest.
    async with billing.transaction() as session:
        await session.execute(
            update(Job)
            .where(Job.status == "running")
            .values(locked_until=datetime(2000, 1, 1, tzinfo=UTC))
        )
    env = _env(database_url)
    code, out, err = await _run(env, "close-period")
    assert code == 0, err
    assert "close-period" in out and "invoices created" in out
    code, out, err = await _run(env, "worker", "--once")
    assert code == 0, err

    actual = await _totals(billing, crashed)
    # Same (reason, period, total, status) per subscription as the clean run: nothing twice.
    assert actual == expected
    async with billing.db.sessions() as session:
        pending = await session.scalar(
            select(func.count()).where(
                InvoiceItem.invoice_id.is_(None), InvoiceItem.subscription_id.in_(crashed)
            )
        )
        numbers = sorted((await session.scalars(select(Invoice.sequence))).all())
        dead = await session.scalar(select(func.count()).where(Job.status == "dead"))
    # Every item is on exactly one invoice (the running period's fee, recorded at renewal, is
    # on the cycle invoice); numbers have no gap.
    assert pending == 0
    assert numbers == list(range(1, 4 * N + 1))
    assert dead == 0
