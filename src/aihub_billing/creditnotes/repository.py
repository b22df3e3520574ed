"""Queries of credit notes, the account balance ledger and the credit note number series."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.invoices.numbering import next_number
from aihub_billing.invoices.repository import InvoiceRepository
from aihub_billing.models import (
    Account,
    BalanceTransaction,
    CreditNote,
    CreditNoteLine,
    Invoice,
    InvoiceItem,
    InvoiceLine,
    Payment,
    RefundRecord,
)


class CreditNoteRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, row: CreditNote | CreditNoteLine | BalanceTransaction) -> None:
        self.session.add(row)

    # -- invoices (read and locked here; the invoices domain owns writing them) --------------

    async def invoice(self, invoice_id: str, *, lock: bool = False) -> Invoice | None:
        """With `lock`, the account's invoicing lock and then the row are held (PostgreSQL;
        SQLite has one writer) until the transaction ends, so two credit notes, or a note and
        a plan change's credit or a refund, never both see the same creditable amount."""
        if lock:
            return await InvoiceRepository(self.session).lock_invoice(invoice_id)
        query = select(Invoice).where(Invoice.id == invoice_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def invoice_lines(self, invoice_id: str) -> list[InvoiceLine]:
        result = await self.session.execute(
            select(InvoiceLine)
            .where(InvoiceLine.invoice_id == invoice_id)
            .order_by(InvoiceLine.position)
        )
        return list(result.scalars())

    async def credited_per_line(self, invoice_id: str) -> dict[str, tuple[int, int]]:
        """invoice line id -> (amount, tax) already credited on it."""
        result = await self.session.execute(
            select(
                CreditNoteLine.invoice_line_id,
                func.coalesce(func.sum(CreditNoteLine.amount_minor), 0),
                func.coalesce(func.sum(CreditNoteLine.tax_minor), 0),
            )
            .join(CreditNote, CreditNote.id == CreditNoteLine.credit_note_id)
            .where(CreditNote.invoice_id == invoice_id, CreditNoteLine.invoice_line_id.is_not(None))
            .group_by(CreditNoteLine.invoice_line_id)
        )
        return {str(line_id): (int(a), int(t)) for line_id, a, t in result.all()}

    async def credited_on_invoice(self, invoice_id: str) -> tuple[int, int]:
        """(subtotal, tax) of the credit notes already issued against the invoice."""
        result = await self.session.execute(
            select(
                func.coalesce(func.sum(CreditNote.subtotal_minor), 0),
                func.coalesce(func.sum(CreditNote.tax_minor), 0),
            ).where(CreditNote.invoice_id == invoice_id)
        )
        subtotal, tax = result.one()
        return int(subtotal), int(tax)

    async def prorated_on_invoice(self, invoice_id: str) -> int:
        """What proration credits gave back of the invoice's charges (a plan change after it
        was billed), net and before tax."""
        result = await self.session.execute(
            select(func.coalesce(func.sum(InvoiceItem.amount_minor), 0)).where(
                InvoiceItem.credited_invoice_id == invoice_id
            )
        )
        return max(0, -int(result.scalar_one()))

    async def given_back_subtotal(self, invoice_id: str) -> tuple[int, int]:
        """(the invoice's subtotal, what of it was given back already: its credit notes'
        subtotals, proration credits of its charges and refunds outside notes; 0, 0 when
        there is no such invoice). A refund counts whole, tax included: never too little."""
        subtotal = (
            await self.session.execute(
                select(Invoice.subtotal_minor).where(Invoice.id == invoice_id)
            )
        ).scalar_one_or_none()
        if subtotal is None:
            return 0, 0
        noted, _ = await self.credited_on_invoice(invoice_id)
        given = noted + await self.prorated_on_invoice(invoice_id)
        return int(subtotal), given + await self.refunded_of_invoice(invoice_id)

    async def refunded_of_invoice(self, invoice_id: str) -> int:
        """What refunds outside notes gave back of the invoice's own money: without the part
        that paid back an overpayment credit, which the invoice never took."""
        outside = await self.refunded_outside_notes(invoice_id)
        return outside - await self.refunds_paid_from_balance(invoice_id)

    async def refunded_outside_notes(self, invoice_id: str) -> int:
        """What was refunded (or is being refunded) of the invoice's payments other than by
        its credit notes (POST /payments/{id}/refund, a refund made at the provider)."""
        refunded = await self.session.execute(
            select(func.coalesce(func.sum(RefundRecord.amount_minor), 0))
            .join(Payment, Payment.id == RefundRecord.payment_id)
            .where(
                Payment.invoice_id == invoice_id,
                RefundRecord.credit_note_id.is_(None),
                RefundRecord.status.in_(("pending", "succeeded")),
            )
        )
        return int(refunded.scalar_one())

    async def refunds_paid_from_balance(self, invoice_id: str) -> int:
        """What the refunds counted by refunded_outside_notes paid back of their payments'
        overpayment credit (taken off the balance): money the invoice never took."""
        result = await self.session.execute(
            select(func.coalesce(func.sum(BalanceTransaction.amount_minor), 0))
            .join(RefundRecord, RefundRecord.id == BalanceTransaction.refund_id)
            .join(Payment, Payment.id == RefundRecord.payment_id)
            .where(
                Payment.invoice_id == invoice_id,
                RefundRecord.credit_note_id.is_(None),
                RefundRecord.status.in_(("pending", "succeeded")),
            )
        )
        return max(0, -int(result.scalar_one()))

    async def succeeded_payments(self, account_id: str, invoice_id: str) -> list[Payment]:
        result = await self.session.execute(
            select(Payment)
            .where(
                Payment.account_id == account_id,
                Payment.invoice_id == invoice_id,
                Payment.status == "succeeded",
                Payment.provider_payment_id.is_not(None),
            )
            .order_by(Payment.id)
        )
        return list(result.scalars())

    # -- credit notes ------------------------------------------------------------------------

    async def get(self, credit_note_id: str) -> CreditNote | None:
        return await self.session.get(CreditNote, credit_note_id)

    async def lines(self, credit_note_ids: Sequence[str]) -> dict[str, list[CreditNoteLine]]:
        """The lines of each note, in one query."""
        found: dict[str, list[CreditNoteLine]] = {i: [] for i in credit_note_ids}
        if not credit_note_ids:
            return found
        result = await self.session.execute(
            select(CreditNoteLine)
            .where(CreditNoteLine.credit_note_id.in_(credit_note_ids))
            .order_by(CreditNoteLine.id)
        )
        for line in result.scalars():
            found[line.credit_note_id].append(line)
        return found

    async def page(
        self,
        *,
        limit: int,
        account_id: str | None,
        invoice_id: str | None,
        after_id: str | None,
    ) -> list[CreditNote]:
        query = select(CreditNote).order_by(CreditNote.id).limit(limit)
        if account_id is not None:
            query = query.where(CreditNote.account_id == account_id)
        if invoice_id is not None:
            query = query.where(CreditNote.invoice_id == invoice_id)
        if after_id is not None:
            query = query.where(CreditNote.id > after_id)
        return list((await self.session.execute(query)).scalars())

    async def note_refunds(self, credit_note_ids: Sequence[str]) -> dict[str, list[RefundRecord]]:
        """The refunds each note made, in one query, with their status as it is now (the
        payments domain updates it when the provider reports a refund failed)."""
        found: dict[str, list[RefundRecord]] = {note_id: [] for note_id in credit_note_ids}
        if not credit_note_ids:
            return found
        result = await self.session.execute(
            select(RefundRecord)
            .where(RefundRecord.credit_note_id.in_(sorted(set(credit_note_ids))))
            .order_by(RefundRecord.id)
        )
        for refund in result.scalars():
            found[str(refund.credit_note_id)].append(refund)
        return found

    async def next_number(self, series: str) -> int:
        return await next_number(self.session, series)

    # -- balance ledger ----------------------------------------------------------------------

    async def lock_account(self, account_id: str) -> Account | None:
        """The account's row, held until the transaction ends (its balance takes turns) and
        read fresh; written first what this session changed (no autoflush)."""
        await self.session.flush()
        result = await self.session.execute(
            select(Account)
            .where(Account.id == account_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return result.scalar_one_or_none()

    async def account(self, account_id: str) -> Account | None:
        return await self.session.get(Account, account_id)

    async def balance(self, account_id: str, currency: str) -> int:
        return await self._sum(
            BalanceTransaction.account_id == account_id, BalanceTransaction.currency == currency
        )

    async def balances_of(self, account_ids: Sequence[str]) -> dict[tuple[str, str], int]:
        """Each account's balance per currency, as (account id, currency) -> minor units."""
        if not account_ids:
            return {}
        result = await self.session.execute(
            select(
                BalanceTransaction.account_id,
                BalanceTransaction.currency,
                func.sum(BalanceTransaction.amount_minor),
            )
            .where(BalanceTransaction.account_id.in_(sorted(set(account_ids))))
            .group_by(BalanceTransaction.account_id, BalanceTransaction.currency)
        )
        return {(str(a), str(c)): int(v) for a, c, v in result}

    async def balances(self, account_id: str) -> list[tuple[str, int]]:
        result = await self.session.execute(
            select(BalanceTransaction.currency, func.sum(BalanceTransaction.amount_minor))
            .where(BalanceTransaction.account_id == account_id)
            .group_by(BalanceTransaction.currency)
            .order_by(BalanceTransaction.currency)
        )
        return [(str(c), int(a)) for c, a in result.all()]

    async def transactions(self, account_id: str, *, limit: int) -> list[BalanceTransaction]:
        result = await self.session.execute(
            select(BalanceTransaction)
            .where(BalanceTransaction.account_id == account_id)
            .order_by(BalanceTransaction.id.desc())
            .limit(limit)
        )
        return list(result.scalars())

    async def overpaid(self, invoice_id: str, currency: str) -> int:
        """What the invoice's overpayments in `currency` credited."""
        return await self._sum(
            BalanceTransaction.invoice_id == invoice_id,
            BalanceTransaction.currency == currency,
            BalanceTransaction.kind == "overpayment",
        )

    async def overpayment_left(self, payment_id: str) -> int:
        """The payment's overpayment credit not taken back by its refunds."""
        return await self._sum(BalanceTransaction.payment_id == payment_id)

    async def refund_net(self, refund_id: str) -> int:
        """The net of the balance entries naming the refund (negative: it took credit)."""
        return await self._sum(BalanceTransaction.refund_id == refund_id)

    async def _sum(self, *where: ColumnElement[bool]) -> int:
        result = await self.session.execute(
            select(func.coalesce(func.sum(BalanceTransaction.amount_minor), 0)).where(*where)
        )
        return int(result.scalar_one())

    async def invoice_transactions(
        self, invoice_id: str, kinds: Sequence[str]
    ) -> list[BalanceTransaction]:
        result = await self.session.execute(
            select(BalanceTransaction).where(
                BalanceTransaction.invoice_id == invoice_id, BalanceTransaction.kind.in_(kinds)
            )
        )
        return list(result.scalars())

    async def credited_to_balance(
        self, credit_note_ids: Sequence[str]
    ) -> dict[str, tuple[int, int]]:
        """What each note added to the balance, and how much of that its failed refunds
        added, in one query."""
        if not credit_note_ids:
            return {}
        amount = BalanceTransaction.amount_minor
        failed = case((BalanceTransaction.kind == "refund_failed", amount), else_=0)
        result = await self.session.execute(
            select(BalanceTransaction.credit_note_id, func.sum(amount), func.sum(failed))
            .where(BalanceTransaction.credit_note_id.in_(credit_note_ids))
            .group_by(BalanceTransaction.credit_note_id)
        )
        return {str(note): (int(total), int(undone)) for note, total, undone in result.all()}

    async def refundable(self, payment: Payment) -> int:
        """What remains refundable of a payment: not yet refunded nor being refunded."""
        result = await self.session.execute(
            select(func.coalesce(func.sum(RefundRecord.amount_minor), 0)).where(
                RefundRecord.payment_id == payment.id,
                RefundRecord.status.in_(("pending", "succeeded")),
            )
        )
        return max(0, payment.amount_minor - int(result.scalar_one()))
