"""Queries on subscriptions, their history and invoice items."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.models import (
    Account,
    Invoice,
    InvoiceItem,
    Plan,
    PlanPrice,
    Subscription,
    SubscriptionEvent,
    TestClockAccount,
)

# Statuses in which the account gets its subscription's plan; others fall back to free.
ENTITLED = ("trialing", "active", "past_due")


class SubscriptionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, subscription_id: str, *, lock: bool = False) -> Subscription | None:
        """With `lock`, the row is held (FOR UPDATE on PostgreSQL) until the transaction ends,
        so two changes of one subscription never prorate from the same state."""
        if not lock:
            return await self.session.get(Subscription, subscription_id)
        result = await self.session.execute(
            select(Subscription)
            .where(Subscription.id == subscription_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return result.scalar_one_or_none()

    async def by_provider_id(
        self, provider: str, provider_subscription_id: str
    ) -> Subscription | None:
        """The subscription linked to a provider-side one (the newest, if relinked)."""
        result = await self.session.execute(
            select(Subscription)
            .where(
                Subscription.payment_provider == provider,
                Subscription.provider_subscription_id == provider_subscription_id,
            )
            .order_by(Subscription.created_at.desc())
            .limit(1)
        )
        return result.scalar_one_or_none()

    async def account(self, account_id: str) -> Account | None:
        return await self.session.get(Account, account_id)

    async def open_for_account(self, account_id: str) -> Subscription | None:
        """The account's subscription that is not canceled (the partial unique index)."""
        result = await self.session.execute(
            select(Subscription).where(
                Subscription.account_id == account_id, Subscription.status != "canceled"
            )
        )
        return result.scalar_one_or_none()

    async def entitled_with_plan(self, account_id: str) -> tuple[Subscription, Plan] | None:
        """One indexed query: the subscription whose plan the account is on, with the plan."""
        result = await self.session.execute(
            select(Subscription, Plan)
            .join(Plan, Plan.id == Subscription.plan_id)
            .where(Subscription.account_id == account_id, Subscription.status.in_(ENTITLED))
        )
        row = result.first()
        return None if row is None else (row[0], row[1])

    async def events(
        self, account_id: str, *, limit: int, after_id: str | None
    ) -> list[SubscriptionEvent]:
        query = (
            select(SubscriptionEvent)
            .where(SubscriptionEvent.account_id == account_id)
            .order_by(SubscriptionEvent.id)
            .limit(limit)
        )
        if after_id is not None:
            query = query.where(SubscriptionEvent.id > after_id)
        return list((await self.session.execute(query)).scalars())

    async def items(self, subscription_id: str) -> list[InvoiceItem]:
        result = await self.session.execute(
            select(InvoiceItem)
            .where(InvoiceItem.subscription_id == subscription_id)
            .order_by(InvoiceItem.id)
        )
        return list(result.scalars())

    async def invoice_status(self, invoice_id: str) -> str | None:
        result = await self.session.execute(select(Invoice.status).where(Invoice.id == invoice_id))
        return result.scalar_one_or_none()

    async def items_ending(self, subscription_id: str, period_end: datetime) -> list[InvoiceItem]:
        """The subscription's items whose period ends at `period_end`, in recording order."""
        result = await self.session.execute(
            select(InvoiceItem)
            .where(
                InvoiceItem.subscription_id == subscription_id,
                InvoiceItem.period_end == period_end,
            )
            .order_by(InvoiceItem.created_at, InvoiceItem.id)
        )
        return list(result.scalars())

    async def open_by_price_terms(self) -> list[tuple[str, str, str, int, int, int]]:
        """Subscriptions that are not canceled, grouped by (status, currency, interval unit,
        interval count): how many, and the sum of their prices' amounts. One query, over the
        open subscriptions only (the rows of the partial unique index), for /metrics.
        Accounts on a test clock are left out: a simulation is no subscriber, no revenue."""
        simulated = select(TestClockAccount.account_id).where(
            TestClockAccount.account_id == Subscription.account_id
        )
        result = await self.session.execute(
            select(
                Subscription.status,
                PlanPrice.currency,
                PlanPrice.interval_unit,
                PlanPrice.interval_count,
                func.count(),
                func.coalesce(func.sum(PlanPrice.amount_minor), 0),
            )
            .join(PlanPrice, PlanPrice.id == Subscription.price_id)
            .where(Subscription.status != "canceled", ~simulated.exists())
            .group_by(
                Subscription.status,
                PlanPrice.currency,
                PlanPrice.interval_unit,
                PlanPrice.interval_count,
            )
        )
        return [(s, c, u, n, int(count), int(total)) for s, c, u, n, count, total in result]

    def add(self, obj: Subscription | SubscriptionEvent | InvoiceItem) -> None:
        self.session.add(obj)
