"""Authenticated GET /plans through the full app vs. a bare FastAPI endpoint (in-process ASGI)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from rich.console import Console

from aihub_billing.config import BillingConfig
from aihub_billing.main import create_app
from aihub_billing.service import BillingService
from bench.common import Result, Timer, backends, database

PATH = "/api/v1/billing/plans"


async def _rate(app: FastAPI, headers: dict[str, str], n: int) -> float:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for _ in range(20):  # warm-up
            (await client.get(PATH, headers=headers)).raise_for_status()
        with Timer() as timer:
            for _ in range(n):
                (await client.get(PATH, headers=headers)).raise_for_status()
    return n / timer.seconds


def _bare_app(payload: list[dict[str, object]]) -> FastAPI:
    """The baseline: the same JSON from a bare endpoint, no auth, no database."""
    bare = FastAPI()

    @bare.get(PATH)
    async def plans() -> list[dict[str, object]]:
        return payload

    return bare


async def run(*, quick: bool, console: Console) -> list[Result]:
    n = 300 if quick else 2000
    results = []
    for backend in await backends():
        async with database(backend) as url:
            config = BillingConfig(
                environment="test", database_url=url, embedded_worker=False, log_level="WARNING"
            )
            billing = BillingService(config)
            boot = await billing.bootstrap()
            assert boot.admin_secret is not None
            payload = [p.model_dump(mode="json") for p in await billing.list_plans()]
            app = create_app(billing=billing)
            bare = _bare_app(payload)
            async with app.router.lifespan_context(app):
                full = await _rate(app, {"Authorization": f"Bearer {boot.admin_secret}"}, n)
            baseline = await _rate(bare, {}, n)
            await billing.close()
        console.print(f"   {backend}: {full:,.0f} req/s (bare endpoint {baseline:,.0f} req/s)")
        results.append(
            Result(
                name="GET /plans (auth + 2 queries)",
                backend=backend,
                figure=full,
                unit="req/s",
                baseline="bare FastAPI, static JSON",
                baseline_figure=baseline,
            )
        )
    return results
