"""Queries of the invoices domain: invoices, lines, pending items, number sequences, locks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, delete, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.invoices.history import OVERRIDE_FIELDS, Event, History, UsageInvoice
from aihub_billing.invoices.numbering import next_number, next_numbers
from aihub_billing.models import (
    Account,
    AuditEntry,
    Invoice,
    InvoiceDocument,
    InvoiceItem,
    InvoiceLine,
    QuotaOverride,
    Subscription,
    SubscriptionEvent,
)


def _invoicing_lock(account_id: str) -> str:
    """The SQL that takes an account's invoicing lock until the transaction ends."""
    return f"pg_advisory_xact_lock(hashtext({account_id}))"


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
                text(f"SELECT {_invoicing_lock(':account_id')}"),
                {"account_id": account_id},
            )

    async def lock_invoice(self, invoice_id: str) -> Invoice | None:
        """The invoice's row, locked after its account's invoicing lock: the order every money
        change of an invoice keeps (account lock, subscription, invoice, payment, account
        row), so two of them on one account take turns instead of deadlocking. None when
        there is no such invoice."""
        account_id = (
            await self.session.execute(select(Invoice.account_id).where(Invoice.id == invoice_id))
        ).scalar_one_or_none()
        if account_id is None:
            return None
        await self.lock_account(account_id)
        # The locked read refreshes the row (populate_existing): first write what this
        # session changed, which would otherwise be overwritten (no autoflush).
        await self.session.flush()
        return await self.get(invoice_id, lock=True)

    async def lock_for_close(self, subscription_ids: Sequence[str]) -> list[Subscription]:
        """Period close of a batch: the accounts' invoicing locks (in account order, so that
        concurrent closes never deadlock), then the subscriptions' rows, in id order."""
        if not subscription_ids:
            return []
        ids = sorted(subscription_ids)
        if self.postgres:
            await self.session.execute(
                text(
                    f"SELECT count({_invoicing_lock('account_id')}) FROM ("
                    " SELECT DISTINCT account_id FROM subscriptions"
                    " WHERE id = ANY(CAST(:ids AS text[])) ORDER BY account_id) AS a"
                ),
                {"ids": ids},
            )
        result = await self.session.execute(
            select(Subscription)
            .where(Subscription.id.in_(ids))
            .order_by(Subscription.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return list(result.scalars())

    async def accounts(self, account_ids: Sequence[str]) -> list[Account]:
        if not account_ids:
            return []
        result = await self.session.execute(
            select(Account).where(Account.id.in_(list(account_ids)))
        )
        return list(result.scalars())

    async def by_keys(
        self, billing_reason: str, keys: Sequence[tuple[str, datetime]]
    ) -> dict[tuple[str, datetime], str]:
        """Ids of the invoices of `billing_reason` among (subscription id, period start) keys."""
        if not keys:
            return {}
        wanted = set(keys)
        result = await self.session.execute(
            select(Invoice.subscription_id, Invoice.period_start, Invoice.id).where(
                Invoice.billing_reason == billing_reason,
                Invoice.subscription_id.in_(sorted({sub for sub, _ in keys})),
                Invoice.period_start.in_(sorted({start for _, start in keys})),
            )
        )
        out: dict[tuple[str, datetime], str] = {}
        for subscription_id, period_start, invoice_id in result:
            key = (subscription_id or "", period_start)
            if key in wanted:
                out[key] = invoice_id
        return out

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

    async def histories(self, subscription_ids: Sequence[str]) -> dict[str, History]:
        """The subscriptions' events, usage invoices and uninvoiced items: three queries for
        any number of subscriptions (the session must be flushed)."""
        ids = sorted(set(subscription_ids))
        out = {i: History() for i in ids}
        if not ids:
            return out
        events = await self.session.execute(
            select(
                SubscriptionEvent.subscription_id,
                SubscriptionEvent.at,
                SubscriptionEvent.id,
                SubscriptionEvent.type,
                SubscriptionEvent.to_plan_id,
                SubscriptionEvent.to_status,
                SubscriptionEvent.to_price_id,
            ).where(SubscriptionEvent.subscription_id.in_(ids))
        )
        for subscription_id, at, event_id, kind, plan_id, status, price_id in events:
            out[subscription_id].events.append(Event(at, event_id, kind, plan_id, status, price_id))
        usage_invoices = await self.session.execute(
            select(
                Invoice.subscription_id,
                Invoice.id,
                Invoice.status,
                Invoice.period_start,
                Invoice.period_end,
            ).where(
                Invoice.subscription_id.in_(ids),
                Invoice.billing_reason.in_(("subscription_cycle", "subscription_final")),
                Invoice.status != "void",
            )
        )
        for of_subscription, invoice_id, status, start, end in usage_invoices:
            out[str(of_subscription)].usage_invoices.append(
                UsageInvoice(invoice_id, status, start, end)
            )
        items = await self.session.execute(
            select(InvoiceItem).where(
                InvoiceItem.subscription_id.in_(ids), InvoiceItem.invoice_id.is_(None)
            )
        )
        for item in items.scalars():
            out[str(item.subscription_id)].pending.append(item)
        await self._override_histories(out)
        return out

    async def _override_histories(self, out: dict[str, History]) -> None:
        """Each subscription's account's quota override and its recorded changes."""
        accounts = await self.session.execute(
            select(Subscription.id, Subscription.account_id).where(Subscription.id.in_(out))
        )
        by_account: dict[str, list[History]] = {}
        for subscription_id, account_id in accounts:
            by_account.setdefault(account_id, []).append(out[subscription_id])
        if not by_account:
            return
        columns = [getattr(QuotaOverride, f) for f in OVERRIDE_FIELDS]
        rows = await self.session.execute(
            select(QuotaOverride.account_id, *columns).where(
                QuotaOverride.account_id.in_(by_account)
            )
        )
        for account_id, *values in rows:
            for history in by_account[account_id]:
                history.override_now = dict(zip(OVERRIDE_FIELDS, values, strict=True))
        changes = await self.session.execute(
            select(AuditEntry.object_id, AuditEntry.at, AuditEntry.after)
            .where(
                AuditEntry.object_type == "quota_override",
                AuditEntry.object_id.in_(by_account),
            )
            .order_by(AuditEntry.id)
        )
        for account_id, at, after in changes:
            for history in by_account[account_id]:
                history.override_changes.append((at, after))

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
