"""Webhook targets: no request to a loopback, private, link-local or otherwise non-public
address (SSRF), checked when the URL is set and again, after resolving it, when delivering."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from aihub_billing.jobs.registry import PermanentJobError
from aihub_billing.kit.clock import FrozenClock
from aihub_billing.kit.context import SYSTEM, Context
from aihub_billing.main import create_app
from aihub_billing.models import QuotaNotificationTarget
from aihub_billing.notifications.service import notifications
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth, create_account, issue_key
from tests.notifications.conftest import Receiver
from tests.notifications.test_delivery import enqueue, target, webhook_job
from tests.payments.fakes.server import FakeServer, Request, Response
from tests.payments.support import owner_of_new_account

ALLOW_PRIVATE = {"notifications_allow_private_targets": True}
REFUSED_URLS = [
    "http://127.0.0.1:8799/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.5/hook",
    "http://172.16.0.1/hook",
    "http://192.168.1.10/hook",
    "http://100.64.0.1/hook",
    "http://0.0.0.0:8000/hook",
    "http://2130706433/hook",  # 127.0.0.1 in decimal
    "http://0x7f.1/hook",
    "http://224.0.0.1/hook",
    "http://localhost:8080/hook",
    "http://LOCALHOST./hook",
    "http://api.localhost/hook",
    "http://[::1]:8799/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[fe80::1]/hook",
    "https://[fd00::1]/hook",
]


def resolving_to(*addresses: str) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


async def put_target(client: httpx.AsyncClient, key: str, url: str) -> httpx.Response:
    return await client.put(
        f"{API}/quota/notifications", json={"webhook_url": url}, headers=auth(key)
    )


# --- when the URL is set ---------------------------------------------------------------------


@pytest.mark.parametrize("url", REFUSED_URLS)
async def test_a_webhook_url_on_a_non_public_address_is_refused(
    client: httpx.AsyncClient, admin_key: str, url: str
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    answer = await put_target(client, key, url)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["code"] == "webhook_url_not_allowed"
    assert problem["type"].endswith(":webhook_url_not_allowed")
    assert "public" in problem["detail"]
    shown = await client.get(f"{API}/quota/notifications", headers=auth(key))
    assert shown.json() is None  # nothing stored


async def test_the_operator_cannot_set_one_either(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    account_id, _ = await owner_of_new_account(client, admin_key)
    answer = await client.put(
        f"{API}/quota/notifications",
        params={"account_id": account_id},
        json={"webhook_url": "http://169.254.169.254/latest/meta-data/"},
        headers=auth(admin_key),
    )
    assert (answer.status_code, answer.json()["code"]) == (422, "webhook_url_not_allowed")


async def test_a_public_webhook_url_is_accepted(client: httpx.AsyncClient, admin_key: str) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    answer = await put_target(client, key, "https://hooks.example.com/aihub")
    assert answer.status_code == 200, answer.text
    assert answer.json()["webhook_url"] == "https://hooks.example.com/aihub"


def test_the_refusal_is_declared_in_the_openapi() -> None:
    put = create_app().openapi()["paths"][f"{API}/quota/notifications"]["put"]
    assert "`webhook_url_not_allowed`" in put["responses"]["422"]["description"]


# --- when delivering -------------------------------------------------------------------------


async def test_a_name_resolving_to_a_private_address_is_refused_at_delivery(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    clock: FrozenClock,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The name passed when it was set; DNS now answers a loopback address (rebinding, or a
    name pointed at an internal host): the job is dead at once and nothing is sent."""
    url = receiver.url.replace("127.0.0.1", "hooks.example.com")
    account_id, _ = await target(client, admin_key, url)
    monkeypatch.setattr(notifications, "resolve", resolving_to("93.184.216.34", "127.0.0.1"))
    await enqueue(billing, account_id)
    assert await billing.worker().drain() == 2
    job = await webhook_job(billing)
    assert (job.status, job.attempts) == ("dead", 1)
    assert job.last_error is not None
    assert "127.0.0.1" in job.last_error and "not public" in job.last_error
    clock.advance(hours=1)
    assert await billing.worker().drain() == 0
    assert receiver.received == []


