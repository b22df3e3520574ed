"""Test clocks are off in production: advancing one collects its invoices through the
configured providers, whose keys there are live, so a simulation would charge real cards."""

from __future__ import annotations

import httpx
import pytest
from cryptography.fernet import Fernet

from aihub_billing.config import BillingConfig
from aihub_billing.service import BillingService
from aihub_billing.testclocks.service import test_clocks
from tests.subscriptions.helpers import ok, owner, post


async def test_a_production_config_turns_test_clocks_off(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = await ok(client, admin_key, "/test-clocks", {"frozen_time": "2030-01-01T00:00:00Z"})
    account, _ = await owner(client, admin_key)
    monkeypatch.setattr(test_clocks, "enabled", True)  # restored after the test
    production = BillingConfig(
        environment="production",
        database_url=billing.config.database_url,
        encryption_enabled=True,
        encryption_key=Fernet.generate_key().decode(),
    )
    await BillingService(production).close()
    assert test_clocks.enabled is False

    for path, body in (
        ("/test-clocks", {"frozen_time": "2030-01-01T00:00:00Z"}),
        (f"/test-clocks/{clock['id']}/accounts", {"account_id": account}),
        (f"/test-clocks/{clock['id']}/advance", {"frozen_time": "2030-02-01T00:00:00Z"}),
    ):
        refused = await post(client, admin_key, path, body)
        assert refused.status_code == 409, (path, refused.text)
        assert refused.json()["code"] == "test_clocks_disabled"
