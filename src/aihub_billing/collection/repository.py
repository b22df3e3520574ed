"""Queries of the collection domain."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.invoices.repository import InvoiceRepository
from aihub_billing.models import (
    Invoice,
    Payment,
    PaymentMethodRecord,
    PaymentSettings,
    Subscription,
)
from aihub_billing.payments.payment_types import PaymentStatus

# A payment still waiting for the buyer (3-D Secure, PayPal approval) or for confirmation.
_WAITING = (PaymentStatus.REQUIRES_ACTION, PaymentStatus.REQUIRES_CONFIRMATION)


class CollectionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def invoice(self, invoice_id: str, *, lock: bool = False) -> Invoice | None:
        """With `lock`, the account's invoicing lock and then the invoice's row, as every money
        change of an invoice takes them (mark-paid, void, credit notes): the other order
        deadlocked collection against an operator's mark-paid."""
        if lock:
            return await InvoiceRepository(self.session).lock_invoice(invoice_id)
        query = select(Invoice).where(Invoice.id == invoice_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def subscription(
        self, subscription_id: str, *, lock: bool = False
    ) -> Subscription | None:
        query = select(Subscription).where(Subscription.id == subscription_id)
        if lock:
            # Fresh values, not the ones this session loaded before the lock.
            query = query.with_for_update().execution_options(populate_existing=True)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def default_provider(self, account_id: str) -> str | None:
        settings = await self.session.get(PaymentSettings, account_id)
        return settings.default_provider if settings else None

    async def active_methods(self, account_id: str, provider: str) -> list[PaymentMethodRecord]:
        """The account's usable methods at the provider, newest first."""
        result = await self.session.execute(
            select(PaymentMethodRecord)
            .where(
                PaymentMethodRecord.account_id == account_id,
                PaymentMethodRecord.provider == provider,
                PaymentMethodRecord.status == "active",
            )
            .order_by(PaymentMethodRecord.created_at.desc(), PaymentMethodRecord.id.desc())
        )
        return list(result.scalars())

    async def waiting_payment(self, invoice_id: str, provider: str) -> Payment | None:
        """The invoice's latest payment at `provider` that the buyer may have authorized since."""
        result = await self.session.execute(
            select(Payment)
            .where(
                Payment.invoice_id == invoice_id,
                Payment.provider == provider,
                Payment.status.in_(_WAITING),
            )
            .order_by(Payment.created_at.desc(), Payment.id.desc())
            .limit(1)
        )
        return result.scalar_one_or_none()

    async def payment(self, payment_id: str) -> Payment | None:
        return await self.session.get(Payment, payment_id)

    async def existing_payment_ids(self, payment_ids: list[str]) -> set[str]:
        """Those of `payment_ids` that name a payment row."""
        result = await self.session.execute(select(Payment.id).where(Payment.id.in_(payment_ids)))
        return set(result.scalars())

    async def succeeded_minor(self, invoice_id: str, currency: str) -> int:
        """What the invoice's succeeded payments in `currency` took, in minor units."""
        result = await self.session.execute(
            select(func.coalesce(func.sum(Payment.amount_minor), 0)).where(
                Payment.invoice_id == invoice_id,
                Payment.currency == currency,
                Payment.status == PaymentStatus.SUCCEEDED,
            )
        )
        return int(result.scalar_one())
