"""Credit notes: issued against an open or paid invoice, by line or by amount, never above
what remains creditable; the credit reduces what is still owed, goes to the account balance,
or is refunded through the processor that took the payment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.audit.service import audit
from aihub_billing.creditnotes import balance, schemas
from aihub_billing.creditnotes.allocation import (
    Credit,
    ExceedsCreditable,
    InvoiceState,
    LineState,
    check_invoice,
    credit_amount,
    credit_line,
    land,
)
from aihub_billing.creditnotes.errors import (
    AccountNotFound,
    CreditNoteExceedsCreditable,
    CreditNoteNotFound,
    CurrencyMismatch,
    DuplicateInvoiceLine,
    InvoiceLineNotFound,
    InvoiceNotCreditable,
    InvoiceNotFound,
    RefundNotPossible,
)
from aihub_billing.creditnotes.repository import CreditNoteRepository
from aihub_billing.errors import Forbidden
from aihub_billing.invoices.numbering import series_for
from aihub_billing.invoices.service import invoices
from aihub_billing.kit.context import Context, Role
from aihub_billing.kit.ids import new_id
from aihub_billing.kit.money import round_quotient
from aihub_billing.kit.pagination import id_page
from aihub_billing.models import (
    CreditNote,
    CreditNoteLine,
    Invoice,
    InvoiceLine,
    Payment,
    RefundRecord,
)
from aihub_billing.payments.errors import RefundExceedsPayment
from aihub_billing.payments.payment_types import REFUND_UNDONE_STATUSES
from aihub_billing.payments.providers.base import ProcessorLookup
from aihub_billing.payments.schemas import RefundCreate
from aihub_billing.payments.service import before_refund, on_refund_undone, payments
from aihub_billing.testclocks.service import test_clocks

CREDITABLE_STATUSES = ("open", "paid")


class CreditNoteService:
    async def create(
        self,
        session: AsyncSession,
        ctx: Context,
        processors: ProcessorLookup,
        invoice_id: str,
        data: schemas.CreditNoteCreate,
    ) -> schemas.CreditNote:
        _require_billing(ctx)
        repo = CreditNoteRepository(session)
        # Held until the transaction ends (with the account's invoicing lock, taken first):
        # concurrent notes, refunds and plan change credits of one invoice take turns.
        invoice = await repo.invoice(invoice_id, lock=True)
        if invoice is None or not ctx.actor.can_access(invoice.account_id):
            raise InvoiceNotFound(f"no invoice {invoice_id!r}")
        if invoice.status not in CREDITABLE_STATUSES:
            raise InvoiceNotCreditable(f"invoice {invoice.id} is {invoice.status}")
        # The note, its balance credit and its audit are at the account's time (its test
        # clock's, when attached), like the account's invoices; the refund stays with the
        # payments domain, which keeps the request's time.
        clocked, clock_id = await test_clocks.context_for(session, ctx, invoice.account_id)
        if data.currency is not None and data.currency != invoice.currency:
            raise CurrencyMismatch(f"the invoice is in {invoice.currency}, not {data.currency}")
        state = await _state(repo, invoice, await repo.refunded_of_invoice(invoice.id))
        try:
            parts = await self._parts(repo, invoice, state, data)
            check_invoice(state, [credit for _, credit in parts])
        except ExceedsCreditable as exc:
            raise CreditNoteExceedsCreditable(str(exc)) from None
        subtotal = sum(c.amount_minor for _, c in parts)
        tax = sum(c.tax_minor for _, c in parts)
        total = subtotal + tax

        owed = invoice.amount_due_minor - invoice.amount_paid_minor
        landing = land(total, owed, open_invoice=invoice.status == "open")
        refunds: list[RefundRecord] = []
        to_balance = landing.rest
        if invoice.status == "paid" and data.outcome == "refund":
            refunds = await self._refund(session, ctx, processors, invoice, total, data)
            to_balance = 0
        # What the provider refused at once is owed all the same: it goes to the balance.
        refused = sum(r.amount_minor for r in refunds if r.status in REFUND_UNDONE_STATUSES)

        now = clocked.clock.now()
        series = series_for("CN", now.year, test_clock=clock_id is not None)
        sequence = await repo.next_number(series)
        note = CreditNote(
            id=new_id("cn", now),
            invoice_id=invoice.id,
            account_id=invoice.account_id,
            series=series,
            sequence=sequence,
            number=f"{series}-{sequence:06d}",
            reason=data.reason,
            memo=data.memo,
            outcome=data.outcome,
            currency=invoice.currency,
            subtotal_minor=subtotal,
            tax_minor=tax,
            total_minor=total,
            refund_id=refunds[0].id if refunds else None,
            refund_status=_overall([r.status for r in refunds]) if refunds else None,
            created_at=now,
        )
        repo.add(note)
        await session.flush()
        for refund in refunds:
            refund.credit_note_id = note.id
        for line, credit in parts:
            repo.add(
                CreditNoteLine(
                    id=new_id("cnl", now),
                    credit_note_id=note.id,
                    invoice_line_id=line.id if line else None,
                    description=line.description if line else _plain_description(invoice),
                    amount_minor=credit.amount_minor,
                    tax_minor=credit.tax_minor,
                )
            )
        before_due = invoice.amount_due_minor
        before_invoice = await invoices.render(session, invoice)
        invoice.amount_due_minor -= landing.off_amount_due
        invoice.amount_credited_minor += total
        invoice.updated_at = now
        await session.flush()
        credits: tuple[tuple[int, Literal["credit_note", "refund_failed"], str], ...] = (
            (to_balance, "credit_note", f"Credit note {note.number}"),
            (refused, "refund_failed", f"Credit note {note.number}: its refund was refused"),
        )
        for amount, kind, description in credits:
            if amount > 0:
                await balance.credit(
                    session,
                    clocked,
                    account_id=invoice.account_id,
                    currency=invoice.currency,
                    amount_minor=amount,
                    credit_note_id=note.id,
                    invoice_id=invoice.id,
                    description=description,
                    kind=kind,
                )
        await invoices.settle_if_covered(session, clocked, invoice, before_invoice)
        await invoices.document_changed(session, clocked, invoice, clock_id)
        view = await self._view(repo, note)
        await audit.record(
            session,
            clocked,
            action="credit_note.created",
            object_type="credit_note",
            object_id=note.id,
            account_id=note.account_id,
            after=view,
        )
        await audit.record(
            session,
            clocked,
            action="invoice.credited",
            object_type="invoice",
            object_id=invoice.id,
            account_id=invoice.account_id,
            before=_InvoiceCredit(
                amount_due_minor=before_due,
                amount_credited_minor=invoice.amount_credited_minor - total,
            ),
            after=_InvoiceCredit(
                amount_due_minor=invoice.amount_due_minor,
                amount_credited_minor=invoice.amount_credited_minor,
            ),
        )
        return view

    async def get(
        self, session: AsyncSession, ctx: Context, credit_note_id: str
    ) -> schemas.CreditNote:
        _require_billing(ctx)
        repo = CreditNoteRepository(session)
        note = await repo.get(credit_note_id)
        if note is None or not ctx.actor.can_access(note.account_id):
            raise CreditNoteNotFound(f"no credit note {credit_note_id!r}")
        return await self._view(repo, note)

    async def page(
        self,
        session: AsyncSession,
        ctx: Context,
        *,
        account_id: str | None,
        invoice_id: str | None,
        cursor: str | None,
        limit: int | None,
    ) -> tuple[list[schemas.CreditNote], str | None]:
        _require_billing(ctx)
        if not ctx.actor.is_operator:
            if account_id is not None and account_id != ctx.actor.account_id:
                return [], None
            account_id = ctx.actor.account_id
        repo = CreditNoteRepository(session)
        rows, next_cursor = await id_page(
            cursor,
            limit,
            lambda after_id, n: repo.page(
                limit=n, account_id=account_id, invoice_id=invoice_id, after_id=after_id
            ),
        )
        return await self._views(repo, rows), next_cursor

    async def account_balance(
        self, session: AsyncSession, ctx: Context, account_id: str
    ) -> schemas.AccountBalance:
        _require_billing(ctx)
        await self._account(session, ctx, account_id)
        return await balance.summary(session, account_id)

    async def adjust_balance(
        self,
        session: AsyncSession,
        ctx: Context,
        account_id: str,
        data: schemas.BalanceAdjustmentCreate,
    ) -> schemas.BalanceTransaction:
        if not ctx.actor.is_operator:
            raise Forbidden("only the operator adjusts balances")
        await self._account(session, ctx, account_id)
        clocked, _ = await test_clocks.context_for(session, ctx, account_id)
        row = await balance.adjust(session, clocked, account_id, data)
        return schemas.BalanceTransaction.model_validate(row)

    # -- helpers -----------------------------------------------------------------------------

    async def _parts(
        self,
        repo: CreditNoteRepository,
        invoice: Invoice,
        state: InvoiceState,
        data: schemas.CreditNoteCreate,
    ) -> list[tuple[InvoiceLine | None, Credit]]:
        if data.lines is None:
            assert data.amount_minor is not None  # the schema requires one of the two
            return [(None, credit_amount(state, data.amount_minor))]
        lines = {line.id: line for line in await repo.invoice_lines(invoice.id)}
        credited = await repo.credited_per_line(invoice.id)
        parts: list[tuple[InvoiceLine | None, Credit]] = []
        seen: set[str] = set()
        for wanted in data.lines:
            if wanted.invoice_line_id in seen:
                raise DuplicateInvoiceLine(f"line {wanted.invoice_line_id!r} appears twice")
            seen.add(wanted.invoice_line_id)
            line = lines.get(wanted.invoice_line_id)
            if line is None:
                raise InvoiceLineNotFound(
                    f"invoice {invoice.id} has no line {wanted.invoice_line_id!r}"
                )
            amount, tax = credited.get(line.id, (0, 0))
            line_state = LineState(
                amount_minor=line.amount_minor,
                tax_minor=line.tax_minor,
                tax_rate=line.tax_rate,
                credited_amount_minor=amount,
                credited_tax_minor=tax,
            )
            try:
                parts.append((line, credit_line(line_state, wanted.amount_minor, invoice.currency)))
            except ExceedsCreditable as exc:
                raise ExceedsCreditable(f"line {line.id}: {exc}") from None
        return parts

    async def _refund(
        self,
        session: AsyncSession,
        ctx: Context,
        processors: ProcessorLookup,
        invoice: Invoice,
        total: int,
        data: schemas.CreditNoteCreate,
    ) -> list[RefundRecord]:
        """Refunds `total` through the processor(s) of the invoice's succeeded payments;
        returns the refunds made."""
        repo = CreditNoteRepository(session)
        found = [
            p
            for p in await repo.succeeded_payments(invoice.account_id, invoice.id)
            if p.currency == invoice.currency
        ]
        if not found:
            raise RefundNotPossible(f"invoice {invoice.id} has no payment through a processor")
        plan: list[tuple[str, int]] = []
        left = total
        for payment in found:
            part = min(left, await repo.refundable(payment))
            if part > 0:
                plan.append((payment.id, part))
                left -= part
        if left > 0:
            raise RefundNotPossible(
                f"only {total - left} of {total} minor units remain refundable; "
                "credit the rest to the balance"
            )
        return [
            await payments.refund(
                session,
                ctx,
                processors,
                payment_id,
                RefundCreate(amount_minor=part, reason=f"credit note: {data.reason}"),
                for_credit_note=True,
            )
            for payment_id, part in plan
        ]

    async def refund_guard(
        self, session: AsyncSession, ctx: Context, payment: Payment, amount_minor: int
    ) -> None:
        """Refuses (409 refund_exceeds_payment) a refund of an invoice's payment, other than a
        note's, above what the invoice has not given back yet: a note that credited the
        invoice to the balance, a plan change's credit or another refund already returned
        that money. The part that pays back the payment's overpayment credit (money the
        invoice never took) is not the invoice's. The payment's lock came after the
        invoice's, so the figures hold until the refund is recorded."""
        if payment.invoice_id is None:
            return
        repo = CreditNoteRepository(session)
        invoice = await repo.invoice(payment.invoice_id)
        if invoice is None or invoice.currency != payment.currency:
            return  # none of its money went to an invoice of ours: all of it is overpayment
        refunded = await repo.refunded_of_invoice(invoice.id)
        left = (await _state(repo, invoice, refunded)).creditable
        overpaid = max(0, min(amount_minor, await repo.overpayment_left(payment.id)))
        if amount_minor - overpaid > left:
            raise RefundExceedsPayment(
                f"at most {left + overpaid} {payment.currency} minor units: the rest of "
                f"invoice {invoice.number or invoice.id} was given back already (credit "
                "notes, plan change credits, refunds)"
            )

    async def refund_undone(
        self, session: AsyncSession, ctx: Context, refund: RefundRecord
    ) -> None:
        """A note's refund failed or was canceled at the provider after the note was issued
        (payments' on_refund_undone): what it would have paid back goes to the balance."""
        if refund.credit_note_id is None:
            return  # a refund of the payment itself: the payment simply stays paid
        note = await CreditNoteRepository(session).get(refund.credit_note_id)
        assert note is not None, "a refund names an existing note (foreign key)"
        clocked, _ = await test_clocks.context_for(session, ctx, note.account_id)
        await balance.credit(
            session,
            clocked,
            account_id=note.account_id,
            currency=note.currency,
            amount_minor=refund.amount_minor,
            credit_note_id=note.id,
            invoice_id=note.invoice_id,
            description=f"Credit note {note.number}: refund {refund.id} {refund.status}",
            kind="refund_failed",
        )

    async def _view(self, repo: CreditNoteRepository, note: CreditNote) -> schemas.CreditNote:
        return (await self._views(repo, [note]))[0]

    async def _views(
        self, repo: CreditNoteRepository, notes: list[CreditNote]
    ) -> list[schemas.CreditNote]:
        ids = [n.id for n in notes]
        lines = await repo.lines(ids)
        to_balance = await repo.credited_to_balance(ids)
        refunds = await repo.note_refunds(ids)
        views = []
        for note in notes:
            view = schemas.CreditNote.model_validate(note)
            view.lines = [schemas.CreditNoteLine.model_validate(x) for x in lines[note.id]]
            credited, undone_credited = to_balance.get(note.id, (0, 0))
            view.credited_to_balance_minor = credited
            # A refund note sent its whole total to the processor(s) when it was issued.
            sent = note.total_minor if note.refund_id is not None else 0
            applied = note.total_minor - sent - (credited - undone_credited)
            view.applied_to_amount_due_minor = applied
            view.refund_status, view.refunded_minor = _refund_now(note, refunds[note.id], sent)
            views.append(view)
        return views

    async def _account(self, session: AsyncSession, ctx: Context, account_id: str) -> None:
        account = await CreditNoteRepository(session).account(account_id)
        if account is None or not ctx.actor.can_access(account.id):
            raise AccountNotFound(f"no account {account_id!r}")


