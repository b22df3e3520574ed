"""Invoice collection and dunning.

A finalized invoice with an amount due is charged to the account's payment method at the
subscription's provider (attempt 1). A failed attempt puts the subscription `past_due` and
schedules the next one `retry_days[n]` days after finalization (default 1, 3, 5, 7); when the
last retry fails the subscription is canceled or moved to the free plan and the invoice is
marked uncollectible. Each step sends a notification. A payment that succeeds later, by a
retry or by a provider event, marks the invoice paid and the subscription active again.

A charge the provider accepts as pending (a Stripe PaymentIntent `processing`, a PayPal capture
`PENDING`) ends the attempt without a result; the provider's event settles it. A success pays
the invoice; a failure fails the attempt as a decline would (`late_failure`, in a job, since
the dunning policy is a job setting), once per attempt, and only while the invoice is still
open, waiting on that payment, with no retry scheduled.

Provider idempotency keys are named by the invoice and attempt number, so a job rerun after a
crash (its transaction rolled back) sends the same keys and the provider charges once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.collection.repository import CollectionRepository
from aihub_billing.creditnotes import balance
from aihub_billing.errors import BillingError
from aihub_billing.invoices.service import invoices, notify_invoice_event
from aihub_billing.jobs import queue
from aihub_billing.kit.context import Context
from aihub_billing.kit.ids import derived_id
from aihub_billing.models import Invoice, Payment, PaymentMethodRecord, RefundRecord, Subscription
from aihub_billing.payments import schemas as payment_schemas
from aihub_billing.payments.errors import (
    PaymentDeclined,
    ProviderAmountNotSupported,
    ProviderNotConfigured,
)
from aihub_billing.payments.payment_types import PaymentIntent, PaymentStatus
from aihub_billing.payments.providers.base import PaymentProcessor
from aihub_billing.payments.service import (
    DefaultingLookup,
    before_refund,
    on_payment_failed,
    on_payment_succeeded,
    on_refund_made,
    on_refund_undone,
    payments,
)
from aihub_billing.subscriptions import schemas as subscription_schemas
from aihub_billing.subscriptions.service import FREE_PLAN_CODE, subscriptions
from aihub_billing.testclocks.service import test_clocks

log = structlog.get_logger("aihub_billing.collection")

COLLECT_JOB = "invoices.collect"
# An invoice's collection payment failed after its attempt ended (it was pending).
LATE_FAILURE_JOB = "invoices.collection_failed"


@dataclass(frozen=True, slots=True)
class DunningPolicy:
    retry_days: tuple[int, ...] = (1, 3, 5, 7)
    final_action: str = "cancel"  # or "downgrade" (to the free plan)


@dataclass(frozen=True, slots=True)
class Failure:
    code: str
    message: str
    action_url: str | None = None  # 3-D Secure client secret or PayPal approval link


class CollectionService:
    async def collect(
        self,
        session: AsyncSession,
        ctx: Context,
        processors: DefaultingLookup,
        policy: DunningPolicy,
        invoice_id: str,
        *,
        attempt: int | None = None,
    ) -> str:
        """One collection attempt; returns what happened (for the job log)."""
        repo = CollectionRepository(session)
        invoice = await repo.invoice(invoice_id, lock=True)
        if invoice is None or invoice.status != "open":
            return "skipped: the invoice is not open"
        due = invoice.amount_due_minor - invoice.amount_paid_minor
        if due <= 0:
            return "skipped: nothing is due"
        if attempt is not None and attempt != invoice.attempt_count + 1:
            return f"skipped: attempt {attempt} is stale"
        sub = await repo.subscription(invoice.subscription_id) if invoice.subscription_id else None
        # The subscription's provider, else the account's default (None: the first enabled).
        provider = (sub.payment_provider if sub else None) or await repo.default_provider(
            invoice.account_id
        )
        try:
            processor = processors(provider)
        except ProviderNotConfigured:
            # Without a provider the invoice is paid out of band (POST /invoices/{id}/mark-paid):
            # no automatic charge, so no dunning either.
            log.info("collection.no_provider", invoice_id=invoice.id, provider=provider)
            return "skipped: no payment provider is enabled"
        invoice.attempt_count += 1
        invoice.next_payment_attempt_at = None
        invoice.updated_at = ctx.clock.now()
        failure = await self._charge(session, ctx, processors, processor, invoice, sub, due)
        if failure is None:
            return "charged"
        await self._failed(session, ctx, policy, invoice, sub, failure)
        return f"failed: {failure.code}"

    async def _charge(
        self,
        session: AsyncSession,
        ctx: Context,
        processors: DefaultingLookup,
        processor: PaymentProcessor,
        invoice: Invoice,
        sub: Subscription | None,
        due: int,
    ) -> Failure | None:
        method = await self._method(session, invoice, sub, processor)
        if method is None and processor.saves_payment_methods:
            return Failure("no_payment_method", "no payment method is on file")
        key_base = f"invoice:{invoice.id}:attempt:{invoice.attempt_count}"
        declined: PaymentDeclined | None = None
        try:
            async with session.begin_nested():  # a refused amount leaves no payment row
                try:
                    payment, remote = await self._pay(
                        session, ctx, processors, processor, invoice, sub, due, method, key_base
                    )
                except PaymentDeclined as exc:  # its failed payment stays recorded
                    declined = exc
        except ProviderAmountNotSupported as exc:
            # Not the customer's doing, and no retry changes it: a failed attempt that says
            # why (the operator settles it: a credit note to a payable amount, or mark-paid),
            # not a job retried until it dies unseen.
            log.warning("collection.amount_not_supported", invoice_id=invoice.id)
            return Failure(exc.code, exc.detail)
        if declined is not None:
            code = declined.extra.get("decline_code") or "card_declined"
            return Failure(str(code), declined.detail)
        if payment.status in (PaymentStatus.SUCCEEDED, PaymentStatus.PROCESSING):
            # Succeeded: the payment hook marked the invoice paid in this transaction.
            # Processing: the provider's event finishes it.
            return None
        if payment.status == PaymentStatus.REQUIRES_ACTION:
            link = remote.client_secret or remote.approval_url if remote else None
            return Failure("requires_action", "the customer must authorize the payment", link)
        return Failure(payment.failure_code or str(payment.status), payment.failure_message or "")

    @staticmethod
    async def _pay(
        session: AsyncSession,
        ctx: Context,
        processors: DefaultingLookup,
        processor: PaymentProcessor,
        invoice: Invoice,
        sub: Subscription | None,
        due: int,
        method: PaymentMethodRecord | None,
        key_base: str,
    ) -> tuple[Payment, PaymentIntent | None]:
        """The attempt's payment, made (or confirmed again) at the processor."""
        remote: PaymentIntent | None = None
        # A payment the buyer was asked to authorize (3-D Secure, PayPal approval) is
        # confirmed again rather than replaced: they may have authorized it since.
        payment = await CollectionRepository(session).waiting_payment(invoice.id, processor.name)
        if payment is None:
            data = payment_schemas.PaymentIntentCreate(
                amount_minor=due,
                currency=invoice.currency,
                provider=processor.name,
                payment_method_id=method.id if method else None,
                invoice_id=invoice.id,
                subscription_id=sub.id if sub else None,
                account_id=invoice.account_id,
                description=f"Invoice {invoice.number}",
            )
            # The row id goes to the provider (metadata): a rerun must send the same one.
            payment_id = _attempt_payment_id(invoice, invoice.attempt_count)
            payment, remote = await payments.create_intent(
                session, ctx, processors, data, key_base=key_base, payment_id=payment_id
            )
        if payment.status != PaymentStatus.SUCCEEDED:
            payment, remote = await payments.confirm(
                session,
                ctx,
                processors,
                payment.id,
                payment_schemas.PaymentConfirm(),
                key_base=key_base,
            )
        return payment, remote

    @staticmethod
    async def _method(
        session: AsyncSession,
        invoice: Invoice,
        sub: Subscription | None,
        processor: PaymentProcessor,
    ) -> PaymentMethodRecord | None:
        """The subscription's saved method at the processor, else the account's newest one."""
        methods = await CollectionRepository(session).active_methods(
            invoice.account_id, processor.name
        )
        if sub is not None and sub.payment_method_id:
            for method in methods:
                if sub.payment_method_id in (method.id, method.provider_method_id):
                    return method
        return methods[0] if methods else None

    async def _failed(
        self,
        session: AsyncSession,
        ctx: Context,
        policy: DunningPolicy,
        invoice: Invoice,
        sub: Subscription | None,
        failure: Failure,
    ) -> None:
        _, clock_id = await test_clocks.context_for(session, ctx, invoice.account_id)
        attempt = invoice.attempt_count
        next_at = None
        if attempt <= len(policy.retry_days):
            anchor = invoice.finalized_at or ctx.clock.now()
            next_at = anchor + timedelta(days=policy.retry_days[attempt - 1])
            invoice.next_payment_attempt_at = next_at
            await queue.enqueue(
                session,
                ctx,
                COLLECT_JOB,
                {"invoice_id": invoice.id, "attempt": attempt + 1},
                run_at=next_at,
                dedupe_key=f"{COLLECT_JOB}:{invoice.id}:{attempt + 1}",
                test_clock_id=clock_id,
            )
        log.info(
            "collection.failed",
            invoice_id=invoice.id,
            attempt=attempt,
            code=failure.code,
            next_attempt_at=next_at.isoformat() if next_at else None,
        )
        await notify_invoice_event(
            session,
            ctx,
            invoice,
            "invoice.payment_failed",
            f"Payment of invoice {invoice.number} failed",
            {
                "attempt": attempt,
                "code": failure.code,
                "message": failure.message,
                "action_url": failure.action_url,
                "next_payment_attempt_at": next_at.isoformat() if next_at else None,
            },
            clock_id,
            suffix=str(attempt),
        )
        if sub is not None and await subscriptions.mark_past_due(
            session, ctx, sub.id, invoice_id=invoice.id
        ):
            await notify_invoice_event(
                session,
                ctx,
                invoice,
                "subscription.past_due",
                "Your subscription is past due",
                {"subscription_id": sub.id},
                clock_id,
            )
        if next_at is None:
            await self._exhausted(session, ctx, policy, invoice, sub, clock_id)

    async def _exhausted(
        self,
        session: AsyncSession,
        ctx: Context,
        policy: DunningPolicy,
        invoice: Invoice,
        sub: Subscription | None,
        clock_id: str | None,
    ) -> None:
        """The last retry failed: the final action, then the invoice is uncollectible."""
        if sub is not None and sub.status != "canceled":
            action = await self._final_action(session, ctx, policy, sub, invoice.id)
            await notify_invoice_event(
                session,
                ctx,
                invoice,
                f"subscription.{action}",
                f"Your subscription was {action} for non-payment",
                {"subscription_id": sub.id, "reason": "payment_failed"},
                clock_id,
            )
        await invoices.mark_uncollectible(session, ctx, invoice.id)
        await notify_invoice_event(
            session,
            ctx,
            invoice,
            "invoice.marked_uncollectible",
            f"Invoice {invoice.number} is uncollectible",
            {},
            clock_id,
        )

    async def _final_action(
        self,
        session: AsyncSession,
        ctx: Context,
        policy: DunningPolicy,
        sub: Subscription,
        invoice_id: str,
    ) -> str:
        if policy.final_action == "downgrade":
            change = subscription_schemas.SubscriptionChange(
                plan_type=FREE_PLAN_CODE, when="immediate"
            )
            try:
                # The unpaid fee's unused part is not the customer's: nothing is credited.
                await subscriptions.change(session, ctx, sub.id, change, credit_unused=False)
                # Nothing is owed on the free plan: the subscription is in good standing.
                await subscriptions.mark_recovered(session, ctx, sub.id, invoice_id=invoice_id)
                return "downgraded"
            except BillingError as exc:  # e.g. the free plan has no price in this currency
                log.warning("collection.downgrade_failed", subscription_id=sub.id, error=str(exc))
        await subscriptions.cancel(session, ctx, sub.id, at_period_end=False)
        return "canceled"

    async def payment_failed(self, session: AsyncSession, ctx: Context, payment: Payment) -> None:
        """A provider reported that a payment failed (on_payment_failed): when it is the one
        the invoice's collection waits on, its attempt fails in a LATE_FAILURE_JOB, which has
        the dunning policy. One job per attempt, however often the failure is reported."""
        if payment.invoice_id is None:
            return
        invoice = await CollectionRepository(session).invoice(payment.invoice_id)
        if invoice is None or not await self._waits_on(session, invoice, payment):
            return
        attempt = invoice.attempt_count
        await queue.enqueue(
            session,
            ctx,
            LATE_FAILURE_JOB,
            {"invoice_id": invoice.id, "payment_id": payment.id, "attempt": attempt},
            dedupe_key=f"{LATE_FAILURE_JOB}:{invoice.id}:{attempt}",
        )
        log.info(
            "collection.failed_late", invoice_id=invoice.id, payment_id=payment.id, attempt=attempt
        )

    async def late_failure(
        self,
        session: AsyncSession,
        ctx: Context,
        policy: DunningPolicy,
        invoice_id: str,
        payment_id: str,
        *,
        attempt: int,
    ) -> str:
        """The attempt whose pending payment failed at the provider fails as a decline does:
        the next retry from `policy`, past_due, the final action after the last one. Checked
        again under the invoice's lock: paid since, retried since, or a success reported
        since change nothing."""
        repo = CollectionRepository(session)
        invoice = await repo.invoice(invoice_id, lock=True)
        if invoice is None or invoice.attempt_count != attempt:
            return f"skipped: attempt {attempt} is not the invoice's latest"
        payment = await repo.payment(payment_id)
        if payment is None or payment.status != PaymentStatus.FAILED:
            return "skipped: the payment is not failed"
        if not await self._waits_on(session, invoice, payment):
            return "skipped: the invoice does not wait on this payment"
        # The account's time (its test clock's, when it has one): the job itself is not clocked.
        ctx, _ = await test_clocks.context_for(session, ctx, invoice.account_id)
        sub = await repo.subscription(invoice.subscription_id) if invoice.subscription_id else None
        invoice.updated_at = ctx.clock.now()
        failure = Failure(
            payment.failure_code or "payment_failed",
            payment.failure_message or "the provider reported that the payment failed",
        )
        await self._failed(session, ctx, policy, invoice, sub, failure)
        return f"failed: {failure.code}"

    @staticmethod
    async def _waits_on(session: AsyncSession, invoice: Invoice, payment: Payment) -> bool:
        """True when the invoice's collection waits on `payment`: the invoice is open with an
        amount due, attempted, no retry is scheduled, and `payment` is the latest attempt's
        (made by it, or an earlier attempt's that it confirmed instead of replacing)."""
        if (
            invoice.status != "open"
            or invoice.amount_due_minor - invoice.amount_paid_minor <= 0
            or invoice.attempt_count < 1
            or invoice.next_payment_attempt_at is not None
            or payment.account_id != invoice.account_id
        ):
            return False
        candidates = [_attempt_payment_id(invoice, n) for n in range(invoice.attempt_count, 0, -1)]
        if payment.id not in candidates:
            return False  # not a collection payment (e.g. one made through the API)
        existing = await CollectionRepository(session).existing_payment_ids(candidates)
        latest = next(pid for pid in candidates if pid in existing)
        return latest == payment.id

    async def paid(self, session: AsyncSession, ctx: Context, payment: Payment) -> None:
        """A payment for an invoice succeeded: the invoice is paid, the subscription active."""
        if payment.invoice_id is None:
            return
        repo = CollectionRepository(session)
        invoice = await repo.invoice(payment.invoice_id, lock=True)
        if invoice is None or invoice.account_id != payment.account_id:
            return
        remaining = invoice.amount_due_minor - invoice.amount_paid_minor
        if invoice.status not in ("open", "uncollectible") or remaining <= 0:
            # Paid already, void, or still a draft: the money was taken all the same.
            await self._unapplied(session, ctx, invoice, payment)
            return
        if payment.currency != invoice.currency:
            # Minor units of another currency are not an amount of this invoice.
            log.warning(
                "collection.currency_mismatch",
                invoice_id=invoice.id,
                payment_id=payment.id,
                invoice_currency=invoice.currency,
                payment_currency=payment.currency,
            )
            await self._unapplied(session, ctx, invoice, payment)
            return
        # A credit note may have lowered what is due since the charge was made.
        amount = min(payment.amount_minor, remaining)
        # The recovery (and its notification) is done below.
        await invoices.mark_paid(
            session, ctx, invoice.id, amount, payment_id=payment.id, recover=False
        )
        await self._unapplied(session, ctx, invoice, payment)
        if invoice.status != "paid":
            return  # a part of what is due: still open, dunning goes on for the rest
        invoice.next_payment_attempt_at = None
        _, clock_id = await test_clocks.context_for(session, ctx, invoice.account_id)
        await notify_invoice_event(
            session,
            ctx,
            invoice,
            "invoice.paid",
            f"Invoice {invoice.number} is paid",
            {"payment_id": payment.id, "amount_minor": payment.amount_minor},
            clock_id,
        )
        if invoice.subscription_id and await subscriptions.mark_recovered(
            session, ctx, invoice.subscription_id, invoice_id=invoice.id
        ):
            await notify_invoice_event(
                session,
                ctx,
                invoice,
                "subscription.recovered",
                "Your subscription is active again",
                {"subscription_id": invoice.subscription_id},
                clock_id,
            )

    @staticmethod
    async def _unapplied(
        session: AsyncSession, ctx: Context, invoice: Invoice, payment: Payment
    ) -> None:
        """Money a succeeded payment took that its invoice could not take (the invoice was
        paid already, voided, still a draft, overpaid, or in another currency) is the
        customer's: it goes to the account balance in the payment's currency as an
        `overpayment`, where the next invoice consumes it and a refund of the payment takes
        it back. What is unapplied is what the invoice's succeeded payments in that currency
        add up to beyond what the invoice recorded as paid and what earlier overpayments
        credited, so a payment is credited once, and a payment that an operator recorded by
        hand (mark-paid) before its provider event came is not credited again."""
        currency = payment.currency
        clocked, _ = await test_clocks.context_for(session, ctx, invoice.account_id)
        amount = await balance.credit_overpayment(
            session,
            clocked,
            payment_id=payment.id,
            invoice_id=invoice.id,
            account_id=invoice.account_id,
            currency=currency,
            received_minor=await CollectionRepository(session).succeeded_minor(
                invoice.id, currency
            ),
            applied_minor=invoice.amount_paid_minor if currency == invoice.currency else 0,
            description=f"Payment {payment.id} beyond what invoice "
            f"{invoice.number or invoice.id} ({invoice.status}) could take",
        )
        if amount == 0:
            return
        log.warning(
            "collection.payment_unapplied",
            invoice_id=invoice.id,
            invoice_status=invoice.status,
            payment_id=payment.id,
            amount_minor=amount,
            currency=currency,
        )

    # -- refunds of a payment whose money went to the balance ---------------------------------

    @staticmethod
    async def refund_guard(
        session: AsyncSession, ctx: Context, payment: Payment, amount_minor: int
    ) -> None:
        """Refuses (409 balance_insufficient) a refund of ours that would pay back overpayment
        credit of the payment that later invoices already spent: the customer would get it
        twice."""
        await balance.overpayment_to_take(session, payment, amount_minor, strict=True)

    @staticmethod
    async def refund_made(
        session: AsyncSession, ctx: Context, payment: Payment, refund: RefundRecord, strict: bool
    ) -> None:
        """A refund pays back the payment's overpayment credit first: it leaves the balance."""
        clocked, _ = await test_clocks.context_for(session, ctx, payment.account_id)
        await balance.take_for_refund(session, clocked, payment, refund, strict=strict)

    @staticmethod
    async def refund_undone(session: AsyncSession, ctx: Context, refund: RefundRecord) -> None:
        """A refund that failed or was canceled gives back the credit it took."""
        clocked, _ = await test_clocks.context_for(session, ctx, refund.account_id)
        await balance.give_back_refund(session, clocked, refund)


def _attempt_payment_id(invoice: Invoice, attempt: int) -> str:
    """The id of the payment collection attempt `attempt` makes for the invoice; derived from
    the attempt, so a rerun of the attempt makes the same one."""
    key_base = f"invoice:{invoice.id}:attempt:{attempt}"
    return derived_id("pay", invoice.finalized_at or invoice.created_at, key_base)


collection = CollectionService()
on_payment_succeeded.append(collection.paid)
on_payment_failed.append(collection.payment_failed)
before_refund.append(collection.refund_guard)
on_refund_made.append(collection.refund_made)
on_refund_undone.append(collection.refund_undone)
