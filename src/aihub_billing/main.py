"""create_app(): the FastAPI application, its lifespan, middleware, errors and routers."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from aihub_billing import __version__
from aihub_billing.accounts.endpoints import router as accounts_router
from aihub_billing.api import openapi, problems
from aihub_billing.api.access import AccessMiddleware
from aihub_billing.api.body_limit import BodyLimitMiddleware
from aihub_billing.api.metrics import router as metrics_router
from aihub_billing.api.middleware import RequestIdMiddleware
from aihub_billing.audit.endpoints import router as audit_router
from aihub_billing.config import BillingConfig
from aihub_billing.coupons.endpoints import router as coupons_router
from aihub_billing.creditnotes.endpoints import balance_router as account_balance_router
from aihub_billing.creditnotes.endpoints import router as credit_notes_router
from aihub_billing.invoices.endpoints import router as invoices_router
from aihub_billing.kit.clock import Clock
from aihub_billing.kit.logs import configure_logging
from aihub_billing.payments.endpoints import methods_router as payment_methods_router
from aihub_billing.payments.endpoints import router as payments_router
from aihub_billing.plans.endpoints import router as plans_router
from aihub_billing.quota.endpoints import router as quota_router
from aihub_billing.service import BillingService
from aihub_billing.subscriptions.endpoints import router as subscriptions_router
from aihub_billing.summary.endpoints import router as summary_router
from aihub_billing.testclocks.endpoints import router as test_clocks_router
from aihub_billing.usage.endpoints import prices_router as model_prices_router
from aihub_billing.usage.endpoints import router as usage_router
from aihub_billing.webhooks.endpoints import router as webhooks_router

API_PREFIX = "/api/v1/billing"
log = structlog.get_logger("aihub_billing")


def _operation_id(route: APIRoute) -> str:
    # Stable ids for generated clients: "<tag>-<function name>".
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def create_app(
    config: BillingConfig | None = None,
    *,
    clock: Clock | None = None,
    billing: BillingService | None = None,
) -> FastAPI:
    config = config or (billing.config if billing else BillingConfig())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = billing or BillingService(config, clock=clock)
        app.state.billing = service
        stop = asyncio.Event()
        worker_task = None
        if config.run_embedded_worker():
            worker_task = asyncio.create_task(service.worker().run(stop))
        quota_task = asyncio.create_task(service.run_quota_background(stop))
        rollup_task = asyncio.create_task(service.run_usage_rollups(stop))
        # What exists at start-up lives as long as the app: keeping it out of the cyclic GC's
        # full collections halves the CPU of allocation-heavy requests (/usage/batch).
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            stop.set()
            if worker_task is not None:
                with suppress(asyncio.CancelledError):
                    await worker_task
            with suppress(asyncio.CancelledError):
                await quota_task
            with suppress(asyncio.CancelledError):
                await rollup_task
            if billing is None:
                await service.close()

    configure_logging(config.log_level, json=config.log_json)
    app = FastAPI(
        title="aihub-billing",
        version=__version__,
        summary="Plans, metering, quota, invoices and payments for paid AI APIs.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    # Added first, runs innermost: the request id and access line wrap its 413 too.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=config.max_body_bytes,
        by_path={f"{API_PREFIX}/usage/batch": config.max_batch_body_bytes},
    )
    app.add_middleware(AccessMiddleware, log_requests=config.access_log)
    app.add_middleware(RequestIdMiddleware)
    problems.install(app)

    # The quota and usage routes come first and one level up: routes match in order, each
    # nested router costs a lookup per request, and /quota/check then /usage/track is the
    # hot path (every model call of the operator's).
    app.include_router(quota_router, prefix=API_PREFIX)
    app.include_router(usage_router, prefix=API_PREFIX)
    api = APIRouter(prefix=API_PREFIX)
    for router in (plans_router, accounts_router, audit_router):
        api.include_router(router)
    for router in (
        subscriptions_router,
        coupons_router,
        test_clocks_router,
        model_prices_router,
        payments_router,
        payment_methods_router,
        webhooks_router,
        credit_notes_router,
        account_balance_router,
        invoices_router,
        summary_router,
    ):
        api.include_router(router)
    app.include_router(api)
    app.include_router(_health_router())
    app.include_router(metrics_router)
    openapi.install(app)
    return app


def _health_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @router.get("/readyz", responses={503: {"description": "The database is down"}})
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: the database answers (503 when not). Redis and the replica are checked
        and reported (`degraded`) but do not take the instance out: every instance shares
        them, so a load balancer would drop them all, and usage, invoices and the rest still
        work (quota checks follow the fail mode)."""
        billing: BillingService = request.app.state.billing
        checks = await billing.readiness()
        if checks["database"] != "ok":
            status, code = "unavailable", 503
        elif all(v == "ok" for v in checks.values()):
            status, code = "ok", 200
        else:
            status, code = "degraded", 200
        return JSONResponse({"status": status, "checks": checks}, status_code=code)

    return router
