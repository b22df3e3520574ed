"""The service's Prometheus metrics, counting on commit, and their exposition (one process or
several: `PROMETHEUS_MULTIPROC_DIR`).

Domain code counts through `count_on_commit`, so a rolled-back transaction (a failed request,
a job that is retried, a savepoint that failed) counts nothing and a retry never counts twice.
The quota counters live in `quota/service.py`; gauges that need the database are computed per
scrape (`subscription_families`, `usage_rollup_family`, `job_families`), so no Gauge object needs a
multiprocess mode.

Business counters the alerts watch (payment attempts, cancellations, quota checks) leave out
accounts on a test clock, as the gauges do: a simulation is no failure rate, cancellation spike
or violation spike. What measures the server's own load (request latency, usage events stored,
group commits) or its trouble (quota backend errors, dropped events) counts every account.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.kit.db import on_commit

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# `_created` series double the series count and no rule or dashboard here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

HTTP_REQUEST_DURATION = Histogram(
    "aihub_billing_http_request_duration_seconds",
    "HTTP request latency by route template, method and status class",
    ["route", "method", "status_class"],
    # 2 s is a bucket bound: the latency alert's threshold is exact, not interpolated.
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0),
)
PAYMENT_ATTEMPTS = Counter(
    "aihub_billing_payment_attempts_total",
    "Payment attempts by provider and final outcome (succeeded or failed), counted on commit "
    "(test-clock accounts left out)",
    ["provider", "outcome"],
)
USAGE_EVENTS = Counter(
    "aihub_billing_usage_events_total",
    "Usage events recorded (new, durable; duplicates and rejections not counted)",
)
USAGE_TRACK_GROUPS = Histogram(
    "aihub_billing_usage_track_group_events",
    "Events per transaction of /usage/track's group commit (1 when idle, more under load)",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
SUBSCRIPTION_CANCELLATIONS = Counter(
    "aihub_billing_subscription_cancellations_total",
    "Subscription cancellations when decided: at_period_end (scheduled) or immediate "
    "(test-clock accounts left out)",
    ["mode"],
)

# -- counting on commit ---------------------------------------------------------------------


def count_on_commit(session: AsyncSession, inc: Callable[[float], None], amount: float = 1) -> None:
    """Calls `inc(amount)` (a counter's `.inc`) once the session's outermost transaction
    commits; never if it, or the savepoint that was current, rolls back (kit.db.on_commit)."""
    on_commit(session, partial(inc, amount))


# -- gauges computed per scrape -------------------------------------------------------------


def subscription_families(
    by_status: Mapping[str, int], mrr_minor: Mapping[str, int]
) -> list[Metric]:
    """Subscriptions by status and MRR per currency, as read from the database at scrape time."""
    subscriptions = GaugeMetricFamily(
        "aihub_billing_subscriptions",
        "Subscriptions that are not canceled, by status",
        labels=["status"],
    )
    for status, count in sorted(by_status.items()):
        subscriptions.add_metric([status], count)
    mrr = GaugeMetricFamily(
        "aihub_billing_mrr_minor_units",
        "Monthly recurring revenue of active and past-due subscriptions at list price "
        "(before coupons and tax), in minor units of the currency",
        labels=["currency"],
    )
    for currency, amount in sorted(mrr_minor.items()):
        mrr.add_metric([currency], amount)
    return [subscriptions, mrr]


def job_families(by_status: Mapping[str, int], oldest_due_seconds: float) -> list[Metric]:
    """The job queue as read from the database at scrape time: jobs by status, and how long
    the oldest due job has waited (0 when none is due): workers stopped or stuck show here."""
    jobs = GaugeMetricFamily(
        "aihub_billing_jobs",
        "Background jobs pending, running or dead (test-clock jobs left out)",
        labels=["status"],
    )
    for status, count in sorted(by_status.items()):
        jobs.add_metric([status], count)
    waiting = GaugeMetricFamily(
        "aihub_billing_jobs_oldest_due_seconds",
        "Seconds the oldest due pending job has waited for a worker",
        value=oldest_due_seconds,
    )
    return [jobs, waiting]


def usage_rollup_family(not_rolled_up: int) -> Metric:
    """The roller's backlog, read from the database at scrape time (always 0 on SQLite,
    whose inserts roll up their own events)."""
    return GaugeMetricFamily(
        "aihub_billing_usage_events_not_rolled_up",
        "Stored usage events not yet added to the daily rollups (readers add them meanwhile)",
        value=not_rolled_up,
    )


# -- exposition -----------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class _Scrape:
    """What one scrape exports: this process's registry, or every process's files in
    multiprocess mode, plus families computed for this scrape."""

    def __init__(self, extra: Iterable[Metric]) -> None:
        self.extra = extra

    def collect(self) -> Iterator[Metric]:
        path = multiprocess_dir()
        if path is None:
            yield from REGISTRY.collect()
        else:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
            yield from registry.collect()
        yield from self.extra


def exposition(accept: str | None, extra: Iterable[Metric] = ()) -> tuple[bytes, str]:
    """The scrape body and its content type (Prometheus text, or OpenMetrics if asked)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(_Scrape(extra)), content_type


def serve_metrics(port: int, host: str = "127.0.0.1") -> WSGIServer:
    """Serves GET /metrics from a thread (for processes without the API: job workers);
    `shutdown()` and `server_close()` the server to stop it."""
    registry = CollectorRegistry()
    registry.register(_Scrape(()))
    server, _thread = start_http_server(port, host, registry=registry)
    return server


# prometheus_client names its files <type>[_<gauge mode>]_<pid>.db.
_FILE = re.compile(r"^[a-z_]+_(\d+)\.db$")


def prepare_multiprocess_dir(workers: int) -> tuple[str | None, bool]:
    """For `serve`: the operator's PROMETHEUS_MULTIPROC_DIR, emptied of earlier runs' files,
    or a new temporary one when several workers need one; and whether it was made here.

    Set in this process's environment before the workers start, so they inherit it."""
    path = multiprocess_dir()
    if path is not None:
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        # Counts of processes that are gone would be added to the new ones. This process's
        # own files are open already (it counts too when it serves alone): they stay.
        for file in directory.iterdir():
            match = _FILE.match(file.name)
            if match and int(match.group(1)) != os.getpid():
                file.unlink(missing_ok=True)
        return path, False
    if workers <= 1:
        return None, False
    path = tempfile.mkdtemp(prefix="aihub-billing-metrics-")
    os.environ[MULTIPROC_ENV] = path
    return path, True
