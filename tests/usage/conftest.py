"""Fixtures of the usage tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.service import BillingService
from aihub_billing.usage.service import model_prices
from tests.conftest import make_config, wipe


@pytest.fixture
async def pg_billing(postgres_url: str, clock: FrozenClock) -> AsyncIterator[BillingService]:
    """A BillingService on PostgreSQL (the roller and partitions are PostgreSQL's), emptied,
    with the seeded model prices."""
    service = BillingService(make_config(postgres_url), clock=clock)
    await wipe(service)
    async with service.transaction() as session:
        await model_prices.seed_defaults(session, service.context())
    try:
        yield service
    finally:
        await wipe(service)
        await service.close()
