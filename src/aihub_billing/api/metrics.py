"""GET /metrics: the Prometheus scrape (text format, or OpenMetrics when asked).

For the scraper, not for API clients: no API key and not in the OpenAPI schema (protect it
at the network level). With PROMETHEUS_MULTIPROC_DIR set, it adds up every worker process.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from aihub_billing.kit.metrics import (
    exposition,
    job_families,
    subscription_families,
    usage_rollup_family,
)
from aihub_billing.service import BillingService

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    billing: BillingService = request.app.state.billing
    figures = await billing.database_metrics()
    extra = (
        [
            *subscription_families(
                figures.subscriptions.by_status, figures.subscriptions.mrr_minor
            ),
            usage_rollup_family(figures.usage_not_rolled_up),
            *job_families(figures.jobs_by_status, figures.jobs_oldest_due_seconds),
        ]
        if figures
        else []
    )
    # Rendering reads every series (and, in multiprocess mode, every worker's files): off
    # the event loop, so the requests being measured do not wait for it.
    body, content_type = await run_in_threadpool(exposition, request.headers.get("accept"), extra)
    return Response(body, headers={"Content-Type": content_type})
