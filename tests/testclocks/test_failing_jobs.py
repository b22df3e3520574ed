"""A job that fails during an advance is handled as the worker handles it, on the clock's
time: its own changes are undone, it is retried after its backoff until its attempts run out
(a permanent failure at once), and the simulation goes on. A receiver that is down, or a bug
in one handler, no longer stops the clock."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
from sqlalchemy import select

from aihub_billing.jobs import queue
from aihub_billing.jobs.registry import JobRun, PermanentJobError, registry
from aihub_billing.kit.clock import FrozenClock
from aihub_billing.kit.context import SYSTEM, Context
from aihub_billing.models import AuditEntry, Job
from aihub_billing.service import BillingService
from tests.subscriptions.helpers import ok

START = datetime.fromisoformat("2027-01-01T00:00:00+00:00")


@registry.job("tests.always_fails")
async def _always_fails(session: object, run: JobRun) -> None:
    raise RuntimeError(f"down on attempt {run.attempt}")


@registry.job("tests.refused")
async def _refused(session: object, run: JobRun) -> None:
    raise PermanentJobError("410 Gone")


async def clock_with_jobs(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, *names: str
) -> str:
    clock = await ok(client, admin_key, "/test-clocks", {"frozen_time": START.isoformat()})
    ctx = Context(actor=SYSTEM, clock=FrozenClock(START), request_id="test")
    async with billing.db.sessions() as session:
        for name in names:
            await queue.enqueue(
                session,
                ctx,
                name,
                {},
                run_at=START + timedelta(hours=1),
                max_attempts=3,
                test_clock_id=clock["id"],
            )
        await session.commit()
    return str(clock["id"])


async def test_a_failing_job_is_retried_on_the_clock_and_the_advance_goes_on(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    clock_id = await clock_with_jobs(
        client, admin_key, billing, "tests.always_fails", "tests.refused"
    )
    moved = await ok(
        client,
        admin_key,
        f"/test-clocks/{clock_id}/advance",
        {"frozen_time": "2027-01-02T00:00:00Z"},
    )
    assert moved["frozen_time"] == "2027-01-02T00:00:00Z"
    attempts = [(j["name"], j["status"]) for j in moved["jobs_run"]]
    assert attempts == [
        ("tests.always_fails", "retrying"),
        ("tests.refused", "dead"),
        ("tests.always_fails", "retrying"),
        ("tests.always_fails", "dead"),
    ]
    assert [j["error"] for j in moved["jobs_run"]][:2] == [
        "RuntimeError: down on attempt 1",
        "PermanentJobError: 410 Gone",
    ]
    async with billing.db.sessions() as session:
        jobs = {j.name: j for j in (await session.execute(select(Job))).scalars()}
        failing, refused = jobs["tests.always_fails"], jobs["tests.refused"]
        assert (failing.status, failing.attempts) == ("dead", 3)
        assert failing.last_error == "RuntimeError: down on attempt 3"
        assert (refused.status, refused.attempts) == ("dead", 1)
        # The advance itself was recorded: the clock moved.
        actions = (await session.execute(select(AuditEntry.action))).scalars().all()
        assert "test_clock.advanced" in actions
