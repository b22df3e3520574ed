"""Payments: provider customers, payment methods, intents, confirmation, refunds, and the
order-safe application of provider events (PaymentWebhookHandler's effects on our rows).

Provider idempotency keys derive from our row ids, so a retried request never charges twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from itertools import product

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.accounts.errors import AccountNotFound
from aihub_billing.audit.service import audit
from aihub_billing.errors import Forbidden
from aihub_billing.kit.cards import contains_card_number
from aihub_billing.kit.context import Context, Role
from aihub_billing.kit.ids import is_valid_id, new_id
from aihub_billing.kit.metrics import PAYMENT_ATTEMPTS, count_on_commit
from aihub_billing.kit.pagination import id_page
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
from aihub_billing.payments import schemas
from aihub_billing.payments.errors import (
    AccountRequired,
    InvoiceNotPayable,
    PaymentCurrencyMismatch,
    PaymentDeclined,
    PaymentExceedsAmountDue,
    PaymentMethodNotFound,
    PaymentNotConfirmable,
    PaymentNotFound,
    PaymentNotRefundable,
    RefundExceedsPayment,
)
from aihub_billing.payments.payment_types import (
    PROVIDER_MADE_REFUND,
    REFUND_UNDONE_STATUSES,
    TERMINAL_STATUSES,
    EventType,
    InternalEvent,
    PaymentIntent,
    PaymentStatus,
)
from aihub_billing.payments.providers.base import PaymentProcessor, ProcessorLookup
from aihub_billing.payments.repository import PaymentRepository
from aihub_billing.subscriptions.errors import SubscriptionNotFound
from aihub_billing.subscriptions.service import subscriptions
from aihub_billing.testclocks.service import test_clocks

log = structlog.get_logger("aihub_billing.payments")

# The processor of a provider, or of the first enabled one for None.
DefaultingLookup = Callable[[str | None], PaymentProcessor]

# Called in the transaction that moved a payment to `succeeded` (by confirmation or by a
# provider event), once per payment; the collection domain marks the invoice paid here.
PaymentHook = Callable[[AsyncSession, Context, Payment], Awaitable[None]]
on_payment_succeeded: list[PaymentHook] = []
# Called in the transaction that applied a provider's failure event to a payment (the payment
# moved to `failed` from another status, e.g. a charge that was `processing`), once per such
# move; the collection domain fails the invoice's attempt here. Declines our own calls see
# (confirm) are their caller's to handle and are not reported.
on_payment_failed: list[PaymentHook] = []
# Called in the transaction that applied a provider's report that a refund of ours failed or
# was canceled after it was made (it no longer counts), once per refund; the credit notes
# domain credits a note's refund to the account balance here.
RefundHook = Callable[[AsyncSession, Context, RefundRecord], Awaitable[None]]
on_refund_undone: list[RefundHook] = []
# Called before a refund of ours (not a credit note's) is sent to the provider, with the
# payment and the amount: raising refuses it, and nothing is sent. The collection domain
# refuses to pay back an overpayment credit that later invoices spent.
RefundGuard = Callable[[AsyncSession, Context, Payment, int], Awaitable[None]]
before_refund: list[RefundGuard] = []
# Called in the transaction that recorded a new refund, once per refund: one of ours (not a
# credit note's, and not refused at once) or one the provider reported; `strict` is False for
# the latter (it happened already). The collection domain takes the overpayment credit the
# refund pays back off the balance.
RefundMadeHook = Callable[[AsyncSession, Context, Payment, RefundRecord, bool], Awaitable[None]]
on_refund_made: list[RefundMadeHook] = []

# An attempt's final outcome; requires_action and processing end later, by a provider event.
_OUTCOMES: dict[str, str] = {PaymentStatus.SUCCEEDED: "succeeded", PaymentStatus.FAILED: "failed"}
# Present from the start at 0: rate() and increase() miss the first increment of a new series.
for _provider, _outcome in product(("stripe", "paypal"), _OUTCOMES.values()):
    PAYMENT_ATTEMPTS.labels(_provider, _outcome)

# A refund in one of these statuses never changes again.
_FINAL_REFUND_STATUSES = frozenset({"succeeded"}) | REFUND_UNDONE_STATUSES

_CONFIRMABLE = {
    PaymentStatus.REQUIRES_PAYMENT_METHOD,
    PaymentStatus.REQUIRES_CONFIRMATION,
    PaymentStatus.REQUIRES_ACTION,
    PaymentStatus.FAILED,
}


# Events about one of our payments or its refunds (a dispute may name no payment of ours).
_PAYMENT_EVENTS = frozenset(
    {
        EventType.PAYMENT_SUCCEEDED,
        EventType.PAYMENT_FAILED,
        EventType.REFUND_SUCCEEDED,
        EventType.REFUND_FAILED,
    }
)


class PaymentNotStoredYet(Exception):
    """A provider event names a payment id of ours that is not stored: retried later."""


def _ours(payment_id: str | None) -> bool:
    return payment_id is not None and is_valid_id(payment_id, "pay")


class PaymentService:
    # -- customers and payment methods --------------------------------------------------------

    async def customer(
        self, session: AsyncSession, ctx: Context, processor: PaymentProcessor, account: Account
    ) -> PaymentCustomer:
        """The account's customer at the provider, created there once."""
        repo = PaymentRepository(session)
        existing = await repo.customer(account.id, processor.name)
        if existing is not None:
            return existing
        remote = await processor.create_customer(
            account_id=account.id,
            email=account.email,
            name=account.name,
            idempotency_key=f"customer:{account.id}:{processor.name}:v1",
        )
        customer = PaymentCustomer(
            id=new_id("pcus", ctx.clock.now()),
            account_id=account.id,
            provider=processor.name,
            provider_customer_id=remote.id,
            created_at=ctx.clock.now(),
        )
        repo.add(customer)
        await session.flush()
        return customer

    async def attach_method(
        self,
        session: AsyncSession,
        ctx: Context,
        processor: PaymentProcessor,
        data: schemas.PaymentMethodCreate,
    ) -> PaymentMethodRecord:
        account = await self._account(session, ctx, data.account_id)
        repo = PaymentRepository(session)
        customer = await self.customer(session, ctx, processor, account)
        remote = await processor.attach_payment_method(customer.provider_customer_id, data.token)
        now = ctx.clock.now()
        record = await repo.method_by_token(processor.name, remote.id)
        if record is not None and record.account_id != account.id:
            raise PaymentMethodNotFound("this payment method belongs to another account")
        # A method attached before (detached since, or still active) is the same record: its
        # audit entry shows what it was.
        before = schemas.PaymentMethod.model_validate(record) if record is not None else None
        if record is None:
            record = PaymentMethodRecord(
                id=new_id("paymeth", now),
                account_id=account.id,
                provider=processor.name,
                provider_method_id=remote.id,
                created_at=now,
            )
            repo.add(record)
        record.brand, record.last4 = remote.brand, remote.last4
        record.exp_month, record.exp_year = remote.exp_month, remote.exp_year
        record.status, record.detached_at = "active", None
        await session.flush()
        after = schemas.PaymentMethod.model_validate(record)
        if after == before:
            return record  # attached and unchanged already: nothing happened to audit
        await audit.record(
            session,
            ctx,
            action="payment_method.attached",
            object_type="payment_method",
            object_id=record.id,
            account_id=account.id,
            before=before,
            after=after,
        )
        return record

    async def methods(
        self, session: AsyncSession, ctx: Context, account_id: str | None
    ) -> list[PaymentMethodRecord]:
        account = await self._account(session, ctx, account_id)
        return await PaymentRepository(session).methods(account.id)

    async def detach_method(
        self, session: AsyncSession, ctx: Context, processors: ProcessorLookup, method_id: str
    ) -> PaymentMethodRecord:
        record = await self._method(session, ctx, method_id)
        if record.status == "detached":
            return record
        before = schemas.PaymentMethod.model_validate(record)
        await processors(record.provider).detach_payment_method(record.provider_method_id)
        record.status, record.detached_at = "detached", ctx.clock.now()
        await session.flush()
        await audit.record(
            session,
            ctx,
            action="payment_method.detached",
            object_type="payment_method",
            object_id=record.id,
            account_id=record.account_id,
            before=before,
            after=schemas.PaymentMethod.model_validate(record),
        )
        return record

    # -- settings ----------------------------------------------------------------------------

    async def settings(
        self, session: AsyncSession, ctx: Context, account_id: str | None
    ) -> schemas.PaymentSettings:
        account = await self._account(session, ctx, account_id)
        record = await PaymentRepository(session).settings(account.id)
        if record is None:
            return schemas.PaymentSettings(
                account_id=account.id, default_provider=None, updated_at=None
            )
        return schemas.PaymentSettings.model_validate(record)

    async def update_settings(
        self,
        session: AsyncSession,
        ctx: Context,
        processors: ProcessorLookup,
        data: schemas.PaymentSettingsUpdate,
    ) -> schemas.PaymentSettings:
        """Sets the account's default provider (owner, billing or operator)."""
        account = await self._account(session, ctx, data.account_id)
        if data.default_provider is not None:
            processors(data.default_provider)  # ProviderNotConfigured unless it is enabled
        repo = PaymentRepository(session)
        record = await repo.settings(account.id)
        before = schemas.PaymentSettings.model_validate(record) if record else None
        if record is None:
            record = PaymentSettings(account_id=account.id, updated_at=ctx.clock.now())
            repo.add(record)
        record.default_provider = data.default_provider
        record.updated_at = ctx.clock.now()
        await session.flush()
        after = schemas.PaymentSettings.model_validate(record)
        await audit.record(
            session,
            ctx,
            action="payment_settings.updated",
            object_type="payment_settings",
            object_id=account.id,
            account_id=account.id,
            before=before,
            after=after,
        )
        return after

    # -- payments ----------------------------------------------------------------------------

    async def create_intent(
        self,
        session: AsyncSession,
        ctx: Context,
        processors: DefaultingLookup,
        data: schemas.PaymentIntentCreate,
        *,
        key_base: str | None = None,
        payment_id: str | None = None,
    ) -> tuple[Payment, PaymentIntent]:
        """Creates the provider's intent/order. `key_base` names the attempt for the provider's
        idempotency (default: the new payment row) and `payment_id` fixes the row's id, so a
        caller that retries a whole transaction (a job after a crash) sends the same request
        with the same keys and is charged once."""
        account = await self._account(session, ctx, data.account_id)
        repo = PaymentRepository(session)
        if data.invoice_id is not None:
            invoice = await repo.invoice(account.id, data.invoice_id)
            if invoice is not None:  # an id of no invoice of ours is an opaque reference
                _check_payable(invoice, data)
        subscription = await self._subscription_of(session, account.id, data)
        # The provider, in order: the request's, the subscription's, the account's default,
        # the first enabled one. A named provider that is not enabled is refused, never
        # silently replaced by another.
        settings = await repo.settings(account.id)
        processor = processors(
            data.provider
            or (subscription.payment_provider if subscription else None)
            or (settings.default_provider if settings else None)
        )
        method = None
        if data.payment_method_id is not None:
            method = await self._method(session, ctx, data.payment_method_id)
            if method.account_id != account.id or method.provider != processor.name:
                raise PaymentMethodNotFound("no such payment method for this account/provider")
        elif subscription is not None and subscription.payment_method_id:
            method = await self._saved_method(
                repo, account.id, processor.name, subscription.payment_method_id
            )
        customer = await self.customer(session, ctx, processor, account)
        now = ctx.clock.now()
        payment = Payment(
            id=payment_id or new_id("pay", now),
            account_id=account.id,
            provider=processor.name,
            payment_method_id=method.id if method else None,
            invoice_id=data.invoice_id,
            subscription_id=subscription.id if subscription else None,
            description=data.description,
            amount_minor=data.amount_minor,
            currency=data.currency,
            refunded_minor=0,
            confirm_attempts=0,
            status=PaymentStatus.REQUIRES_PAYMENT_METHOD,
            created_at=now,
            updated_at=now,
        )
        remote = await processor.create_payment(
            amount_minor=data.amount_minor,
            currency=data.currency,
            customer_id=customer.provider_customer_id,
            payment_method=method.provider_method_id if method else None,
            description=data.description,
            reference=payment.id,
            invoice_id=data.invoice_id,
            idempotency_key=f"{key_base or f'payment:{payment.id}'}:create:v1",
        )
        payment.provider_payment_id = remote.id
        payment.status = remote.status
        repo.add(payment)
        await session.flush()
        await self._audit(session, ctx, payment, "payment.created")
        await _count_outcome(session, ctx, payment)
        if payment.status == PaymentStatus.SUCCEEDED:  # e.g. replayed after it was confirmed
            await _succeeded(session, ctx, payment)
        log.info(
            "payment.created",
            payment_id=payment.id,
            provider=payment.provider,
            amount_minor=payment.amount_minor,
            currency=payment.currency,
            description=payment.description,
            status=payment.status,
        )
        return payment, remote

    async def confirm(
        self,
        session: AsyncSession,
        ctx: Context,
        processors: ProcessorLookup,
        payment_id: str,
        data: schemas.PaymentConfirm,
        *,
        key_base: str | None = None,
    ) -> tuple[Payment, PaymentIntent]:
        """Moves the money (Stripe confirm, PayPal capture); 402 when declined."""
        payment = await self._payment(session, ctx, payment_id, for_update=True)
        if payment.status not in _CONFIRMABLE or payment.provider_payment_id is None:
            raise PaymentNotConfirmable(f"payment {payment.id} is {payment.status}")
        if data.payment_method_id is not None:
            method = await self._method(session, ctx, data.payment_method_id)
            if method.account_id != payment.account_id or method.provider != payment.provider:
                raise PaymentMethodNotFound("no such payment method for this payment")
            payment.payment_method_id = method.id
        token = None
        if payment.payment_method_id is not None:
            method = await self._method(session, ctx, payment.payment_method_id)
            token = method.provider_method_id
        # A retry after a timeout sends the same key, so the provider charges once; a new card
        # after a decline, or a new try after 3-D Secure/approval, is a new attempt.
        method_part = payment.payment_method_id or "default"
        key = f"payment:{payment.id}:confirm:{payment.confirm_attempts}:{method_part}:v1"
        if key_base is not None:
            key = f"{key_base}:confirm:{method_part}:v1"
        before = schemas.Payment.model_validate(payment)
        # The provider's events from before this request are about an earlier attempt: the
        # status this call sets is newer than they are. Whole seconds, as the providers' event
        # times are: an event of this attempt in the same second is not taken as older.
        sent_at = ctx.clock.now().replace(microsecond=0)
        try:
            remote = await processors(payment.provider).confirm_payment(
                payment.provider_payment_id, payment_method=token, idempotency_key=key
            )
        except PaymentDeclined as exc:
            # Recorded, and committed by the entry point (PaymentDeclined.commits): the next
            # try is a new attempt with a new key, since the provider stored this decline
            # under the old one.
            code = exc.extra.get("decline_code")
            self._set_status(payment, PaymentStatus.FAILED, ctx.clock.now(), at=sent_at, ours=True)
            payment.confirm_attempts += 1
            payment.failure_code = str(code)[:100] if code else None
            # The provider's message for the customer; never stored if it quotes a card number.
            message = exc.title if contains_card_number(exc.detail) else exc.detail
            payment.failure_message = message[:500]
            payment.updated_at = ctx.clock.now()
            await session.flush()
            await self._audit(session, ctx, payment, "payment.declined", before)
            await _count_outcome(session, ctx, payment)
            log.info("payment.declined", payment_id=payment.id, reason=exc.detail, **exc.extra)
            exc.extra["payment_id"] = payment.id
            raise
        self._set_status(payment, remote.status, ctx.clock.now(), at=sent_at, ours=True)
        if remote.status not in (PaymentStatus.SUCCEEDED, PaymentStatus.PROCESSING):
            payment.confirm_attempts += 1
        if remote.charge_id:
            payment.provider_charge_id = remote.charge_id
        payment.failure_code, payment.failure_message = remote.failure_code, remote.failure_message
        payment.updated_at = ctx.clock.now()
        await session.flush()
        await self._audit(session, ctx, payment, "payment.confirmed", before)
        await _count_outcome(session, ctx, payment)
        if payment.status == PaymentStatus.SUCCEEDED:
            await _succeeded(session, ctx, payment)
        log.info(
            "payment.confirmed",
            payment_id=payment.id,
            status=payment.status,
            client_secret=remote.client_secret,
            failure=remote.failure_message,
        )
        return payment, remote

    async def get(self, session: AsyncSession, ctx: Context, payment_id: str) -> Payment:
        return await self._payment(session, ctx, payment_id)

    async def page(
        self,
        session: AsyncSession,
        ctx: Context,
        *,
        account_id: str | None,
        cursor: str | None,
        limit: int | None,
    ) -> tuple[list[Payment], str | None]:
        _require_billing(ctx)
        if not ctx.actor.is_operator:
            if account_id is not None and account_id != ctx.actor.account_id:
                return [], None
            account_id = ctx.actor.account_id
        repo = PaymentRepository(session)
        return await id_page(
            cursor,
            limit,
            lambda after_id, n: repo.page(limit=n, account_id=account_id, after_id=after_id),
        )

    async def refund(
        self,
        session: AsyncSession,
        ctx: Context,
        processors: ProcessorLookup,
        payment_id: str,
        data: schemas.RefundCreate,
        *,
        for_credit_note: bool = False,
    ) -> RefundRecord:
        """Full or partial; never more than what is not yet refunded (or being refunded).
        `for_credit_note`: the note pays out what it credits of the invoice, so the payment's
        overpayment credit is not what it refunds."""
        payment = await self._payment(session, ctx, payment_id, for_update=True)
        if payment.status != PaymentStatus.SUCCEEDED or payment.provider_payment_id is None:
            raise PaymentNotRefundable(f"payment {payment.id} is {payment.status}")
        repo = PaymentRepository(session)
        refundable = payment.amount_minor - await repo.refunded_or_pending(payment.id)
        if refundable <= 0:
            raise PaymentNotRefundable(f"payment {payment.id} is fully refunded")
        amount = data.amount_minor if data.amount_minor is not None else refundable
        if amount > refundable:
            raise RefundExceedsPayment(f"at most {refundable} {payment.currency} minor units")
        if not for_credit_note:
            for guard in list(before_refund):
                await guard(session, ctx, payment, amount)
        now = ctx.clock.now()
        # The provider key comes from committed state (the payment and how many refunds we
        # asked for), not from this request's new row: a retry after a timeout sends the same
        # key. Refunds learned from the provider do not count: the one a lost answer made,
        # recorded from its event meanwhile, would otherwise give the retry a new key.
        ordinal = sum(1 for r in await repo.refunds(payment.id) if r.reason != PROVIDER_MADE_REFUND)
        reference = f"{payment.id}-refund-{ordinal}"
        record = RefundRecord(
            id=new_id("ref", now),
            payment_id=payment.id,
            account_id=payment.account_id,
            provider=payment.provider,
            amount_minor=amount,
            currency=payment.currency,
            status="pending",
            reason=data.reason,
            created_at=now,
            updated_at=now,
        )
        remote = await processors(payment.provider).refund(
            payment_id=payment.provider_payment_id,
            charge_id=payment.provider_charge_id,
            amount_minor=amount,
            currency=payment.currency,
            reference=reference,
            # v2: ordinals without the provider's own refunds (v1 keys counted them).
            idempotency_key=f"refund:{reference}:{amount}:v2",
        )
        known = await repo.refund_by_provider_id(payment.provider, remote.id) if remote.id else None
        if known is not None:
            # The provider answered from its records: a lost answer's refund, recorded from
            # its event since. It is that refund, not a second one, and ours from now on (the
            # next refund asked for takes the next number).
            known.reason, known.updated_at = data.reason, now
            await session.flush()
            return known
        record.provider_refund_id = remote.id
        repo.add(record)
        self._set_refund_status(payment, record, remote.status, now)
        await session.flush()
        if not for_credit_note and record.status not in REFUND_UNDONE_STATUSES:
            for made in list(on_refund_made):
                await made(session, ctx, payment, record, True)
        await audit.record(
            session,
            ctx,
            action="refund.created",
            object_type="refund",
            object_id=record.id,
            account_id=payment.account_id,
            after=schemas.Refund.model_validate(record),
        )
        return record

    # -- provider events ---------------------------------------------------------------------

    async def apply_event(self, session: AsyncSession, ctx: Context, event: InternalEvent) -> str:
        """Applies a mapped provider event; returns what happened (for the webhook record)."""
        repo = PaymentRepository(session)
        payment = named = None
        if event.our_payment_id:
            payment = named = await repo.payment(event.our_payment_id, for_update=True)
            if payment is not None and payment.provider != event.provider:
                payment = None
        if payment is None:
            payment = await repo.payment_by_refs(event.provider, list(event.payment_refs))
        if (
            payment is None
            and named is None
            and event.type in _PAYMENT_EVENTS
            and _ours(event.our_payment_id)
        ):
            # The provider names a payment of ours (our id in its metadata) that is not
            # stored: the transaction storing it has not committed yet (the event overtook
            # it). Failing retries the event with backoff (webhooks.process) instead of
            # ignoring it for good.
            raise PaymentNotStoredYet(
                f"{event.our_payment_id} is named by the event but not stored (yet)"
            )
        match event.type:
            case EventType.PAYMENT_SUCCEEDED | EventType.PAYMENT_FAILED:
                if payment is None:
                    return "ignored: no payment of ours matches"
                return await self._apply_payment_event(session, ctx, payment, event)
            case EventType.REFUND_SUCCEEDED:
                if payment is None:
                    return "ignored: no payment of ours matches"
                return await self._apply_refund_event(session, ctx, payment, event)
            case EventType.REFUND_FAILED:
                if payment is None:
                    return "ignored: no payment of ours matches"
                return await self._apply_refund_failed(session, ctx, payment, event)
            case EventType.DISPUTE_OPENED | EventType.DISPUTE_CLOSED:
                return await self._apply_dispute_event(session, ctx, payment, event)
            case EventType.SUBSCRIPTION_UPDATED | EventType.SUBSCRIPTION_CANCELED:
                if not event.object_id:
                    return "ignored: the subscription has no id"
                return await subscriptions.apply_provider_status(
                    session,
                    ctx,
                    provider=event.provider,
                    provider_subscription_id=event.object_id,
                    status=event.status,
                    canceled=event.type == EventType.SUBSCRIPTION_CANCELED,
                    event_id=event.event_id,
                    occurred_at=event.occurred_at,
                )

    async def _apply_payment_event(
        self, session: AsyncSession, ctx: Context, payment: Payment, event: InternalEvent
    ) -> str:
        status = (
            PaymentStatus.SUCCEEDED
            if event.type == EventType.PAYMENT_SUCCEEDED
            else PaymentStatus.FAILED
        )
        before = schemas.Payment.model_validate(payment)
        if not self._set_status(payment, status, ctx.clock.now(), at=event.occurred_at):
            return f"unchanged: payment is {payment.status}"
        if status == PaymentStatus.SUCCEEDED and event.charge_id and not payment.provider_charge_id:
            payment.provider_charge_id = event.charge_id
        if status == PaymentStatus.FAILED:
            payment.failure_code = event.failure_code
            # The attempt ended (e.g. a `processing` debit that bounced): the next confirmation
            # is a new attempt, and must not replay this one's answer at the provider.
            payment.confirm_attempts += 1
        await session.flush()
        await self._audit(session, ctx, payment, f"payment.{status}", before)
        await _count_outcome(session, ctx, payment)
        if status == PaymentStatus.SUCCEEDED:
            await _succeeded(session, ctx, payment)
        else:
            for hook in list(on_payment_failed):
                await hook(session, ctx, payment)
        return f"applied: payment {payment.id} {status}"

    async def _apply_refund_event(
        self, session: AsyncSession, ctx: Context, payment: Payment, event: InternalEvent
    ) -> str:
        repo = PaymentRepository(session)
        now = ctx.clock.now()
        record = None
        if event.object_id:
            record = await repo.refund_by_provider_id(event.provider, event.object_id)
            if record is None:
                named = await self._name_counted_refund(session, ctx, payment, event)
                if named is not None:
                    return named
        made = record is None  # made at the provider, not through us: it paid back already
        if record is None:
            known = await repo.refunded_or_pending(payment.id)
            remaining = payment.amount_minor - known
            total = event.extra.get("refunded_total")
            if isinstance(total, int):
                # The charge's refunded total covers every refund so far, the ones we know
                # included: only what it adds beyond them is a new refund.
                amount = min(total, payment.amount_minor) - known
            else:
                amount = min(event.amount_minor or remaining, remaining)
            if amount <= 0:
                return "unchanged: the refund is already counted"
            record = _provider_refund(payment, amount, "pending", now, event.object_id)
            repo.add(record)
        if record.status in _FINAL_REFUND_STATUSES:
            return f"unchanged: refund {record.id} already {record.status}"
        self._set_refund_status(payment, record, "succeeded", now)
        await session.flush()
        if made:
            for hook in list(on_refund_made):
                await hook(session, ctx, payment, record, False)
        await audit.record(
            session,
            ctx,
            action="refund.succeeded",
            object_type="refund",
            object_id=record.id,
            account_id=payment.account_id,
            after=schemas.Refund.model_validate(record),
        )
        return f"applied: refund {record.id} succeeded"

    async def _apply_refund_failed(
        self, session: AsyncSession, ctx: Context, payment: Payment, event: InternalEvent
    ) -> str:
        """A refund of ours failed or was canceled at the provider: it no longer counts (not in
        what is refunded, nor in what is being refunded); final, a late success never undoes it."""
        repo = PaymentRepository(session)
        if not event.object_id:
            return "ignored: the refund has no id"
        record = await repo.refund_by_provider_id(
            event.provider, event.object_id
        ) or await self._counted_refund(session, ctx, payment, event)
        if record is None:
            if not event.amount_minor:
                return "ignored: no refund of ours matches"
            # Made at the provider and not known yet (the provider does not order its events):
            # recorded, and failed below, so its late `created`/`succeeded` finds it final.
            record = _provider_refund(
                payment, event.amount_minor, "pending", ctx.clock.now(), event.object_id
            )
            repo.add(record)
        if record.status in REFUND_UNDONE_STATUSES:
            return f"unchanged: refund {record.id} already {record.status}"
        before = schemas.Refund.model_validate(record)
        now = ctx.clock.now()
        if record.status == "succeeded":
            payment.refunded_minor -= record.amount_minor
            payment.updated_at = now
        record.status = "canceled" if event.status == "canceled" else "failed"
        record.updated_at = now
        await session.flush()
        await audit.record(
            session,
            ctx,
            action=f"refund.{record.status}",
            object_type="refund",
            object_id=record.id,
            account_id=payment.account_id,
            before=before,
            after=schemas.Refund.model_validate(record),
        )
        for hook in list(on_refund_undone):
            await hook(session, ctx, record)
        return f"applied: refund {record.id} {record.status}"

    async def _counted_refund(
        self, session: AsyncSession, ctx: Context, payment: Payment, event: InternalEvent
    ) -> RefundRecord | None:
        """The refund a failure event names, when a refunded total (Stripe's `charge.refunded`)
        counted it without its id: the unnamed refund of its amount, which takes its id; or a
        part split off a larger one. None when no single unnamed refund covers it."""
        amount = event.amount_minor
        unnamed = await PaymentRepository(session).unidentified_refunds(payment.id)
        record = next((r for r in unnamed if r.amount_minor == amount), None)
        if record is not None:
            record.provider_refund_id = event.object_id
            return record
        larger = next((r for r in unnamed if amount and r.amount_minor > amount), None)
        if larger is None or not amount:
            return None
        # The larger refund keeps the rest, and what it took off the balance is taken again
        # for the rest only: the balance then holds what it would without the failed part.
        for undone in list(on_refund_undone):
            await undone(session, ctx, larger)
        now = ctx.clock.now()
        larger.amount_minor -= amount
        larger.updated_at = now
        record = _provider_refund(payment, amount, "succeeded", now, event.object_id)
        PaymentRepository(session).add(record)
        await session.flush()
        for made in list(on_refund_made):
            await made(session, ctx, payment, larger, False)
        return record

    async def _name_counted_refund(
        self, session: AsyncSession, ctx: Context, payment: Payment, event: InternalEvent
    ) -> str | None:
        """A refund event naming a refund that a refunded total (Stripe's `charge.refunded`)
        already counted without its id: the counted amount takes the refund's id, and nothing
        is counted again. None when no such unnamed amount covers it."""
        amount = event.amount_minor
        repo = PaymentRepository(session)
        unnamed = await repo.unidentified_refunds(payment.id)
        if not amount or sum(r.amount_minor for r in unnamed) < amount:
            return None
        now = ctx.clock.now()
        exact = next((r for r in unnamed if r.amount_minor == amount), None)
        if exact is not None:
            record = exact
        else:
            left = amount
            for part in unnamed:
                taken = min(part.amount_minor, left)
                part.amount_minor -= taken
                part.updated_at = now
                left -= taken
                if part.amount_minor == 0:
                    await session.delete(part)
                if left == 0:
                    break
            record = _provider_refund(payment, amount, "succeeded", now)
            repo.add(record)
        record.provider_refund_id = event.object_id
        record.updated_at = now
        await session.flush()
        await audit.record(
            session,
            ctx,
            action="refund.identified",
            object_type="refund",
            object_id=record.id,
            account_id=payment.account_id,
            after=schemas.Refund.model_validate(record),
        )
        return f"applied: refund {record.id} identified as {event.object_id}"

    async def _apply_dispute_event(
        self,
        session: AsyncSession,
        ctx: Context,
        payment: Payment | None,
        event: InternalEvent,
    ) -> str:
        if not event.object_id:
            return "ignored: the dispute has no id"
        repo = PaymentRepository(session)
        now = ctx.clock.now()
        record = await repo.dispute(event.provider, event.object_id)
        if record is None:
            record = DisputeRecord(
                id=new_id("dsp", now),
                provider=event.provider,
                provider_dispute_id=event.object_id,
                status="open",
                created_at=now,
            )
            repo.add(record)
        if payment is not None:
            record.payment_id, record.account_id = payment.id, payment.account_id
        record.amount_minor = event.amount_minor if event.amount_minor else record.amount_minor
        record.currency = event.currency or record.currency
        record.reason = event.reason or record.reason
        record.updated_at = now
        if event.type == EventType.DISPUTE_OPENED:
            record.opened_at = record.opened_at or event.occurred_at or now
            if record.status != "closed":  # a late "opened" never reopens a closed dispute
                record.outcome = event.status or record.outcome
        else:
            record.status, record.outcome = "closed", event.status or record.outcome
            record.closed_at = event.occurred_at or now
        await session.flush()
        await audit.record(
            session,
            ctx,
            action=f"dispute.{'opened' if record.status == 'open' else 'closed'}",
            object_type="dispute",
            object_id=record.id,
            account_id=record.account_id,
        )
        return f"applied: dispute {record.id} {record.status}"

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _set_status(
        payment: Payment,
        status: PaymentStatus,
        now: datetime,
        *,
        at: datetime | None,
        ours: bool = False,
    ) -> bool:
        """Applies `next_status`; True when the status changed."""
        new, new_at = next_status(payment.status, payment.status_at, status, at, ours=ours)
        changed = new != payment.status
        if changed or new_at != payment.status_at:
            payment.status, payment.status_at, payment.updated_at = new, new_at, now
        return changed

    @staticmethod
    def _set_refund_status(
        payment: Payment, record: RefundRecord, status: str, now: datetime
    ) -> None:
        if record.status != "succeeded" and status == "succeeded":
            payment.refunded_minor += record.amount_minor
            payment.updated_at = now
        record.status = status
        record.updated_at = now

    async def _account(
        self, session: AsyncSession, ctx: Context, account_id: str | None
    ) -> Account:
        _require_billing(ctx)
        requested = account_id
        if not ctx.actor.is_operator:
            account_id = ctx.actor.account_id if account_id in (None, ctx.actor.account_id) else ""
        if account_id is None:
            raise AccountRequired("operator keys must name the account_id")
        account = await PaymentRepository(session).account(account_id)
        if account is None or not ctx.actor.can_access(account.id):
            # Another account's id answers as an unknown one does, everywhere.
            raise AccountNotFound(f"no account {requested!r}")
        return account

    async def _payment(
        self, session: AsyncSession, ctx: Context, payment_id: str, *, for_update: bool = False
    ) -> Payment:
        _require_billing(ctx)
        payment = await PaymentRepository(session).payment(payment_id, for_update=for_update)
        if payment is None or not ctx.actor.can_access(payment.account_id):
            raise PaymentNotFound(f"no payment {payment_id!r}")
        return payment

    async def _subscription_of(
        self, session: AsyncSession, account_id: str, data: schemas.PaymentIntentCreate
    ) -> Subscription | None:
        """The account's subscription the payment is for: named, or found from the invoice."""
        repo = PaymentRepository(session)
        if data.subscription_id is not None:
            subscription = await repo.subscription(data.subscription_id)
            if subscription is None or subscription.account_id != account_id:
                raise SubscriptionNotFound(f"no subscription {data.subscription_id!r}")
            return subscription
        if data.invoice_id is not None:
            return await repo.subscription_of_invoice(account_id, data.invoice_id)
        return None

    @staticmethod
    async def _saved_method(
        repo: PaymentRepository, account_id: str, provider: str, reference: str
    ) -> PaymentMethodRecord | None:
        """The subscription's method (our id or the provider's token) when it is one of the
        account's active methods at this provider; otherwise the provider's default."""
        record = await repo.method(reference) or await repo.method_by_token(provider, reference)
        if (
            record is None
            or record.account_id != account_id
            or record.provider != provider
            or record.status != "active"
        ):
            return None
        return record

    async def _method(
        self, session: AsyncSession, ctx: Context, method_id: str
    ) -> PaymentMethodRecord:
        _require_billing(ctx)
        record = await PaymentRepository(session).method(method_id)
        if record is None or not ctx.actor.can_access(record.account_id):
            raise PaymentMethodNotFound(f"no payment method {method_id!r}")
        return record

    async def _audit(
        self,
        session: AsyncSession,
        ctx: Context,
        payment: Payment,
        action: str,
        before: schemas.Payment | None = None,
    ) -> None:
        await audit.record(
            session,
            ctx,
            action=action,
            object_type="payment",
            object_id=payment.id,
            account_id=payment.account_id,
            before=before,
            after=schemas.Payment.model_validate(payment),
        )


