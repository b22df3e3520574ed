"""Listings run on the read replica when one is configured; reads by id and writes stay on
the primary. The "replica" here is a second database that nothing replicates to, so what
each request read from is plain to see."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.main import create_app
from aihub_billing.service import BillingService, migrate_database
from tests.api.helpers import API, auth, create_account
from tests.backends import throwaway_postgres
from tests.conftest import free_port, make_config, wipe


@pytest.fixture
def replica_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    if database_url.startswith("sqlite"):
        url = f"sqlite+aiosqlite:///{tmp_path / 'replica.db'}"
        migrate_database(url)
        yield url
        return
    with throwaway_postgres("aihub_billing_replica") as url:
        migrate_database(url)
        yield url


@pytest.fixture
async def client(
    database_url: str, replica_url: str, clock: FrozenClock
) -> AsyncIterator[httpx.AsyncClient]:
    config = make_config(database_url, database_replica_url=replica_url)
    billing = BillingService(config, clock=clock)
    await wipe(billing)
    app = create_app(billing=billing)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                c.headers["x-admin"] = (await billing.bootstrap()).admin_secret or ""
                yield c
    finally:
        await wipe(billing)
        await billing.close()


async def test_listings_read_the_replica(client: httpx.AsyncClient) -> None:
    admin = client.headers["x-admin"]
    account = await create_account(client, admin)
    by_id = await client.get(f"{API}/accounts/{account['id']}", headers=auth(admin))
    assert by_id.status_code == 200  # the primary: just written, found
    audit = await client.get(f"{API}/audit-log", headers=auth(admin))
    assert audit.status_code == 200, audit.text
    assert audit.json()["items"] == []  # the replica has none of it
    invoices = await client.get(
        f"{API}/invoices", params={"account_id": account["id"]}, headers=auth(admin)
    )
    assert invoices.status_code == 200 and invoices.json()["items"] == []


async def test_listings_fall_back_to_the_primary_when_the_replica_is_down(
    database_url: str, clock: FrozenClock
) -> None:
    # readyz says `degraded` for a replica that is down; the listings answered 503 "the
    # database is unavailable" though the primary was fine.
    if database_url.startswith("sqlite"):
        down = "sqlite+aiosqlite:////nonexistent/dir/replica.db"
    else:
        down = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none"
    billing = BillingService(make_config(database_url, database_replica_url=down), clock=clock)
    await wipe(billing)
    app = create_app(billing=billing)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                admin = (await billing.bootstrap()).admin_secret or ""
                account = await create_account(c, admin)
                audit = await c.get(f"{API}/audit-log", headers=auth(admin))
                assert audit.status_code == 200, audit.text
                assert account["id"] in [e["object_id"] for e in audit.json()["items"]]
    finally:
        await wipe(billing)
        await billing.close()
