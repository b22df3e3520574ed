"""/webhooks/{provider}: no API key, the provider's signature is the authentication."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from aihub_billing.api.deps import BillingDep, SessionDep
from aihub_billing.api.routing import TransactionalRoute
from aihub_billing.errors import responses
from aihub_billing.payments.errors import ProviderNotConfigured, WebhookSignatureInvalid
from aihub_billing.webhooks.service import webhooks

router = APIRouter(prefix="/webhooks", tags=["webhooks"], route_class=TransactionalRoute)


class WebhookReceipt(BaseModel):
    received: bool = True
    duplicate: bool


async def _receive(
    provider: str, request: Request, session: SessionDep, billing: BillingDep
) -> WebhookReceipt:
    body = await request.body()
    verified = await billing.processor(provider).verify_webhook(request.headers, body)
    ctx = billing.context(request_id=getattr(request.state, "request_id", None))
    _, new = await webhooks.intake(session, ctx, verified)
    return WebhookReceipt(duplicate=not new)


@router.post("/stripe", responses=responses(WebhookSignatureInvalid, ProviderNotConfigured))
async def stripe_webhook(
    request: Request, session: SessionDep, billing: BillingDep
) -> WebhookReceipt:
    """Stripe events, verified by `Stripe-Signature` (300 s tolerance); stored once."""
    return await _receive("stripe", request, session, billing)


@router.post("/paypal", responses=responses(WebhookSignatureInvalid, ProviderNotConfigured))
async def paypal_webhook(
    request: Request, session: SessionDep, billing: BillingDep
) -> WebhookReceipt:
    """PayPal events, verified by their transmission signature; stored once."""
    return await _receive("paypal", request, session, billing)
