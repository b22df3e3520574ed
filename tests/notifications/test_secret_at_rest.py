"""Webhook signing secrets at rest: encrypted with `encryption_key` when `encryption_enabled`,
readable when written in plaintext before, and signing deliveries with the secret shown."""

from __future__ import annotations

import hashlib
import hmac

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from aihub_billing.models import QuotaNotificationTarget
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.notifications.conftest import Receiver
from tests.notifications.test_delivery import enqueue, target, webhook_job
from tests.payments.support import owner_of_new_account

KEY = Fernet.generate_key().decode()
ENCRYPTED = {
    "notifications_allow_private_targets": True,  # the receiver is on 127.0.0.1
    "encryption_enabled": True,
    "encryption_key": KEY,
}
PLAIN = {"notifications_allow_private_targets": True}


async def stored_secret(billing: BillingService, account_id: str) -> str | None:
    async with billing.db.sessions() as session:
        row = await session.scalar(
            select(QuotaNotificationTarget).where(QuotaNotificationTarget.account_id == account_id)
        )
        assert row is not None
        return row.webhook_secret


def assert_signed_with(receiver: Receiver, secret: str) -> None:
    headers, body = receiver.received[-1]
    stamp, signature = (part.split("=", 1)[1] for part in headers["aihub-signature"].split(","))
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    assert hmac.compare_digest(signature, expected.hexdigest())


@pytest.mark.parametrize("config_overrides", [ENCRYPTED])
async def test_the_secret_is_stored_encrypted_and_signs_deliveries(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, receiver: Receiver
) -> None:
    account_id, secret = await target(client, admin_key, receiver.url)
    stored = await stored_secret(billing, account_id)
    assert stored is not None and stored.startswith("enc:v1:")
    assert secret not in stored and secret.removeprefix("whsec_") not in stored
    shown = (
        await client.get(
            f"{API}/quota/notifications", params={"account_id": account_id}, headers=auth(admin_key)
        )
    ).json()
    assert shown["has_webhook_secret"] and "webhook_secret" not in shown
    await enqueue(billing, account_id)
    assert await billing.worker().drain() == 2
    assert (await webhook_job(billing)).status == "succeeded"
    assert_signed_with(receiver, secret)


@pytest.mark.parametrize("config_overrides", [PLAIN])
async def test_without_encryption_the_secret_is_stored_as_before(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, receiver: Receiver
) -> None:
    account_id, secret = await target(client, admin_key, receiver.url)
    assert await stored_secret(billing, account_id) == secret
    await enqueue(billing, account_id)
    assert await billing.worker().drain() == 2
    assert_signed_with(receiver, secret)


@pytest.mark.parametrize("config_overrides", [ENCRYPTED])
async def test_a_plaintext_secret_written_before_still_delivers_and_is_sealed_when_set(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, receiver: Receiver
) -> None:
    account_id, key = await owner_of_new_account(client, admin_key)
    async with billing.transaction() as session:
        now = billing.clock.now()
        session.add(
            QuotaNotificationTarget(
                account_id=account_id,
                webhook_url=receiver.url,
                webhook_secret="whsec_written_in_plaintext",
                created_at=now,
                updated_at=now,
            )
        )
    await enqueue(billing, account_id)
    assert await billing.worker().drain() == 2
    assert (await webhook_job(billing)).status == "succeeded"
    assert_signed_with(receiver, "whsec_written_in_plaintext")
    answer = await client.put(
        f"{API}/quota/notifications", json={"webhook_url": receiver.url}, headers=auth(key)
    )
    assert answer.status_code == 200, answer.text
    stored = await stored_secret(billing, account_id)
    assert stored is not None and stored.startswith("enc:v1:")
    assert answer.json()["webhook_secret"] not in stored


@pytest.mark.parametrize(
    "config_overrides",
    [PLAIN, {**PLAIN, "encryption_key": Fernet.generate_key().decode()}],
    ids=["no-key", "another-key"],
)
async def test_a_secret_the_key_cannot_open_is_not_sent_and_not_shown(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, receiver: Receiver
) -> None:
    """Encrypted with a key this process lacks: retried (the operator can set the key), not
    sent unsigned, and the error names the problem without the stored value."""
    account_id, _ = await owner_of_new_account(client, admin_key)
    from aihub_billing.kit.secretbox import SecretBox

    sealed = SecretBox(KEY).seal("whsec_sealed")
    async with billing.transaction() as session:
        now = billing.clock.now()
        session.add(
            QuotaNotificationTarget(
                account_id=account_id,
                webhook_url=receiver.url,
                webhook_secret=sealed,
                created_at=now,
                updated_at=now,
            )
        )
    await enqueue(billing, account_id)
    assert await billing.worker().drain() == 2
    job = await webhook_job(billing)
    assert job.status == "pending" and job.last_error is not None
    assert "encrypt" in job.last_error and sealed[7:30] not in job.last_error
    assert receiver.received == []
