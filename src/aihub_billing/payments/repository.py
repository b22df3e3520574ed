"""Queries on provider customers, payment methods, payments, refunds and disputes."""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.invoices.repository import InvoiceRepository
from aihub_billing.models import (
    Account,
    DisputeRecord,
    Invoice,
    Payment,
    PaymentCustomer,
    PaymentMethodRecord,
    PaymentSettings,
    RefundRecord,
    Subscription,
)

_OPEN_REFUND_STATUSES = ("pending", "succeeded")


class PaymentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(
        self,
        obj: PaymentCustomer
        | PaymentMethodRecord
        | Payment
        | RefundRecord
        | DisputeRecord
        | PaymentSettings,
    ) -> None:
        self.session.add(obj)

    async def settings(self, account_id: str) -> PaymentSettings | None:
        return await self.session.get(PaymentSettings, account_id)

    async def subscription(self, subscription_id: str) -> Subscription | None:
        return await self.session.get(Subscription, subscription_id)

    async def subscription_of_invoice(
        self, account_id: str, invoice_id: str
    ) -> Subscription | None:
        """The account's subscription the invoice `invoice_id` bills."""
        result = await self.session.execute(
            select(Subscription)
            .join(Invoice, Invoice.subscription_id == Subscription.id)
            .where(Invoice.account_id == account_id, Invoice.id == invoice_id)
        )
        return result.scalar_one_or_none()

    async def invoice(self, account_id: str, invoice_id: str) -> Invoice | None:
        """The account's invoice `invoice_id`."""
        result = await self.session.execute(
            select(Invoice).where(Invoice.account_id == account_id, Invoice.id == invoice_id)
        )
        return result.scalar_one_or_none()

    async def account(self, account_id: str) -> Account | None:
        return await self.session.get(Account, account_id)

    async def customer(self, account_id: str, provider: str) -> PaymentCustomer | None:
        result = await self.session.execute(
            select(PaymentCustomer).where(
                PaymentCustomer.account_id == account_id, PaymentCustomer.provider == provider
            )
        )
        return result.scalar_one_or_none()

    async def method(self, method_id: str) -> PaymentMethodRecord | None:
        return await self.session.get(PaymentMethodRecord, method_id)

    async def method_by_token(self, provider: str, token: str) -> PaymentMethodRecord | None:
        result = await self.session.execute(
            select(PaymentMethodRecord).where(
                PaymentMethodRecord.provider == provider,
                PaymentMethodRecord.provider_method_id == token,
            )
        )
        return result.scalar_one_or_none()

    async def methods(self, account_id: str) -> list[PaymentMethodRecord]:
        result = await self.session.execute(
            select(PaymentMethodRecord)
            .where(
                PaymentMethodRecord.account_id == account_id,
                PaymentMethodRecord.status == "active",
            )
            .order_by(PaymentMethodRecord.id)
        )
        return list(result.scalars())

    async def payment(self, payment_id: str, *, for_update: bool = False) -> Payment | None:
        """With `for_update`, the row is held until the transaction ends, and read fresh."""
        if for_update:
            return await self._locked(Payment.id == payment_id)
        query = select(Payment).where(Payment.id == payment_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def payment_by_refs(self, provider: str, refs: list[str]) -> Payment | None:
        """The payment whose provider payment id or charge id is one of `refs`, locked."""
        if not refs:
            return None
        return await self._locked(
            Payment.provider == provider,
            (Payment.provider_payment_id.in_(refs)) | (Payment.provider_charge_id.in_(refs)),
        )

    async def _locked(self, *where: ColumnElement[bool]) -> Payment | None:
        """The first payment matching `where`, locked after its invoice (and the invoice's
        account lock): the lock order of every money change (account lock, subscription,
        invoice, payment, account row). A payment's success pays its invoice and a refund is
        capped by what the invoice gave back, so the invoice is taken first, never after.

        Read with populate_existing: a session that loaded the payment before the lock (a
        credit note reads the invoice's payments) would otherwise keep the stale row and
        overwrite a concurrent refund's `refunded_minor`."""
        found = (
            await self.session.execute(
                select(Payment.id, Payment.invoice_id).where(*where).order_by(Payment.id).limit(1)
            )
        ).first()
        if found is None:
            return None
        payment_id, invoice_id = found
        if invoice_id is not None:  # an id of no invoice of ours locks nothing
            await InvoiceRepository(self.session).lock_invoice(invoice_id)
        await self.session.flush()  # no autoflush: unwritten changes would be overwritten
        result = await self.session.execute(
            select(Payment)
            .where(Payment.id == payment_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return result.scalar_one_or_none()

    async def page(
        self, *, limit: int, account_id: str | None, after_id: str | None
    ) -> list[Payment]:
        query = select(Payment).order_by(Payment.id).limit(limit)
        if account_id is not None:
            query = query.where(Payment.account_id == account_id)
        if after_id is not None:
            query = query.where(Payment.id > after_id)
        return list((await self.session.execute(query)).scalars())

    async def refunded_or_pending(self, payment_id: str) -> int:
        result = await self.session.execute(
            select(func.coalesce(func.sum(RefundRecord.amount_minor), 0)).where(
                RefundRecord.payment_id == payment_id,
                RefundRecord.status.in_(_OPEN_REFUND_STATUSES),
            )
        )
        return int(result.scalar_one())

    async def refund_by_provider_id(self, provider: str, refund_id: str) -> RefundRecord | None:
        result = await self.session.execute(
            select(RefundRecord).where(
                RefundRecord.provider == provider, RefundRecord.provider_refund_id == refund_id
            )
        )
        return result.scalar_one_or_none()

    async def unidentified_refunds(self, payment_id: str) -> list[RefundRecord]:
        """Succeeded refunds known only from a refunded total (no provider refund id)."""
        result = await self.session.execute(
            select(RefundRecord)
            .where(
                RefundRecord.payment_id == payment_id,
                RefundRecord.provider_refund_id.is_(None),
                RefundRecord.status == "succeeded",
            )
            .order_by(RefundRecord.id)
        )
        return list(result.scalars())

    async def refunds(self, payment_id: str) -> list[RefundRecord]:
        result = await self.session.execute(
            select(RefundRecord)
            .where(RefundRecord.payment_id == payment_id)
            .order_by(RefundRecord.id)
        )
        return list(result.scalars())

    async def dispute(self, provider: str, dispute_id: str) -> DisputeRecord | None:
        result = await self.session.execute(
            select(DisputeRecord).where(
                DisputeRecord.provider == provider,
                DisputeRecord.provider_dispute_id == dispute_id,
            )
        )
        return result.scalar_one_or_none()