async def _count_outcome(session: AsyncSession, ctx: Context, payment: Payment) -> None:
    """Counts an attempt that ended (succeeded or failed), once its transaction commits.

    Not one of an account on a test clock: a simulated dunning run with failing cards is no
    failure rate of real customers (the alert divides these counts)."""
    outcome = _OUTCOMES.get(payment.status)
    if outcome is None:
        return
    _, clock_id = await test_clocks.context_for(session, ctx, payment.account_id)
    if clock_id is None:
        count_on_commit(session, PAYMENT_ATTEMPTS.labels(payment.provider, outcome).inc)


async def _succeeded(session: AsyncSession, ctx: Context, payment: Payment) -> None:
    for hook in list(on_payment_succeeded):
        await hook(session, ctx, payment)


def next_status(
    current: str, current_at: datetime | None, new: str, at: datetime | None, *, ours: bool = False
) -> tuple[str, datetime | None]:
    """The (status, time) after an update, order-safe: terminal statuses stay; success always
    wins over a non-terminal status; otherwise an update older than the newest one seen is
    ignored. `at` is the provider's event time (None: unknown, the time stays), or for our
    own call (`ours`) the time we sent it: its answer is never stale, and the provider's
    events from before it (a late failure of an earlier attempt) are."""
    if current in TERMINAL_STATUSES:
        return current, current_at
    if ours:
        return new, max(at, current_at) if at and current_at else at or current_at
    stale = at is not None and current_at is not None and at < current_at
    if stale and new not in TERMINAL_STATUSES:
        return current, current_at
    newest = current_at if at is None or stale else at
    return new, newest


