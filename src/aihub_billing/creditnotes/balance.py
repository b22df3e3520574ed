"""The account balance: an append-only ledger of credit per (account, currency).

Credit notes add to it, invoices consume it at finalization (`consume`), a voided invoice
gives back what it took (`restore`), money a payment took that its invoice could not take is
credited (`credit_overpayment`) and taken back when that payment is refunded
(`take_for_refund`), the operator adjusts it. It never goes below zero:
everything that takes from it holds the account row (FOR UPDATE on PostgreSQL; SQLite has a
single writer) while it reads the balance and writes the debit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.audit.service import audit
from aihub_billing.creditnotes import schemas
from aihub_billing.creditnotes.allocation import consumable
from aihub_billing.creditnotes.errors import AccountNotFound, BalanceInsufficient
from aihub_billing.creditnotes.repository import CreditNoteRepository
from aihub_billing.kit.context import Context
from aihub_billing.kit.ids import new_id
from aihub_billing.kit.money import normalize_currency
from aihub_billing.models import BalanceTransaction, Payment, RefundRecord

RECENT_TRANSACTIONS = 50


async def balance(session: AsyncSession, account_id: str, currency: str) -> int:
    """The account's credit in `currency`, in minor units (never negative)."""
    return await CreditNoteRepository(session).balance(account_id, normalize_currency(currency))


async def balances_of(
    session: AsyncSession, account_ids: Sequence[str]
) -> dict[tuple[str, str], int]:
    """The balances of many accounts in one query: (account id, currency) -> minor units;
    a pair without any transaction is absent (its balance is 0)."""
    return await CreditNoteRepository(session).balances_of(account_ids)


async def consume(
    session: AsyncSession,
    ctx: Context,
    *,
    account_id: str,
    currency: str,
    invoice_id: str,
    up_to_minor: int,
) -> int:
    """Takes up to `up_to_minor` of the account's credit for an invoice (which must exist in
    the session's transaction, flushed); returns the amount taken (0 when there is none).

    The caller records it on the invoice (balance_applied_minor, amount_due_minor)."""
    repo = CreditNoteRepository(session)
    currency = normalize_currency(currency)
    if await repo.lock_account(account_id) is None:
        raise AccountNotFound(f"no account {account_id!r}")
    taken = consumable(await repo.balance(account_id, currency), up_to_minor)
    if taken == 0:
        return 0
    await _write(
        session,
        ctx,
        account_id=account_id,
        currency=currency,
        amount_minor=-taken,
        kind="invoice_applied",
        invoice_id=invoice_id,
        description=f"Applied to invoice {invoice_id}",
    )
    return taken


async def restore(session: AsyncSession, ctx: Context, invoice_id: str) -> int:
    """Gives back to the balance what a (voided) invoice consumed and has not yet been given
    back; returns the amount restored. Calling it again restores nothing more."""
    repo = CreditNoteRepository(session)
    rows = await repo.invoice_transactions(invoice_id, ("invoice_applied", "invoice_voided"))
    net: dict[tuple[str, str], int] = defaultdict(int)
    for row in rows:
        net[(row.account_id, row.currency)] += row.amount_minor
    restored = 0
    for (account_id, currency), amount in sorted(net.items()):
        if amount >= 0:
            continue
        await repo.lock_account(account_id)
        await _write(
            session,
            ctx,
            account_id=account_id,
            currency=currency,
            amount_minor=-amount,
            kind="invoice_voided",
            invoice_id=invoice_id,
            description=f"Restored from voided invoice {invoice_id}",
        )
        restored += -amount
    return restored


async def credit(
    session: AsyncSession,
    ctx: Context,
    *,
    account_id: str,
    currency: str,
    amount_minor: int,
    credit_note_id: str,
    invoice_id: str,
    description: str,
    kind: Literal["credit_note", "refund_failed"] = "credit_note",
) -> BalanceTransaction:
    """Adds a credit note's credit to the balance (no lock needed: it only adds); kind
    `refund_failed` when it is what the note's refund failed to pay back."""
    return await _write(
        session,
        ctx,
        account_id=account_id,
        currency=currency,
        amount_minor=amount_minor,
        kind=kind,
        invoice_id=invoice_id,
        credit_note_id=credit_note_id,
        description=description,
    )


async def carry_credit(
    session: AsyncSession,
    ctx: Context,
    *,
    invoice_id: str,
    account_id: str,
    currency: str,
    amount_minor: int,
    description: str,
) -> BalanceTransaction:
    """Adds an invoice's negative total (credits above its charges) to the balance, where
    the next invoice consumes it."""
    return await _write(
        session,
        ctx,
        account_id=account_id,
        currency=currency,
        amount_minor=amount_minor,
        kind="adjustment",
        invoice_id=invoice_id,
        description=description,
    )


async def credit_overpayment(
    session: AsyncSession,
    ctx: Context,
    *,
    payment_id: str,
    invoice_id: str,
    account_id: str,
    currency: str,
    received_minor: int,
    applied_minor: int,
    description: str,
) -> int:
    """Credits what an invoice's succeeded payments in `currency` (`received_minor`) took
    beyond what the invoice recorded as paid (`applied_minor`) and beyond what earlier
    overpayments of the invoice credited already, as an `overpayment` naming `payment_id`;
    returns the amount credited (0: nothing new, e.g. a redelivered event)."""
    repo = CreditNoteRepository(session)
    credited = await repo.overpaid(invoice_id, currency)
    amount = received_minor - applied_minor - credited
    if amount <= 0:
        return 0
    await _write(
        session,
        ctx,
        account_id=account_id,
        currency=currency,
        amount_minor=amount,
        kind="overpayment",
        invoice_id=invoice_id,
        payment_id=payment_id,
        description=description,
    )
    return amount


