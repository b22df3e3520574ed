"""API key revocation and the in-process key cache."""

from __future__ import annotations

import httpx
import pytest

from aihub_billing.accounts.service import accounts
from aihub_billing.auth.service import auth
from aihub_billing.errors import Unauthenticated
from aihub_billing.service import BillingService
from tests.api.helpers import API, create_account
from tests.api.helpers import auth as bearer


async def test_a_lookup_racing_the_revoke_does_not_keep_the_key_alive(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    """The revoking process refuses the key at once: a request that reads the key while the
    revoke is not yet committed (it still sees the key valid) must not cache it past the
    commit."""
    account = await create_account(client, admin_key)
    issued = await client.post(
        f"{API}/accounts/{account['id']}/api-keys",
        json={"role": "member"},
        headers=bearer(admin_key),
    )
    key_id, secret = issued.json()["id"], issued.json()["secret"]
    assert (await client.get(f"{API}/plans", headers=bearer(secret))).status_code == 200
    async with billing.transaction() as session:
        await accounts.revoke_key(session, billing.context(), account["id"], key_id)
        # Another request of this process, between the revoke's flush and its commit.
        racing = await auth.authenticate(billing.db.snapshots, f"Bearer {secret}")
        assert racing.key_id == key_id
    with pytest.raises(Unauthenticated):
        await auth.authenticate(billing.db.snapshots, f"Bearer {secret}")
    assert (await client.get(f"{API}/plans", headers=bearer(secret))).status_code == 401