async def _state(repo: CreditNoteRepository, invoice: Invoice, refunded: int) -> InvoiceState:
    """The invoice with what its credit notes, plan change credits and `refunded` (what was
    refunded of its payments outside notes) gave back of it already."""
    credited_subtotal, credited_tax = await repo.credited_on_invoice(invoice.id)
    # A plan change after the invoice gave part of its charge back as a proration credit
    # (landing on a later invoice or the balance): that part, with its share of the tax,
    # is no longer the credit notes' to give.
    prorated = await repo.prorated_on_invoice(invoice.id)
    if prorated and invoice.subtotal_minor > 0:
        credited_subtotal += prorated
        credited_tax += round_quotient(prorated * invoice.tax_minor, invoice.subtotal_minor)
    return InvoiceState(
        currency=invoice.currency,
        subtotal_minor=invoice.subtotal_minor,
        tax_minor=invoice.tax_minor,
        total_minor=invoice.total_minor,
        credited_subtotal_minor=credited_subtotal,
        credited_tax_minor=credited_tax,
        refunded_minor=refunded,
    )


class _InvoiceCredit(BaseModel):
    amount_due_minor: int
    amount_credited_minor: int


def _refund_now(
    note: CreditNote, refunds: Sequence[RefundRecord], sent: int
) -> tuple[str | None, int]:
    """(refund status, refunded minor units) of a note as they are now, read from its refund
    records: a refund that failed or was canceled at the provider no longer counts.

    `note.refund_status` is only the status when the note was issued. Notes issued before
    refunds named their note know only their first refund; the rest of what they sent is
    taken as it was then."""
    if not refunds:
        return note.refund_status, sent
    undone = sum(r.amount_minor for r in refunds if r.status in REFUND_UNDONE_STATUSES)
    statuses = [r.status for r in refunds]
    if sum(r.amount_minor for r in refunds) < sent:  # an older note: the first refund only
        statuses.append(note.refund_status or "pending")
    return _overall(statuses), sent - undone


def _overall(statuses: Sequence[str]) -> str:
    """One status for a note's refunds: theirs when they agree; `partially_failed` when some
    gave nothing back and the others did; `failed` when none gave anything back; else
    `pending` (some are still under way)."""
    distinct = set(statuses)
    if len(distinct) == 1:
        return distinct.pop()
    if distinct <= REFUND_UNDONE_STATUSES:
        return "failed"
    if "pending" not in distinct and distinct & REFUND_UNDONE_STATUSES:
        return "partially_failed"
    return "pending"


def _plain_description(invoice: Invoice) -> str:
    return f"Credit against invoice {invoice.number or invoice.id}"


def _require_billing(ctx: Context) -> None:
    if not (ctx.actor.is_operator or ctx.actor.role in (Role.OWNER, Role.BILLING)):
        raise Forbidden("credit notes and balances need the owner or billing role")


credit_notes = CreditNoteService()
on_refund_undone.append(credit_notes.refund_undone)
before_refund.append(credit_notes.refund_guard)
