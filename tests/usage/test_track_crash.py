"""A real server killed with SIGKILL while concurrent /usage/track requests are in flight:
every event it acknowledged is stored (the group commit answers only after its commit)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx

from aihub_billing.accounts.schemas import AccountCreate
from aihub_billing.kit.clock import monotonic
from aihub_billing.service import BillingService
from aihub_billing.usage.repository import UsageRepository
from tests.conftest import free_port, make_config, wipe

SRC = Path(__file__).resolve().parents[2] / "src"
CLIENTS = 30
KILL_AFTER = 300  # acknowledged events


async def test_every_acknowledged_event_survives_a_kill_9(
    database_url: str, tmp_path: Path
) -> None:
    billing = BillingService(make_config(database_url))
    await wipe(billing)
    await billing.bootstrap()
    account = await billing.create_account(AccountCreate(name="Crash"))
    _, secret = await billing.issue_api_key(account_id=account.id, role="owner")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIHUB_BILLING_")}
    env.update(
        PYTHONPATH=str(SRC),
        AIHUB_BILLING_ENVIRONMENT="test",
        AIHUB_BILLING_DATABASE_URL=database_url,
        AIHUB_BILLING_EMBEDDED_WORKER="false",
        AIHUB_BILLING_LOG_LEVEL="WARNING",
        AIHUB_BILLING_API_RATE_LIMIT_PER_MINUTE="1000000000",
    )
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from aihub_billing.cli import app; app()",
        "serve",
        "--port",
        str(port),
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    acknowledged: set[str] = set()
    sent = 0
    killed = asyncio.Event()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
            limits=httpx.Limits(max_connections=CLIENTS),
        ) as client:
            deadline = monotonic() + 60
            while True:
                try:
                    (await client.get("/healthz")).raise_for_status()
                    break
                except httpx.TransportError:
                    assert server.returncode is None, "the server exited"
                    assert monotonic() < deadline, "the server did not come up in 60 s"
                    await asyncio.sleep(0.2)

            async def gateway(n: int) -> None:
                nonlocal sent
                i = 0
                while not killed.is_set():
                    event_id = f"k{n}-{i}"
                    body = {"model": "gpt-4o-mini", "input_tokens": 9, "event_id": event_id}
                    sent += 1
                    try:
                        response = await client.post("/api/v1/billing/usage/track", json=body)
                    except httpx.TransportError:
                        return  # the server is gone: this one was never acknowledged
                    assert response.status_code == 201, response.text
                    acknowledged.add(event_id)
                    i += 1
                    if len(acknowledged) >= KILL_AFTER and not killed.is_set():
                        server.send_signal(signal.SIGKILL)
                        killed.set()

            async with asyncio.timeout(120):
                await asyncio.gather(*(gateway(n) for n in range(CLIENTS)))
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGKILL)
        await server.wait()
    try:
        async with billing.db.sessions() as session:
            stored = {e.event_id for e in await UsageRepository(session).events(account.id)}
        assert len(acknowledged) >= KILL_AFTER
        assert sent > len(acknowledged), "no request was in flight at the kill"
        assert acknowledged <= stored, sorted(acknowledged - stored)[:10]
    finally:
        await wipe(billing)
        await billing.close()
