"""Queries on stored webhook events."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.models import WebhookEvent


class WebhookRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, event: WebhookEvent) -> None:
        self.session.add(event)

    async def get(self, event_id: str, *, for_update: bool = False) -> WebhookEvent | None:
        query = select(WebhookEvent).where(WebhookEvent.id == event_id)
        if for_update:
            # A copy loaded before must not hide what the lock waited for.
            query = query.with_for_update().execution_options(populate_existing=True)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def by_provider_id(self, provider: str, event_id: str) -> WebhookEvent | None:
        result = await self.session.execute(
            select(WebhookEvent).where(
                WebhookEvent.provider == provider, WebhookEvent.event_id == event_id
            )
        )
        return result.scalar_one_or_none()