async def overpayment_to_take(
    session: AsyncSession, payment: Payment, amount_minor: int, *, strict: bool
) -> int:
    """How much of a refund of `amount_minor` comes out of the payment's overpayment credit
    still on the balance (what the refund pays back first), with the account row locked. The
    credit a later invoice already consumed was spent: `strict` (a refund of ours, not yet
    sent) refuses it with BalanceInsufficient; otherwise (the provider refunded already) what
    is left of the balance is taken."""
    repo = CreditNoteRepository(session)
    left = await repo.overpayment_left(payment.id)
    wanted = min(amount_minor, left)
    if wanted <= 0:
        return 0
    await repo.lock_account(payment.account_id)
    available = await repo.balance(payment.account_id, payment.currency)
    if available < wanted and strict:
        raise BalanceInsufficient(
            f"{wanted} {payment.currency} minor units of this refund are payment "
            f"{payment.id}'s overpayment credit, but only {available} of it is left on the "
            "balance: the rest paid later invoices (credit those invoices instead)"
        )
    return min(wanted, available)


async def take_for_refund(
    session: AsyncSession, ctx: Context, payment: Payment, refund: RefundRecord, *, strict: bool
) -> int:
    """Takes the overpayment credit a refund pays back off the balance (`refunded`, naming
    the payment and the refund); returns the amount taken."""
    taken = await overpayment_to_take(session, payment, refund.amount_minor, strict=strict)
    if taken > 0:
        await _write(
            session,
            ctx,
            account_id=payment.account_id,
            currency=payment.currency,
            amount_minor=-taken,
            kind="refunded",
            invoice_id=payment.invoice_id,
            payment_id=payment.id,
            refund_id=refund.id,
            description=f"Overpayment of {payment.id} refunded ({refund.id})",
        )
    return taken


async def give_back_refund(session: AsyncSession, ctx: Context, refund: RefundRecord) -> int:
    """A refund that failed or was canceled paid nothing back: what it took off the balance
    returns (`refund_failed`, once); returns the amount given back."""
    repo = CreditNoteRepository(session)
    taken = -await repo.refund_net(refund.id)
    if taken <= 0:
        return 0
    await _write(
        session,
        ctx,
        account_id=refund.account_id,
        currency=refund.currency,
        amount_minor=taken,
        kind="refund_failed",
        payment_id=refund.payment_id,
        refund_id=refund.id,
        description=f"Refund {refund.id} {refund.status}: its overpayment credit returns",
    )
    return taken


async def adjust(
    session: AsyncSession, ctx: Context, account_id: str, data: schemas.BalanceAdjustmentCreate
) -> BalanceTransaction:
    """An operator's signed adjustment; refused when the balance would go negative."""
    repo = CreditNoteRepository(session)
    if await repo.lock_account(account_id) is None:
        raise AccountNotFound(f"no account {account_id!r}")
    current = await repo.balance(account_id, data.currency)
    if current + data.amount_minor < 0:
        raise BalanceInsufficient(
            f"the balance is {current} {data.currency} minor units; "
            f"an adjustment of {data.amount_minor} would make it negative"
        )
    return await _write(
        session,
        ctx,
        account_id=account_id,
        currency=data.currency,
        amount_minor=data.amount_minor,
        kind="adjustment",
        description=data.description,
    )


async def summary(session: AsyncSession, account_id: str) -> schemas.AccountBalance:
    repo = CreditNoteRepository(session)
    return schemas.AccountBalance(
        account_id=account_id,
        balances=[
            schemas.CurrencyBalance(currency=c, amount_minor=a)
            for c, a in await repo.balances(account_id)
        ],
        recent_transactions=[
            schemas.BalanceTransaction.model_validate(t)
            for t in await repo.transactions(account_id, limit=RECENT_TRANSACTIONS)
        ],
    )


async def _write(
    session: AsyncSession,
    ctx: Context,
    *,
    account_id: str,
    currency: str,
    amount_minor: int,
    kind: str,
    invoice_id: str | None = None,
    credit_note_id: str | None = None,
    payment_id: str | None = None,
    refund_id: str | None = None,
    description: str | None = None,
) -> BalanceTransaction:
    now = ctx.clock.now()
    row = BalanceTransaction(
        id=new_id("btxn", now),
        account_id=account_id,
        currency=currency,
        amount_minor=amount_minor,
        kind=kind,
        credit_note_id=credit_note_id,
        invoice_id=invoice_id,
        payment_id=payment_id,
        refund_id=refund_id,
        description=description,
        created_at=now,
    )
    CreditNoteRepository(session).add(row)
    await session.flush()
    await audit.record(
        session,
        ctx,
        action=f"balance.{kind}",
        object_type="balance_transaction",
        object_id=row.id,
        account_id=account_id,
        after=schemas.BalanceTransaction.model_validate(row),
    )
    return row
