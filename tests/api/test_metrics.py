"""GET /metrics: for the scraper (no key, not an API operation), latency by route template,
usage events once per accepted event; the database's figures left out when it does not
answer. (Subscriptions, MRR and cancellations: tests/subscriptions/test_metrics.py.)"""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import REGISTRY

from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.api.test_health import serving
from tests.conftest import make_config
from tests.subscriptions.helpers import owner

# What is counted does not depend on the database: these run on SQLite only.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
USAGE = {"usage_type": "api_call", "model": "gpt-3.5-turbo", "input_tokens": 10}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@SQLITE_ONLY
async def test_metrics_are_for_the_scraper_not_an_api_operation(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/metrics")  # no API key
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE aihub_billing_http_request_duration_seconds histogram" in response.text
    spec = (await client.get("/openapi.json")).json()
    assert not [path for path in spec["paths"] if "metrics" in path]
    openmetrics = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")


@SQLITE_ONLY
async def test_latency_is_labelled_by_route_template_never_by_raw_path(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    name = "aihub_billing_http_request_duration_seconds_count"
    plan = {"route": f"{API}/plans/{{code}}", "method": "GET"}
    before = (sample(name, **plan, status_class="2xx"), sample(name, **plan, status_class="4xx"))
    assert (await client.get(f"{API}/plans/pro", headers=auth(admin_key))).status_code == 200
    missing = await client.get(f"{API}/plans/no-such-plan-x1", headers=auth(admin_key))
    assert missing.status_code == 404
    await client.get(f"{API}/nothing/4242424242424242")
    await client.request("BREW", f"{API}/plans")
    after = (sample(name, **plan, status_class="2xx"), sample(name, **plan, status_class="4xx"))
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
    text = (await client.get("/metrics")).text
    assert 'route="<unmatched>"' in text and 'method="OTHER"' in text
    assert "no-such-plan-x1" not in text and "4242424242424242" not in text


@SQLITE_ONLY
async def test_usage_events_count_what_was_accepted_once(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    _, key = await owner(client, admin_key)
    before = sample("aihub_billing_usage_events_total")
    events = [
        {**USAGE, "event_id": "m-1"},
        {**USAGE, "event_id": "m-2"},
        {**USAGE, "event_id": "m-1"},  # the same id twice in one batch counts once
        {**USAGE, "model": "no-such-model"},
    ]
    batch = await client.post(f"{API}/usage/batch", json={"events": events}, headers=auth(key))
    assert batch.json()["accepted"] == 2, batch.text
    assert sample("aihub_billing_usage_events_total") - before == 2
    again = await client.post(f"{API}/usage/batch", json={"events": events}, headers=auth(key))
    assert again.json()["accepted"] == 0
    tracked = await client.post(f"{API}/usage/track", json=USAGE, headers=auth(key))
    assert tracked.status_code == 201
    assert sample("aihub_billing_usage_events_total") - before == 3


async def test_a_database_that_does_not_answer_leaves_only_its_figures_out(
    sqlite_url: str,
) -> None:
    config = make_config(sqlite_url, database_replica_url="sqlite+aiosqlite:////nonexistent/x.db")
    async with serving(BillingService(config)) as client:
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert "aihub_billing_http_request_duration_seconds" in response.text
        assert "aihub_billing_subscriptions" not in response.text


async def test_the_job_queue_is_read_from_the_database_per_scrape(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    """Jobs by status and the wait of the oldest due one: a stopped worker shows here."""
    from datetime import timedelta

    from prometheus_client.parser import text_string_to_metric_families

    from aihub_billing.jobs import queue

    ctx = billing.context()
    now = billing.clock.now()
    async with billing.transaction() as session:
        await queue.enqueue(session, ctx, "usage.partitions", {}, run_at=now - timedelta(minutes=7))
        await queue.enqueue(session, ctx, "usage.partitions", {}, run_at=now + timedelta(hours=1))
    text = (await client.get("/metrics")).text
    samples = {
        (s.name, s.labels.get("status")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("aihub_billing_jobs")
    }
    assert samples[("aihub_billing_jobs", "pending")] >= 2
    assert samples[("aihub_billing_jobs", "dead")] == 0
    assert samples[("aihub_billing_jobs_oldest_due_seconds", None)] >= 420
