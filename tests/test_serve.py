"""`aihub-billing serve --workers 2` for real, on SQLite with Redis (several workers need it):
the workers count into one multiprocess directory that serve makes (and removes), /metrics
adds them up whichever worker answers, with log_json every line on stderr (uvicorn's own
included) is JSON, and the two embedded job workers claim each job once."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port

SRC = Path(__file__).resolve().parents[1] / "src"
REQUESTS = 12


def _wait_until_up(base: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{base}/healthz", timeout=2).raise_for_status()
            return
        except httpx.TransportError:
            assert process.poll() is None, "serve exited"
            assert time.monotonic() < deadline, "serve did not come up in 60 s"
            time.sleep(0.2)


def _delete_prefix(redis_url: str, prefix: str) -> None:
    """This test's keys only: the Redis is shared."""
    with redis.Redis.from_url(redis_url) as client:
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            client.delete(key)


def _jobs_when_done(database: Path, process: subprocess.Popen[str]) -> list[tuple[str, int]]:
    """(status, attempts) of every job once none is pending or running."""
    deadline = time.monotonic() + 60
    while True:
        with sqlite3.connect(database) as db:
            jobs = db.execute("SELECT status, attempts FROM jobs").fetchall()
        if jobs and not {status for status, _ in jobs} & {"pending", "running"}:
            return jobs
        assert process.poll() is None, "serve exited"
        assert time.monotonic() < deadline, f"jobs not done in 60 s: {jobs}"
        time.sleep(0.2)


def test_several_workers_are_counted_together_and_log_json(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIHUB_BILLING_", "PROM"))}
    env |= {
        "PYTHONPATH": str(SRC),
        "AIHUB_BILLING_ENVIRONMENT": "test",
        "AIHUB_BILLING_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/serve.db",
        "AIHUB_BILLING_REDIS_URL": redis_url,
        "AIHUB_BILLING_QUOTA_KEY_PREFIX": prefix,
        "AIHUB_BILLING_LOG_JSON": "true",
        "COLUMNS": "300",
    }
    command = "from aihub_billing.cli import app; app()"
    process = subprocess.Popen(
        [sys.executable, "-c", command, "serve", "--workers", "2", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until_up(base, process)  # one /healthz that counts
        for _ in range(REQUESTS):  # a connection each, so both workers take some
            httpx.get(f"{base}/healthz", timeout=5).raise_for_status()
        assert httpx.get(f"{base}/api/v1/billing/plans", timeout=5).status_code == 401
        scrape = httpx.get(f"{base}/metrics", timeout=5).text
        # Both workers tick the scheduler at start (one job per slot) and claim from one
        # SQLite file: a job claimed twice would show two attempts.
        jobs = _jobs_when_done(tmp_path / "serve.db", process)
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        _delete_prefix(redis_url, prefix)
    assert process.returncode == 0, err
    assert set(jobs) == {("succeeded", 1)}, jobs

    healthz = {
        s.value
        for family in text_string_to_metric_families(scrape)
        for s in family.samples
        if s.name == "aihub_billing_http_request_duration_seconds_count"
        and s.labels["route"] == "/healthz"
    }
    assert healthz == {REQUESTS + 1}
    # Only the multiprocess collector answers: one process's collectors are not in it.
    assert "process_cpu_seconds_total" not in scrape
    made = re.search(r"PROMETHEUS_MULTIPROC_DIR=(\S+)", out)
    assert made, out
    assert not Path(made.group(1)).exists(), "the directory serve made outlived it"

    logged = [json.loads(line) for line in err.splitlines() if line.strip()]
    (access,) = [line for line in logged if line["event"] == "http.request"]  # /healthz: debug
    assert access["route"] == "/api/v1/billing/plans" and access["request_id"].startswith("req_")
    started = [line for line in logged if line["event"].startswith("Started server process")]
    assert len(started) == 2 and {line["logger"] for line in started} == {"uvicorn.error"}
