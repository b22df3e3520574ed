"""Job throughput: enqueue N no-op jobs, then claim and run them with one and two workers."""

from __future__ import annotations

import asyncio

from rich.console import Console

from aihub_billing.config import BillingConfig
from aihub_billing.jobs.queue import enqueue
from aihub_billing.jobs.registry import JobRegistry, JobRun
from aihub_billing.jobs.worker import Worker
from aihub_billing.kit.db import open_database
from aihub_billing.service import BillingService
from bench.common import Result, Timer, backends, database

bench_jobs = JobRegistry()


@bench_jobs.job("bench.noop")
async def noop(_session: object, _run: JobRun) -> None:
    return None


async def _fill(billing: BillingService, n: int) -> None:
    async with billing.transaction() as session:
        for _ in range(n):
            await enqueue(session, billing.context(), "bench.noop", jobs=bench_jobs)


async def _drain(url: str, billing: BillingService, workers: int) -> None:
    dbs = [open_database(url) for _ in range(workers)]
    try:
        runners = [Worker(db, billing.clock, jobs=bench_jobs, batch_size=50) for db in dbs]
        await asyncio.gather(*(r.drain(max_rounds=100_000) for r in runners))
    finally:
        for db in dbs:
            await db.dispose()


async def run(*, quick: bool, console: Console) -> list[Result]:
    n = 500 if quick else 5000
    results = []
    for backend in await backends():
        async with database(backend) as url:
            config = BillingConfig(environment="test", database_url=url, embedded_worker=False)
            billing = BillingService(config)
            rates = {}
            for workers in (1, 2):
                await _fill(billing, n)
                with Timer() as timer:
                    await _drain(url, billing, workers)
                rates[workers] = n / timer.seconds
            await billing.close()
        console.print(f"   {backend}: {rates[1]:,.0f} jobs/s with 1 worker, {rates[2]:,.0f} with 2")
        results.append(
            Result(
                name="jobs claimed+run, 2 workers",
                backend=backend,
                figure=rates[2],
                unit="jobs/s",
                baseline="1 worker",
                baseline_figure=rates[1],
            )
        )
    return results
