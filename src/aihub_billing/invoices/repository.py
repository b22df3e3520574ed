"""Queries of the invoices domain: invoices, lines, pending items, number sequences, locks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, delete, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.invoices.numbering import next_number, next_numbers
from aihub_billing.models import (
    Account,
    Invoice,
    InvoiceDocument,
    InvoiceItem,
    InvoiceLine,
    Subscription,
    SubscriptionEvent,
)

# Subscription history events that close or open a billed period (their time is the moment
# the period's items were recorded, so it bounds what an invoice collects).
_BOUNDARY_EVENTS = ("created", "trial_ended", "renewed", "canceled")


class InvoiceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def postgres(self) -> bool:
        bind = self.session.bind
        return bind is not None and bind.dialect.name == "postgresql"

    async def lock_account(self, account_id: str) -> None:
        """Serializes invoicing of one account until the transaction ends (PostgreSQL; SQLite
        has one writer at a time anyway)."""
        if self.postgres:
            await self.session.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:account_id))"),
                {"account_id": account_id},
            )

    async def get(self, invoice_id: str, *, lock: bool = False) -> Invoice | None:
        if not lock:
            return await self.session.get(Invoice, invoice_id)
        result = await self.session.execute(
            select(Invoice)
            .where(Invoice.id == invoice_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return result.scalar_one_or_none()

    async def by_key(
        self, subscription_id: str, billing_reason: str, period_start: datetime
    ) -> Invoice | None:
        result = await self.session.execute(
            select(Invoice).where(
                Invoice.subscription_id == subscription_id,
                Invoice.billing_reason == billing_reason,
                Invoice.period_start == period_start,
            )
        )
        return result.scalar_one_or_none()

    async def lines(self, invoice_id: str) -> list[InvoiceLine]:
        result = await self.session.execute(
            select(InvoiceLine)
            .where(InvoiceLine.invoice_id == invoice_id)
            .order_by(InvoiceLine.position)
        )
        return list(result.scalars())

    async def lines_of(self, invoice_ids: Sequence[str]) -> dict[str, list[InvoiceLine]]:
        out: dict[str, list[InvoiceLine]] = {i: [] for i in invoice_ids}
        if not invoice_ids:
            return out
        result = await self.session.execute(
            select(InvoiceLine)
            .where(InvoiceLine.invoice_id.in_(list(invoice_ids)))
            .order_by(InvoiceLine.invoice_id, InvoiceLine.position)
        )
        for row in result.scalars():
            out[row.invoice_id].append(row)
        return out

    async def delete_lines(self, line_ids: Sequence[str]) -> None:
        if line_ids:
            await self.session.execute(delete(InvoiceLine).where(InvoiceLine.id.in_(line_ids)))

    async def pending_items(self, subscription_id: str, until: datetime) -> list[InvoiceItem]:
        """Items not on an invoice yet, recorded up to `until`, in recording order."""
        result = await self.session.execute(
            select(InvoiceItem)
            .where(
                InvoiceItem.subscription_id == subscription_id,
                InvoiceItem.invoice_id.is_(None),
                InvoiceItem.created_at <= until,
            )
            .order_by(InvoiceItem.created_at, InvoiceItem.id)
        )
        return list(result.scalars())

    async def claim_items(self, item_ids: Sequence[str], invoice_id: str) -> int:
        if not item_ids:
            return 0
        result = await self.session.execute(
            update(InvoiceItem)
            .where(InvoiceItem.id.in_(list(item_ids)), InvoiceItem.invoice_id.is_(None))
            .values(invoice_id=invoice_id)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def close_time(self, subscription_id: str, boundary: datetime) -> datetime | None:
        """When the period boundary was processed: the first renewal/creation/cancellation
        event of the subscription at or after `boundary`."""
        result = await self.session.execute(
            select(func.min(SubscriptionEvent.at)).where(
                SubscriptionEvent.subscription_id == subscription_id,
                SubscriptionEvent.at >= boundary,
                SubscriptionEvent.type.in_(_BOUNDARY_EVENTS),
            )
        )
        return result.scalar_one_or_none()

    async def state_before(self, subscription_id: str, at: datetime) -> tuple[str, str] | None:
        """(plan id, status) of the subscription just before `at`, from its history."""
        result = await self.session.execute(
            select(SubscriptionEvent.to_plan_id, SubscriptionEvent.to_status)
            .where(SubscriptionEvent.subscription_id == subscription_id, SubscriptionEvent.at < at)
            .order_by(SubscriptionEvent.at.desc(), SubscriptionEvent.id.desc())
            .limit(1)
        )
        row = result.first()
        return None if row is None else (row[0], row[1])

    async def previous_usage_invoice(
        self, subscription_id: str, before: datetime, exclude_id: str | None
    ) -> Invoice | None:
        """The latest cycle/final invoice of the subscription whose period ended by `before`."""
        query = (
            select(Invoice)
            .where(
                Invoice.subscription_id == subscription_id,
                Invoice.billing_reason.in_(("subscription_cycle", "subscription_final")),
                Invoice.period_end <= before,
                Invoice.status != "void",
            )
            .order_by(Invoice.period_end.desc())
            .limit(1)
        )
        if exclude_id is not None:
            query = query.where(Invoice.id != exclude_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def invoiced_usage_minor(
        self, subscription_id: str, period_start: datetime, kinds: Sequence[str], exclude_id: str
    ) -> int:
        """What the subscription's invoices (void ones aside) billed as usage for a period."""
        result = await self.session.execute(
            select(func.coalesce(func.sum(InvoiceLine.amount_minor), 0))
            .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
            .where(
                Invoice.subscription_id == subscription_id,
                Invoice.status != "void",
                Invoice.id != exclude_id,
                InvoiceLine.period_start == period_start,
                InvoiceLine.kind.in_(list(kinds)),
            )
        )
        return int(result.scalar_one())

    async def next_number(self, series: str) -> int:
        return await next_number(self.session, series)

    async def next_numbers(self, series: str, count: int) -> int:
        return await next_numbers(self.session, series, count)

    async def account(self, account_id: str) -> Account | None:
        return await self.session.get(Account, account_id)

    async def subscription(self, subscription_id: str) -> Subscription | None:
        return await self.session.get(Subscription, subscription_id)

    async def open_subscription(self, account_id: str) -> Subscription | None:
        result = await self.session.execute(
            select(Subscription).where(
                Subscription.account_id == account_id, Subscription.status != "canceled"
            )
        )
        return result.scalar_one_or_none()

    async def closable_subscriptions(self, account_id: str | None) -> list[str]:
        """Subscriptions that may have a period to invoice: running ones, and ended ones
        without their final invoice."""
        final = (
            select(Invoice.id)
            .where(
                Invoice.subscription_id == Subscription.id,
                Invoice.billing_reason == "subscription_final",
            )
            .exists()
        )
        query = select(Subscription.id).where(
            or_(
                Subscription.status.in_(("active", "past_due", "paused")),
                and_(
                    Subscription.status == "canceled",
                    Subscription.ended_at.is_not(None),
                    ~final,
                ),
            )
        )
        if account_id is not None:
            query = query.where(Subscription.account_id == account_id)
        return list((await self.session.execute(query.order_by(Subscription.id))).scalars())

    async def page(
        self,
        *,
        account_id: str | None,
        status: str | None,
        subscription_id: str | None,
        period_from: datetime | None,
        period_to: datetime | None,
        before_id: str | None,
        limit: int,
    ) -> list[Invoice]:
        """Newest first (ids sort by creation time)."""
        query = select(Invoice).order_by(Invoice.id.desc()).limit(limit)
        if account_id is not None:
            query = query.where(Invoice.account_id == account_id)
        if status is not None:
            query = query.where(Invoice.status == status)
        if subscription_id is not None:
            query = query.where(Invoice.subscription_id == subscription_id)
        if period_from is not None:
            query = query.where(Invoice.period_start >= period_from)
        if period_to is not None:
            query = query.where(Invoice.period_end <= period_to)
        if before_id is not None:
            query = query.where(Invoice.id < before_id)
        return list((await self.session.execute(query)).scalars())

    async def document(self, invoice_id: str) -> InvoiceDocument | None:
        return await self.session.get(InvoiceDocument, invoice_id)

    def add(self, obj: Invoice | InvoiceLine | InvoiceDocument) -> None:
        self.session.add(obj)