async def test_a_target_stored_before_the_check_is_refused_at_delivery(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, receiver: Receiver
) -> None:
    account_id, _ = await owner_of_new_account(client, admin_key)
    async with billing.transaction() as session:
        now = billing.clock.now()
        session.add(
            QuotaNotificationTarget(
                account_id=account_id,
                webhook_url=receiver.url,  # http://127.0.0.1:<port>/hooks
                webhook_secret="whsec_old",
                created_at=now,
                updated_at=now,
            )
        )
    await enqueue(billing, account_id)
    assert await billing.worker().drain() == 2
    job = await webhook_job(billing)
    assert job.status == "dead"
    assert job.last_error is not None and "not public" in job.last_error
    assert receiver.received == []


async def test_a_refused_target_is_a_permanent_error(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the webhook deliveries (`notifications.webhook`, `quota.notify`) go through."""
    account_id, _ = await target(client, admin_key, "http://metadata.example.com/computeMetadata")
    monkeypatch.setattr(notifications, "resolve", resolving_to("169.254.169.254"))
    event = {"id": "evt_1", "type": "invoice.paid", "created_at": "x", "data": {}}
    async with billing.transaction() as session:
        with pytest.raises(PermanentJobError, match="169.254.169.254"):
            await notifications.send(session, Context(actor=SYSTEM), account_id, event, "x")


async def test_redirects_are_not_followed(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A public receiver answering 307 to an internal address does not get us there."""

    def redirect(request: Request) -> Response:
        return Response(307, headers={"Location": receiver.url})

    public = FakeServer(redirect).start()
    try:
        url = public.url.replace("127.0.0.1", "hooks.example.com") + "/hooks"
        account_id, _ = await target(client, admin_key, url)
        monkeypatch.setattr(notifications, "resolve", resolving_to("127.0.0.1"))
        monkeypatch.setattr(notifications, "allow_private_targets", True)  # reach the fake
        await enqueue(billing, account_id)
        assert await billing.worker().drain() == 2
    finally:
        public.stop()
    job = await webhook_job(billing)
    assert job.status == "pending" and job.last_error is not None and "307" in job.last_error
    assert receiver.received == []


# --- private targets allowed (local development, this suite) ---------------------------------


@pytest.mark.parametrize("config_overrides", [ALLOW_PRIVATE])
async def test_with_private_targets_allowed_loopback_is_set_and_delivered(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, receiver: Receiver
) -> None:
    account_id, _ = await target(client, admin_key, receiver.url)
    await enqueue(billing, account_id)
    assert await billing.worker().drain() == 2
    assert (await webhook_job(billing)).status == "succeeded"
    assert len(receiver.received) == 1


@pytest.mark.parametrize("config_overrides", [ALLOW_PRIVATE])
async def test_delivery_connects_to_the_address_that_was_checked(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The request goes to the resolved (and checked) address, with the URL's own host in the
    Host header: a second lookup by the HTTP client cannot answer something else."""
    url = receiver.url.replace("127.0.0.1", "hooks.example.com")
    port = url.split(":")[2].split("/")[0]
    account_id, _ = await target(client, admin_key, url)
    monkeypatch.setattr(notifications, "resolve", resolving_to("127.0.0.1"))
    await enqueue(billing, account_id)
    assert await billing.worker().drain() == 2
    assert (await webhook_job(billing)).status == "succeeded"
    (headers, _), *_ = receiver.received
    assert headers["host"] == f"hooks.example.com:{port}"


def test_private_targets_are_refused_by_default() -> None:
    from aihub_billing.config import BillingConfig

    assert BillingConfig().notifications_allow_private_targets is False
    assert notifications.__class__().allow_private_targets is False


@pytest.mark.parametrize("role", ["member", "billing"])
async def test_roles_below_owner_cannot_read_the_notification_target(
    client: httpx.AsyncClient, admin_key: str, role: str
) -> None:
    account = await create_account(client, admin_key)
    owner = await issue_key(client, admin_key, account["id"], "owner")
    put = await client.put(
        f"{API}/quota/notifications",
        json={"webhook_url": "https://hooks.example.com/aihub?token=abc", "email": "cfo@a.test"},
        headers=auth(owner),
    )
    assert put.status_code == 200, put.text
    lower = await issue_key(client, admin_key, account["id"], role)
    # The same role may not set it (403) ...
    refused = await client.put(
        f"{API}/quota/notifications",
        json={"webhook_url": "https://hooks.example.com/other"},
        headers=auth(lower),
    )
    assert refused.status_code == 403
    # ... and must not read where the account's notifications go either.
    shown = await client.get(f"{API}/quota/notifications", headers=auth(lower))
    assert shown.status_code == 403, shown.text