# Invoice statuses that take a payment (while something is still due on them).
_PAYABLE_INVOICE_STATUSES = frozenset({"open", "uncollectible"})


def _check_payable(invoice: Invoice, data: schemas.PaymentIntentCreate) -> None:
    """Refuses, before anything is written or sent to the provider, a payment its invoice
    cannot take: a draft, paid or void invoice takes none; a payment is in the invoice's own
    currency (minor units of another are not an amount of it) and no larger than what is
    still due. Money that still reaches an invoice that cannot take it (two payments in
    flight, a credit note since) is credited to the account balance as an overpayment."""
    due = invoice.amount_due_minor - invoice.amount_paid_minor
    if invoice.status not in _PAYABLE_INVOICE_STATUSES or due <= 0:
        state = invoice.status if due > 0 else f"{invoice.status} with nothing due"
        raise InvoiceNotPayable(f"invoice {invoice.id} is {state}")
    if invoice.currency != data.currency:
        raise PaymentCurrencyMismatch(
            f"invoice {invoice.id} is in {invoice.currency}, not {data.currency}"
        )
    if data.amount_minor > due:
        raise PaymentExceedsAmountDue(
            f"{data.amount_minor} minor units are more than the {due} still due on invoice "
            f"{invoice.id}"
        )


def _require_billing(ctx: Context) -> None:
    if not (ctx.actor.is_operator or ctx.actor.role in (Role.OWNER, Role.BILLING)):
        raise Forbidden("payments need the owner or billing role")


def _provider_refund(
    payment: Payment,
    amount: int,
    status: str,
    now: datetime,
    provider_refund_id: str | None = None,
) -> RefundRecord:
    """A refund we learned of from the provider (made there, not through us)."""
    return RefundRecord(
        id=new_id("ref", now),
        payment_id=payment.id,
        account_id=payment.account_id,
        provider=payment.provider,
        provider_refund_id=provider_refund_id,
        amount_minor=amount,
        currency=payment.currency,
        status=status,
        reason=PROVIDER_MADE_REFUND,
        created_at=now,
        updated_at=now,
    )


payments = PaymentService()
