"""PricingManager's subscription half: lifecycle, proration, renewals, pending invoice items.

Every billable consequence is appended to `invoice_items` (invoicing collects them later);
every change writes a history row and an audit entry in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.accounts.changes import limits_changed
from aihub_billing.accounts.errors import AccountNotFound
from aihub_billing.accounts.service import accounts
from aihub_billing.audit.service import audit
from aihub_billing.coupons.service import applies_to_plan, coupons, initial_cycles, terms
from aihub_billing.creditnotes.repository import CreditNoteRepository
from aihub_billing.errors import Forbidden
from aihub_billing.invoices.repository import InvoiceRepository
from aihub_billing.jobs.queue import enqueue
from aihub_billing.kit.context import Context, Role
from aihub_billing.kit.ids import new_id
from aihub_billing.kit.metrics import SUBSCRIPTION_CANCELLATIONS, count_on_commit
from aihub_billing.kit.money import minor_to_decimal, round_to_minor
from aihub_billing.kit.pagination import id_page
from aihub_billing.kit.periods import Interval, Period, nth_period, period_at, period_index
from aihub_billing.models import Coupon, InvoiceItem, Plan, PlanPrice, Subscription
from aihub_billing.models import SubscriptionEvent as EventRow
from aihub_billing.models.subscription import SUBSCRIPTION_STATUSES
from aihub_billing.plans.service import cycle_of, plans
from aihub_billing.pricing.discounts import discount_amount
from aihub_billing.pricing.proration import Line, prorate, tidy
from aihub_billing.subscriptions import schemas
from aihub_billing.subscriptions.errors import (
    AccountRequired,
    InvalidTransition,
    NoChange,
    PaymentMethodRequired,
    ProviderBilled,
    SubscriptionExists,
    SubscriptionNotFound,
)
from aihub_billing.subscriptions.repository import SubscriptionRepository
from aihub_billing.testclocks.service import test_clocks

log = structlog.get_logger("aihub_billing.subscriptions")

# An account without an entitled subscription is on this plan, period anchored at its creation.
FREE_PLAN_CODE = "free"
RENEW_JOB = "subscriptions.renew"
TRIAL_END_JOB = "subscriptions.trial_end"
# Handled by the invoices domain (enqueued by name: subscriptions do not import invoices).
INVOICE_JOB = "invoices.generate"
# Provider billing: the collection domain creates/cancels the subscription at the provider.
PROVIDER_SUBSCRIBE_JOB = "collection.provider_subscribe"
PROVIDER_UNSUBSCRIBE_JOB = "collection.provider_unsubscribe"


def provider_price_ref(price: PlanPrice, provider: str | None) -> str | None:
    """The provider's own price/plan id this price is billed through at `provider`, if any."""
    if provider == "stripe":
        return price.stripe_price_id
    if provider == "paypal":
        return price.paypal_plan_id
    return None


@dataclass(frozen=True, slots=True)
class CurrentPlan:
    plan: Plan
    period: Period
    subscription: Subscription | None


async def current_plan(session: AsyncSession, account_id: str, now: datetime) -> CurrentPlan:
    """The plan version an account is on at `now` and the current period; one query usually.

    Trialing, active and past_due subscriptions give their plan; an account without one
    (never subscribed, canceled, paused) is on the latest `free` plan, monthly periods
    anchored at the account's creation.
    """
    repo = SubscriptionRepository(session)
    found = await repo.entitled_with_plan(account_id)
    if found is not None:
        sub, plan = found
        period = Period(sub.current_period_start, sub.current_period_end)
        if sub.status != "trialing" and now >= period.end:
            # The renewal job has not run yet: the period still follows from the anchor.
            price = await plans.price(session, sub.price_id)
            interval = Interval(price.interval_unit, price.interval_count)  # type: ignore[arg-type]
            period = period_at(sub.billing_anchor, interval, now)
        return CurrentPlan(plan=plan, period=period, subscription=sub)
    account = await repo.account(account_id)
    if account is None:
        raise AccountNotFound(f"no account {account_id!r}")
    free = await plans.latest(session, FREE_PLAN_CODE)
    period = period_at(_second(account.created_at), Interval.monthly(), now)
    return CurrentPlan(plan=free, period=period, subscription=None)


def _second(at: datetime) -> datetime:
    # Periods and proration count whole seconds.
    return at.replace(microsecond=0)


def _interval(price: PlanPrice) -> Interval:
    return Interval(price.interval_unit, price.interval_count)  # type: ignore[arg-type]


def _cycle_label(price: PlanPrice) -> str:
    cycle = cycle_of(price.interval_unit, price.interval_count)
    return cycle if cycle != "custom" else f"every {price.interval_count} {price.interval_unit}s"


def _period_lines(
    plan: Plan,
    price: PlanPrice,
    period: Period,
    *,
    coupon: Coupon | None,
    cycles_left: int | None,
    include_setup: bool,
) -> tuple[list[Line], bool]:
    """Fee (+ setup fee) (+ coupon discount) lines for a period billed in advance.

    Returns the lines and whether a coupon cycle was used.
    """
    currency = price.currency
    # Canonical Decimals (50, not 50.00), as they read back from the database.
    fee_amount = tidy(minor_to_decimal(price.amount_minor, currency))
    dates = f"{period.start:%Y-%m-%d} to {period.end:%Y-%m-%d}"
    lines: list[Line] = []
    if price.amount_minor > 0:
        lines.append(
            Line(
                kind="subscription_fee",
                description=f"{plan.name} ({_cycle_label(price)}), {dates}",
                period_start=period.start,
                period_end=period.end,
                quantity=Decimal(1),
                unit_price=fee_amount,
                amount=fee_amount,
                amount_minor=price.amount_minor,
                currency=currency,
            )
        )
    if include_setup and price.setup_fee_minor > 0:
        setup = tidy(minor_to_decimal(price.setup_fee_minor, currency))
        lines.append(
            Line(
                kind="setup_fee",
                description=f"{plan.name} setup fee",
                period_start=period.start,
                period_end=period.end,
                quantity=Decimal(1),
                unit_price=setup,
                amount=setup,
                amount_minor=price.setup_fee_minor,
                currency=currency,
            )
        )
    used = False
    if (
        coupon is not None
        and price.amount_minor > 0
        and applies_to_plan(coupon, plan.code)
        and (cycles_left is None or cycles_left > 0)
    ):
        used = True
        off = tidy(discount_amount(fee_amount, currency, terms(coupon)))
        if off != 0:
            lines.append(
                Line(
                    kind="discount",
                    description=f"Coupon {coupon.code} on {plan.name}, {dates}",
                    period_start=period.start,
                    period_end=period.end,
                    quantity=Decimal(1),
                    unit_price=off,
                    amount=off,
                    amount_minor=round_to_minor(off, currency),
                    currency=currency,
                )
            )
    return lines, used


# Items that bill a price for (the rest of) a period.
_CHARGE_KINDS = ("subscription_fee", "proration_charge")
# Invoice statuses of a charge that was never paid and is no longer owed.
_WRITTEN_OFF = ("uncollectible", "void")


@dataclass(frozen=True, slots=True)
class Billed:
    """What the running price was charged for the rest of the current period."""

    period: Period  # the span that charge covers; it ends with the current period
    amount_minor: int  # the fee or proration charge
    discount_minor: int  # <= 0: the coupon discount recorded with it
    invoice_id: str | None = None  # the invoice the charge is on, once invoiced


async def _within_invoice(
    session: AsyncSession, credit_lines: list[Line], invoice_id: str
) -> list[Line]:
    """A plan change's credit lines held to what their charge's invoice has not given back
    yet (its credit notes, refunds, earlier credits): none when it gave all of it back, else
    one more line taking back the excess, so credits never return more than was billed."""
    subtotal, given = await CreditNoteRepository(session).given_back_subtotal(invoice_id)
    left = max(0, subtotal - given)
    credit = -sum(line.amount_minor for line in credit_lines)
    if credit <= left:
        return credit_lines
    if left == 0:
        return []
    first = credit_lines[0]
    excess = minor_to_decimal(credit - left, first.currency)
    taken_back = Line(
        kind="proration_charge",
        description="Less what this period's invoice has given back already",
        period_start=first.period_start,
        period_end=first.period_end,
        quantity=Decimal(1),
        unit_price=excess,
        amount=excess,
        amount_minor=credit - left,
        currency=first.currency,
    )
    return [*credit_lines, taken_back]


def _billed(period_items: list[InvoiceItem]) -> Billed | None:
    """The last fee or proration charge among the current period's items, net of the discount
    recorded with it; None when the period was not billed (a trial, a pause, a free price)."""
    charges = [item for item in period_items if item.kind in _CHARGE_KINDS]
    if not charges:
        return None
    last = charges[-1]
    # A credit recorded after it gave its unused part back already: the price running since
    # was charged nothing (a free price records no charge item), so nothing is left to credit.
    if any(
        item.kind == "proration_credit" and item.created_at > last.created_at
        for item in period_items
    ):
        return None
    # Its discount line was recorded with it, over the same span; a positive discount line
    # is a discount taken back with a credit, not one on this charge.
    discount = sum(
        item.amount_minor
        for item in period_items
        if item.kind == "discount"
        and item.amount_minor < 0
        and item.created_at == last.created_at
        and item.period_start == last.period_start
    )
    return Billed(
        Period(last.period_start, last.period_end), last.amount_minor, discount, last.invoice_id
    )


def _proration_discount(
    coupon: Coupon | None,
    cycles_left: int | None,
    counted: bool,
    plan: Plan,
    price: PlanPrice,
) -> tuple[Decimal, bool]:
    """The coupon's discount (<= 0) on a whole period of `price` for a proration inside the
    running cycle, and whether that uses up one of the coupon's cycles.

    In force when the coupon applies to the plan and is forever, or already discounted this
    cycle (`counted`), or has cycles left; a cycle not discounted yet counts now, as a fee
    line counts one.
    """
    if coupon is None or price.amount_minor == 0 or not applies_to_plan(coupon, plan.code):
        return Decimal(0), False
    if cycles_left is not None and not counted and cycles_left <= 0:
        return Decimal(0), False
    fee = minor_to_decimal(price.amount_minor, price.currency)
    off = tidy(discount_amount(fee, price.currency, terms(coupon)))
    return off, cycles_left is not None and not counted


def _line_schema(line: Line, subscription_id: str | None = None) -> schemas.InvoiceItem:
    return schemas.InvoiceItem(
        kind=line.kind,
        description=line.description,
        period_start=line.period_start,
        period_end=line.period_end,
        quantity=line.quantity,
        unit_price=line.unit_price,
        amount=line.amount,
        amount_minor=line.amount_minor,
        currency=line.currency,
        subscription_id=subscription_id,
    )


@dataclass(frozen=True, slots=True)
class ChangeOutcome:
    subscription: Subscription
    items: list[InvoiceItem]
    lines: list[Line]
    preview: bool
    direction: str
    when: str
    effective_at: datetime


# Counted when decided (a scheduled cancellation when scheduled, not when it takes effect at
# the period end, where renewals bunch up); present from the start at 0 for rate(). Never for
# an account on a test clock: a simulation is no cancellation spike (`_count_cancellation`).
_CANCELED_AT_PERIOD_END = SUBSCRIPTION_CANCELLATIONS.labels("at_period_end").inc
_CANCELED_NOW = SUBSCRIPTION_CANCELLATIONS.labels("immediate").inc

# Statuses whose overdue renewals are caught up (by period close, and before a cancellation
# or a plan change).
RENEWABLE_STATUSES = frozenset({"active", "past_due", "paused"})
MAX_CATCH_UP_RENEWALS = 1000  # per subscription and run; a guard, not a business rule

# Statuses whose subscriptions count in MRR: paying now (trials, pauses and incomplete do not).
MRR_STATUSES = frozenset({"active", "past_due"})
_DAYS_PER_MONTH = Decimal(365) / 12


def _count_cancellation(
    session: AsyncSession, inc: Callable[[float], None], clock_id: str | None
) -> None:
    """Counts a cancellation decided now, once its transaction commits; not one of an account
    on a test clock (`clock_id`)."""
    if clock_id is None:
        count_on_commit(session, inc)


def monthly_minor(amount_minor: int, interval_unit: str, interval_count: int) -> Decimal:
    """A price per cycle as an unrounded amount per month (a day is 1/(365/12) month)."""
    per_unit = Decimal(amount_minor) / interval_count
    return per_unit * _DAYS_PER_MONTH if interval_unit == "day" else per_unit


@dataclass(frozen=True, slots=True)
class SubscriptionMetrics:
    """What /metrics reads: open subscriptions by status, and MRR in minor units per
    currency (list prices, rounded half-up once per currency)."""

    by_status: dict[str, int]
    mrr_minor: dict[str, int]


# Provider subscription statuses (Stripe's, PayPal's v1 `state` and v2 `status`) -> ours.
_PROVIDER_STATUSES = {
    "active": "active",
    "past_due": "past_due",
    "unpaid": "past_due",
    "paused": "paused",
    "suspended": "paused",
    "canceled": "canceled",
    "cancelled": "canceled",
    "incomplete_expired": "canceled",
    "expired": "canceled",
}


class SubscriptionService:
    # Reading and rendering.

    async def metrics(self, session: AsyncSession) -> SubscriptionMetrics:
        by_status = {status: 0 for status in SUBSCRIPTION_STATUSES if status != "canceled"}
        mrr: dict[str, Decimal] = {}
        rows = await SubscriptionRepository(session).open_by_price_terms()
        for status, currency, unit, count, how_many, total_minor in rows:
            by_status[status] = by_status.get(status, 0) + how_many
            if status in MRR_STATUSES:
                mrr[currency] = mrr.get(currency, Decimal(0)) + monthly_minor(
                    total_minor, unit, count
                )
        return SubscriptionMetrics(
            by_status,
            {c: int(v.to_integral_value(rounding=ROUND_HALF_UP)) for c, v in mrr.items()},
        )

    async def render(self, session: AsyncSession, sub: Subscription) -> schemas.Subscription:
        plan = await plans.version(session, sub.plan_id)
        price = await plans.price(session, sub.price_id)
        pending = None
        if sub.pending_plan_id is not None and sub.pending_price_id is not None:
            pending_plan = await plans.version(session, sub.pending_plan_id)
            pending_price = await plans.price(session, sub.pending_price_id)
            pending = schemas.PendingChange(
                plan=_plan_ref(pending_plan),
                billing_cycle=cycle_of(pending_price.interval_unit, pending_price.interval_count),
                interval_unit=pending_price.interval_unit,
                interval_count=pending_price.interval_count,
                amount_minor=pending_price.amount_minor,
                effective_at=sub.current_period_end,
            )
        coupon = await coupons.by_id(session, sub.coupon_id) if sub.coupon_id else None
        return schemas.Subscription(
            id=sub.id,
            account_id=sub.account_id,
            status=sub.status,
            plan=_plan_ref(plan),
            currency=sub.currency,
            billing_cycle=cycle_of(price.interval_unit, price.interval_count),
            interval_unit=price.interval_unit,
            interval_count=price.interval_count,
            amount_minor=price.amount_minor,
            setup_fee_minor=price.setup_fee_minor,
            billing_anchor=sub.billing_anchor,
            current_period_start=sub.current_period_start,
            current_period_end=sub.current_period_end,
            trial_start=sub.trial_start,
            trial_end=sub.trial_end,
            cancel_at_period_end=sub.cancel_at_period_end,
            canceled_at=sub.canceled_at,
            ended_at=sub.ended_at,
            paused_at=sub.paused_at,
            pending_change=pending,
            coupon=coupon.code if coupon else None,
            coupon_cycles_left=sub.coupon_cycles_left if coupon else None,
            payment_provider=sub.payment_provider,
            payment_method_id=sub.payment_method_id,
            provider_subscription_id=sub.provider_subscription_id,
            provider_billed=sub.provider_billed,
            created_at=sub.created_at,
        )

    async def current(
        self, session: AsyncSession, ctx: Context, account_id: str | None
    ) -> schemas.CurrentPlan:
        account = await self._account(session, ctx, account_id)
        ctx, _ = await test_clocks.context_for(session, ctx, account)
        now = ctx.clock.now()
        found = await current_plan(session, account, now)
        open_sub = await SubscriptionRepository(session).open_for_account(account)
        return schemas.CurrentPlan(
            account_id=account,
            plan=_plan_ref(found.plan),
            period_start=found.period.start,
            period_end=found.period.end,
            subscription=await self.render(session, open_sub) if open_sub else None,
        )

    async def history(
        self,
        session: AsyncSession,
        ctx: Context,
        account_id: str | None,
        *,
        cursor: str | None,
        limit: int | None,
    ) -> tuple[list[EventRow], str | None]:
        account = await self._account(session, ctx, account_id)
        repo = SubscriptionRepository(session)
        return await id_page(
            cursor, limit, lambda after_id, n: repo.events(account, limit=n, after_id=after_id)
        )

    async def invoice_items(
        self, session: AsyncSession, ctx: Context, subscription_id: str
    ) -> list[InvoiceItem]:
        """Every item the subscription recorded, oldest first (invoiced or still pending)."""
        sub, _, _ = await self._load(session, ctx, subscription_id, lock=False)
        return await SubscriptionRepository(session).items(sub.id)

    # Lifecycle.

    async def create(
        self, session: AsyncSession, ctx: Context, data: schemas.SubscriptionCreate
    ) -> tuple[Subscription, list[InvoiceItem]]:
        account_id = await self._account(session, ctx, data.account_id)
        if data.trial_days is not None and not ctx.actor.is_operator:
            raise Forbidden("only the operator overrides trial_days")
        # Before reading its clock: attaching the account to one waits, or is seen.
        await accounts.lock(session, account_id)
        ctx, clock_id = await test_clocks.context_for(session, ctx, account_id)
        repo = SubscriptionRepository(session)
        if await repo.open_for_account(account_id) is not None:
            raise SubscriptionExists("cancel the current subscription or change its plan")
        account = await repo.account(account_id)
        assert account is not None  # checked by _account
        currency = data.currency or account.currency
        plan, price = await plans.resolve(
            session, data.plan_type, currency, data.billing_cycle or "monthly", data.interval()
        )
        trial_days = data.trial_days if data.trial_days is not None else plan.trial_days
        # Billed by the provider: it runs trials and collects (PayPal: the buyer approves).
        provider_billed = provider_price_ref(price, data.payment_provider) is not None
        if provider_billed:
            trial_days = 0
        if (
            trial_days == 0
            and price.amount_minor > 0
            and data.payment_method_id is None
            and not provider_billed
        ):
            raise PaymentMethodRequired("send payment_method_id, or choose a plan with a trial")
        coupon = None
        if data.coupon is not None:
            coupon = await coupons.redeem(
                session,
                ctx,
                data.coupon,
                plan_code=plan.code,
                currency=currency,
                account_id=account_id,
            )
        now = _second(ctx.clock.now())
        if trial_days > 0:
            trial_end = now + timedelta(days=trial_days)
            # Paid periods are counted from the trial's end.
            anchor, period, status = trial_end, Period(now, trial_end), "trialing"
        else:
            # A provider-billed one is incomplete until the provider reports it active.
            anchor, status = now, "incomplete" if provider_billed else "active"
            period = nth_period(anchor, _interval(price), 0)
        sub = Subscription(
            id=new_id("sub", now),
            account_id=account_id,
            plan_id=plan.id,
            price_id=price.id,
            status=status,
            currency=currency,
            billing_anchor=anchor,
            current_period_start=period.start,
            current_period_end=period.end,
            billed_through=None,
            trial_start=now if trial_days > 0 else None,
            trial_end=anchor if trial_days > 0 else None,
            cancel_at_period_end=False,
            canceled_at=None,
            ended_at=None,
            paused_at=None,
            pending_plan_id=None,
            pending_price_id=None,
            coupon_id=coupon.id if coupon else None,
            coupon_cycles_left=initial_cycles(coupon) if coupon else None,
            setup_fee_billed=False,
            payment_provider=data.payment_provider,
            payment_method_id=data.payment_method_id,
            provider_subscription_id=data.provider_subscription_id,
            provider_billed=provider_billed,
            created_at=now,
            updated_at=now,
        )
        try:
            # The partial unique index settles a race the check above could not see.
            async with session.begin_nested():
                repo.add(sub)
                await session.flush()
        except IntegrityError:
            raise SubscriptionExists("the account already has an open subscription") from None
        items = []
        if status == "active":
            items = await self._bill_period(session, ctx, sub, plan, price, period)
        await self._log(session, ctx, sub, "created", None, None, None, {"items": _ids(items)})
        await self._schedule(session, ctx, sub, clock_id)
        if status == "active":
            await self._invoice(session, ctx, sub, "subscription_create", period, clock_id)
        if provider_billed:
            await enqueue(
                session,
                ctx,
                PROVIDER_SUBSCRIBE_JOB,
                {"subscription_id": sub.id},
                dedupe_key=f"{PROVIDER_SUBSCRIBE_JOB}:{sub.id}",
                test_clock_id=clock_id,
            )
        limits_changed(session, account_id)
        return sub, items

    async def change(
        self,
        session: AsyncSession,
        ctx: Context,
        subscription_id: str,
        data: schemas.SubscriptionChange,
        *,
        credit_unused: bool = True,
    ) -> ChangeOutcome:
        """`credit_unused=False`: the running price's unused time is not credited (dunning's
        downgrade for non-payment: what was never paid is not given back).

        Renewals that are due but have not run yet run first, as cancel runs them, so a change
        at or after the period end applies to the new period (a preview too: the renewal was
        due by the clock, whatever the change)."""
        sub, ctx, clock_id = await self._load(session, ctx, subscription_id)
        now = _second(ctx.clock.now())
        await self._renew_overdue(session, ctx, sub, now, clock_id)
        if sub.status not in ("trialing", "active", "past_due"):
            raise InvalidTransition(f"a {sub.status} subscription cannot change plan")
        if sub.provider_billed:
            raise ProviderBilled(f"{sub.payment_provider} bills this subscription")
        plan = await plans.version(session, sub.plan_id)
        price = await plans.price(session, sub.price_id)
        if data.billing_cycle is not None:
            cycle, wanted = data.billing_cycle, data.interval()
        else:
            cycle = cycle_of(price.interval_unit, price.interval_count)
            wanted = (price.interval_unit, price.interval_count) if cycle == "custom" else None
        new_plan, new_price = await plans.resolve(
            session, data.plan_type or plan.code, sub.currency, cycle, wanted
        )
        coupon = None
        if data.coupon is not None:
            coupon = await coupons.check(
                session,
                ctx,
                data.coupon,
                plan_code=new_plan.code,
                currency=sub.currency,
                account_id=sub.account_id,
            )
        same_price = new_price.id == price.id
        if same_price and coupon is None:
            if sub.pending_price_id is None or data.preview:
                raise NoChange(f"already on {new_plan.code} ({cycle})")
            # Asking for the running plan again withdraws the scheduled change.
            before = await self.render(session, sub)
            sub.pending_plan_id = sub.pending_price_id = None
            sub.updated_at = now
            await self._log(session, ctx, sub, "change_canceled", before, sub.status, plan.id, {})
            return ChangeOutcome(sub, [], [], False, "none", "immediate", now)

        interval_changes = _interval(new_price) != _interval(price)
        lines: list[Line] = []
        credit_lines: list[Line] = []
        credited_invoice: str | None = None  # the invoice whose charge credit_lines give back
        uses_cycle = False
        needs_method = new_price.amount_minor > 0 and sub.status != "trialing"
        if needs_method and (data.payment_method_id or sub.payment_method_id) is None:
            raise PaymentMethodRequired("send payment_method_id to move to a paid price")
        if sub.status == "trialing":
            # Nothing is billed during a trial: switch now, the first period bills the new price.
            direction, when, effective_at = "trial", "immediate", now
        else:
            period = Period(sub.current_period_start, sub.current_period_end)
            if not period.contains(now):
                raise InvalidTransition("the period has ended and its renewal is pending")
            new_period = (
                Period(now, _interval(new_price).shift(now, 1)) if interval_changes else None
            )
            held = await coupons.by_id(session, sub.coupon_id) if sub.coupon_id else None
            active = coupon or held
            cycles = initial_cycles(coupon) if coupon else sub.coupon_cycles_left
            period_items = await SubscriptionRepository(session).items_ending(sub.id, period.end)
            billed = _billed(period_items)
            if billed is not None and billed.invoice_id is not None:
                # Written off (uncollectible) or voided: it was never paid, nothing to credit.
                status = await SubscriptionRepository(session).invoice_status(billed.invoice_id)
                if status in _WRITTEN_OFF:
                    billed = None
            fee_lines: list[Line] = []
            if new_period is not None:
                # A new cycle starts now: the new price is a whole fee line, discounted as such.
                fee_lines, _ = _period_lines(
                    new_plan,
                    new_price,
                    new_period,
                    coupon=active,
                    cycles_left=cycles,
                    include_setup=not sub.setup_fee_billed,
                )
                new_discount = sum(
                    (line.amount for line in fee_lines if line.kind == "discount"), Decimal(0)
                )
            else:
                # A coupon just given has not discounted this cycle, whatever the old one did.
                counted = coupon is None and any(
                    item.kind == "discount" and item.amount_minor < 0 for item in period_items
                )
                new_discount, uses_cycle = _proration_discount(
                    active, cycles, counted, new_plan, new_price
                )
            proration = prorate(
                old_amount_minor=billed.amount_minor if billed else 0,
                old_discount_minor=billed.discount_minor if billed else 0,
                new_amount_minor=new_price.amount_minor,
                new_discount=new_discount,
                currency=sub.currency,
                period=billed.period if billed else period,
                at=now,
                new_period=new_period or period,
                old_label=f"{plan.name} ({_cycle_label(price)})",
                new_label=f"{new_plan.name} ({_cycle_label(new_price)})",
                old_coupon_label=f"Coupon {held.code}" if held else "Discount",
                new_coupon_label=f"Coupon {active.code}" if active else "Discount",
            )
            # Upgrade: the change costs something or nothing now; downgrade: it would credit.
            direction = "upgrade" if proration.net >= 0 else "downgrade"
            when = data.when or ("immediate" if direction == "upgrade" else "period_end")
            if same_price:  # a coupon alone: nothing to prorate
                direction, when = "none", "immediate"
            effective_at = now if when == "immediate" else period.end
            if when == "immediate" and not same_price:
                credit_lines = [
                    line for line in proration.credit_lines if line.amount != 0 and credit_unused
                ]
                if credit_lines and billed is not None and billed.invoice_id is not None:
                    credited_invoice = billed.invoice_id
                    credit_lines = await _within_invoice(session, credit_lines, credited_invoice)
                charge_lines = fee_lines if new_period is not None else proration.charge_lines
                lines = [line for line in (*credit_lines, *charge_lines) if line.amount != 0]
            else:
                uses_cycle = False
        if data.preview:
            return ChangeOutcome(sub, [], lines, True, direction, when, effective_at)

        before = await self.render(session, sub)
        from_status, from_plan = sub.status, sub.plan_id
        if data.payment_method_id is not None:
            sub.payment_method_id = data.payment_method_id
            sub.payment_provider = data.payment_provider or sub.payment_provider
        if coupon is not None:
            coupon = await coupons.redeem(
                session,
                ctx,
                coupon.code,
                plan_code=new_plan.code,
                currency=sub.currency,
                account_id=sub.account_id,
            )
            sub.coupon_id, sub.coupon_cycles_left = coupon.id, initial_cycles(coupon)
        sub.updated_at = now
        items: list[InvoiceItem] = []
        if when == "period_end":
            sub.pending_plan_id, sub.pending_price_id = new_plan.id, new_price.id
            kind = "change_scheduled"
        else:
            sub.plan_id, sub.price_id = new_plan.id, new_price.id
            sub.pending_plan_id = sub.pending_price_id = None
            kind = "plan_changed" if not same_price else "coupon_applied"
            if sub.status != "trialing" and not same_price:
                if interval_changes:
                    # A new billing cycle starts now, on a new anchor: the running period
                    # closes now and is invoiced now, with the credit and the new cycle's fee
                    # (recorded at `now`, so the invoice closing at `now` collects them) and
                    # its usage at the old price; its renewal job finds it stale.
                    closed_start = sub.current_period_start
                    credit_items = await self._record(
                        session, ctx, sub, credit_lines, at=now, gives_back=credited_invoice
                    )
                    new_period = Period(now, _interval(new_price).shift(now, 1))
                    sub.billing_anchor = now
                    sub.current_period_start, sub.current_period_end = (
                        new_period.start,
                        new_period.end,
                    )
                    items = credit_items + await self._bill_period(
                        session, ctx, sub, new_plan, new_price, new_period, at=now
                    )
                    await self._schedule(session, ctx, sub, clock_id)
                    if now > closed_start:
                        closed = Period(closed_start, now)
                        await self._invoice(
                            session, ctx, sub, "subscription_cycle", closed, clock_id, price.id
                        )
                    else:
                        # The change falls on the second the period began: the invoice
                        # closing at `now` may exist already, so the credit and the new fee
                        # get the new cycle's opening invoice, not the one a year later.
                        await self._invoice(
                            session, ctx, sub, "subscription_create", new_period, clock_id
                        )
                else:
                    items = await self._record(
                        session, ctx, sub, lines, gives_back=credited_invoice, of=credit_lines
                    )
                    if uses_cycle and sub.coupon_cycles_left is not None:
                        sub.coupon_cycles_left -= 1
            if not same_price:
                limits_changed(session, sub.account_id)
        data_out = {
            "direction": direction,
            "when": when,
            "to_plan_code": new_plan.code,
            "to_price_id": new_price.id,
            "items": _ids(items),
        }
        await self._log(session, ctx, sub, kind, before, from_status, from_plan, data_out)
        return ChangeOutcome(sub, items, lines, False, direction, when, effective_at)

    async def cancel(
        self, session: AsyncSession, ctx: Context, subscription_id: str, *, at_period_end: bool
    ) -> tuple[Subscription, list[InvoiceItem]]:
        """At period end (default) or now; canceling now credits nothing.

        Renewals that are due but have not run yet (a late worker) run first, as the renewal
        job would run them: each closed period gets its own cycle invoice, and the
        cancellation applies to the period the subscription is in now. An `incomplete`
        subscription has no paid period to run to its end: it ends now either way."""
        sub, ctx, clock_id = await self._load(session, ctx, subscription_id)
        if sub.status == "canceled":
            raise InvalidTransition("the subscription is already canceled")
        now = _second(ctx.clock.now())
        await self._renew_overdue(session, ctx, sub, now, clock_id)
        if sub.status == "canceled":
            return sub, []  # its scheduled cancellation took effect at the overdue period end
        if sub.status == "incomplete":
            # Never paid (the provider has not activated it): no renewal ever ends it, and
            # Stripe cancels an incomplete subscription only at once.
            at_period_end = False
        before = await self.render(session, sub)
        from_status = sub.status
        sub.updated_at = now
        if at_period_end:
            if sub.cancel_at_period_end:
                return sub, []
            sub.cancel_at_period_end = True
            sub.canceled_at = now
            kind = "cancel_scheduled"
            _count_cancellation(session, _CANCELED_AT_PERIOD_END, clock_id)
        else:
            if not sub.cancel_at_period_end:  # else counted when it was scheduled
                _count_cancellation(session, _CANCELED_NOW, clock_id)
            sub.status = "canceled"
            sub.canceled_at = sub.ended_at = now
            sub.cancel_at_period_end = False
            sub.pending_plan_id = sub.pending_price_id = None
            kind = "canceled"
            limits_changed(session, sub.account_id)
        await self._log(session, ctx, sub, kind, before, from_status, sub.plan_id, {})
        # At the provider it ends now either way: no further renewal is charged there, and
        # the period already paid runs to its end here.
        await self._cancel_at_provider(session, ctx, sub, clock_id)
        if not at_period_end and now > sub.current_period_start:
            last = Period(sub.current_period_start, now)
            await self._invoice(session, ctx, sub, "subscription_final", last, clock_id)
        return sub, []

    async def resume(
        self, session: AsyncSession, ctx: Context, subscription_id: str
    ) -> tuple[Subscription, list[InvoiceItem]]:
        """Ends a pause (billing the rest of an unbilled period) or a scheduled cancellation.

        Renewals due but not run yet run first, as in cancel and change: the periods that
        ended while paused close unbilled, and the resume bills the rest of the current one."""
        sub, ctx, clock_id = await self._load(session, ctx, subscription_id)
        now = _second(ctx.clock.now())
        await self._renew_overdue(session, ctx, sub, now, clock_id)
        before = await self.render(session, sub)
        from_status = sub.status
        items: list[InvoiceItem] = []
        if sub.status == "paused":
            sub.status = "active"
            sub.paused_at = None
            period = Period(sub.current_period_start, sub.current_period_end)
            billed = sub.billed_through is not None and sub.billed_through >= period.end
            if not billed and period.contains(now):
                plan = await plans.version(session, sub.plan_id)
                price = await plans.price(session, sub.price_id)
                held = await coupons.by_id(session, sub.coupon_id) if sub.coupon_id else None
                # The paused period was not billed, so the coupon has not discounted it yet.
                off, uses_cycle = _proration_discount(
                    held, sub.coupon_cycles_left, False, plan, price
                )
                charge = prorate(
                    old_amount_minor=0,
                    new_amount_minor=price.amount_minor,
                    new_discount=off,
                    currency=sub.currency,
                    period=period,
                    at=now,
                    new_label=f"{plan.name} after resuming",
                    new_coupon_label=f"Coupon {held.code}" if held else "Discount",
                ).charge_lines
                items = await self._record(session, ctx, sub, list(charge))
                if uses_cycle and sub.coupon_cycles_left is not None:
                    sub.coupon_cycles_left -= 1
                sub.billed_through = period.end
            kind = "resumed"
            limits_changed(session, sub.account_id)
        elif sub.status != "canceled" and sub.cancel_at_period_end:
            if sub.provider_billed and sub.provider_subscription_id is not None:
                raise ProviderBilled("it was canceled at the provider; subscribe again")
            sub.cancel_at_period_end = False
            sub.canceled_at = None
            kind = "cancel_revoked"
        else:
            raise InvalidTransition("nothing to resume: neither paused nor scheduled to cancel")
        sub.updated_at = now
        await self._log(session, ctx, sub, kind, before, from_status, sub.plan_id, {})
        return sub, items

    async def pause(
        self, session: AsyncSession, ctx: Context, subscription_id: str
    ) -> tuple[Subscription, list[InvoiceItem]]:
        """Stops billing from the next period; the account is on the free plan meanwhile."""
        sub, ctx, _ = await self._load(session, ctx, subscription_id)
        if sub.status != "active":
            raise InvalidTransition(f"only an active subscription can pause, not {sub.status}")
        now = _second(ctx.clock.now())
        before = await self.render(session, sub)
        sub.status = "paused"
        sub.paused_at = sub.updated_at = now
        await self._log(session, ctx, sub, "paused", before, "active", sub.plan_id, {})
        limits_changed(session, sub.account_id)
        return sub, []

    # Jobs (the handlers in tasks.py call these, with the job's context).

    async def renew(
        self,
        session: AsyncSession,
        ctx: Context,
        subscription_id: str,
        period_end: datetime,
        *,
        locked: Subscription | None = None,
        clock_id: str | None = None,
        enqueue_invoice: bool = True,
    ) -> None:
        """At a period's end: cancel if scheduled, else apply a scheduled change or move to
        the plan's latest version, start the next period and bill it (unless paused).

        Period close passes the subscription it already locked (with the account's test clock)
        and generates the closed period's invoice itself (`enqueue_invoice=False`)."""
        if locked is not None:
            sub: Subscription | None = locked
        else:
            sub = await SubscriptionRepository(session).get(subscription_id, lock=True)
        if sub is None or sub.status in ("canceled", "trialing"):
            return
        if sub.current_period_end != period_end:
            return  # stale: the period changed since this job was enqueued
        if sub.status == "incomplete":
            if sub.cancel_at_period_end:  # scheduled before cancel ended incomplete ones now
                await self._end(session, ctx, sub, period_end, await self.render(session, sub))
            return
        before = await self.render(session, sub)
        from_status, from_plan = sub.status, sub.plan_id
        closed = Period(sub.current_period_start, period_end)
        sub.updated_at = ctx.clock.now()
        if sub.cancel_at_period_end:
            await self._end(session, ctx, sub, period_end, before)
            return
        current_price = await plans.price(session, sub.price_id)
        if sub.pending_plan_id is not None and sub.pending_price_id is not None:
            target = await plans.version(session, sub.pending_plan_id)
            wanted = await plans.price(session, sub.pending_price_id)
        else:
            target, wanted = await plans.version(session, sub.plan_id), current_price
        # Renewal moves to the plan's latest version when it has the same price slot.
        latest = await plans.latest(session, target.code)
        plan, price = target, wanted
        if latest.id != target.id:
            newer = await plans.price_for(
                session, latest, sub.currency, wanted.interval_unit, wanted.interval_count
            )
            if newer is not None:
                plan, price = latest, newer
        if _interval(price) != _interval(current_price):
            sub.billing_anchor = period_end
        interval = _interval(price)
        period = nth_period(
            sub.billing_anchor,
            interval,
            period_index(sub.billing_anchor, interval, period_end),
        )
        sub.plan_id, sub.price_id = plan.id, price.id
        sub.pending_plan_id = sub.pending_price_id = None
        sub.current_period_start, sub.current_period_end = period.start, period.end
        items: list[InvoiceItem] = []
        if sub.status != "paused":
            items = await self._bill_period(session, ctx, sub, plan, price, period)
        data = {"plan_code": plan.code, "plan_version": plan.version, "items": _ids(items)}
        await self._log(session, ctx, sub, "renewed", before, from_status, from_plan, data)
        if locked is None:
            _, clock_id = await test_clocks.context_for(session, ctx, sub.account_id)
        await self._schedule(session, ctx, sub, clock_id)
        if enqueue_invoice:
            # The closed period's invoice: the items recorded so far (this renewal's fee too)
            # and its overage at the price that was in force.
            await self._invoice(
                session, ctx, sub, "subscription_cycle", closed, clock_id, current_price.id
            )
        if plan.id != from_plan:
            limits_changed(session, sub.account_id)

    async def end_trial(
        self, session: AsyncSession, ctx: Context, subscription_id: str, trial_end: datetime
    ) -> None:
        """At the trial's end: the first paid period starts and is billed (setup fee too)."""
        sub = await SubscriptionRepository(session).get(subscription_id, lock=True)
        if sub is None or sub.status != "trialing" or sub.trial_end != trial_end:
            return
        before = await self.render(session, sub)
        sub.updated_at = ctx.clock.now()
        if sub.cancel_at_period_end:
            await self._end(session, ctx, sub, trial_end, before)
            return
        plan = await plans.version(session, sub.plan_id)
        price = await plans.price(session, sub.price_id)
        period = nth_period(sub.billing_anchor, _interval(price), 0)
        sub.status = "active"
        sub.current_period_start, sub.current_period_end = period.start, period.end
        items = await self._bill_period(session, ctx, sub, plan, price, period)
        await self._log(
            session,
            ctx,
            sub,
            "trial_ended",
            before,
            "trialing",
            sub.plan_id,
            {"items": _ids(items)},
        )
        _, clock_id = await test_clocks.context_for(session, ctx, sub.account_id)
        await self._schedule(session, ctx, sub, clock_id)
        await self._invoice(session, ctx, sub, "subscription_create", period, clock_id)

    # Dunning (the collection domain): an unpaid invoice puts the subscription past due.

    async def mark_past_due(
        self, session: AsyncSession, ctx: Context, subscription_id: str, *, invoice_id: str
    ) -> bool:
        """active → past_due while an invoice is unpaid; False when nothing changed."""
        return await self._standing(session, ctx, subscription_id, "active", "past_due", invoice_id)

    async def mark_recovered(
        self, session: AsyncSession, ctx: Context, subscription_id: str, *, invoice_id: str
    ) -> bool:
        """past_due → active once the unpaid invoice is settled; False when nothing changed."""
        return await self._standing(session, ctx, subscription_id, "past_due", "active", invoice_id)

    async def _standing(
        self,
        session: AsyncSession,
        ctx: Context,
        subscription_id: str,
        from_status: str,
        to_status: str,
        invoice_id: str,
    ) -> bool:
        sub = await SubscriptionRepository(session).get(subscription_id, lock=True)
        if sub is None or sub.status != from_status:
            return False
        before = await self.render(session, sub)
        sub.status, sub.updated_at = to_status, _second(ctx.clock.now())
        kind = "past_due" if to_status == "past_due" else "recovered"
        data = {"invoice_id": invoice_id}
        await self._log(session, ctx, sub, kind, before, from_status, sub.plan_id, data)
        return True

    # Provider-side subscriptions (their webhooks, applied by the payments domain).

    async def apply_provider_status(
        self,
        session: AsyncSession,
        ctx: Context,
        *,
        provider: str,
        provider_subscription_id: str,
        status: str | None,
        canceled: bool,
        event_id: str,
        occurred_at: datetime | None = None,
    ) -> str:
        """Applies a provider subscription's new status to the linked subscription (history
        and audit as any change); returns what happened, for the webhook record.

        `occurred_at` is when the provider set the status (its event's creation time).
        Providers deliver out of order: an update older than the newest status applied is
        ignored (a cancellation is final, whenever it comes)."""
        repo = SubscriptionRepository(session)
        sub = await repo.by_provider_id(provider, provider_subscription_id)
        if sub is None:
            return "ignored: no subscription of ours is linked to it"
        sub = await repo.get(sub.id, lock=True)  # concurrent events take turns
        assert sub is not None  # found just above, in this transaction
        target = "canceled" if canceled else _PROVIDER_STATUSES.get((status or "").lower())
        if target is None:
            return f"ignored: provider status {status!r} is not mapped"
        newest = sub.provider_status_at
        if occurred_at is not None:
            if not canceled and newest is not None and occurred_at < newest:
                return (
                    f"ignored: a newer provider status (of {newest.isoformat()}) is applied to "
                    f"subscription {sub.id}"
                )
            sub.provider_status_at = max(occurred_at, newest or occurred_at)
        if sub.status == target:
            return f"unchanged: subscription {sub.id} is {sub.status}"
        if sub.status == "canceled":  # a late update never reopens a canceled subscription
            return f"unchanged: subscription {sub.id} is canceled"
        if target == "canceled" and sub.cancel_at_period_end and sub.status != "incomplete":
            # We canceled it there ourselves; the paid period runs to its end here.
            return f"unchanged: subscription {sub.id} ends at its period end"
        now = _second(ctx.clock.now())
        before = await self.render(session, sub)
        from_status = sub.status
        sub.status, sub.updated_at = target, now
        if target == "paused":
            sub.paused_at = now
        elif target == "canceled":
            _, clock_id = await test_clocks.context_for(session, ctx, sub.account_id)
            _count_cancellation(session, _CANCELED_NOW, clock_id)
            sub.canceled_at = sub.canceled_at or now
            sub.ended_at = now
            sub.cancel_at_period_end = False
            sub.pending_plan_id = sub.pending_price_id = None
        elif from_status == "paused":
            sub.paused_at = None
        kind = "canceled" if target == "canceled" else "provider_updated"
        data = {"provider": provider, "event_id": event_id, "provider_status": status}
        await self._log(session, ctx, sub, kind, before, from_status, sub.plan_id, data)
        limits_changed(session, sub.account_id)
        return f"applied: subscription {sub.id} {target}"

    # Helpers.

    async def _renew_overdue(
        self,
        session: AsyncSession,
        ctx: Context,
        sub: Subscription,
        now: datetime,
        clock_id: str | None,
    ) -> None:
        """Runs the renewals of `sub` (locked) due by `now` that the renewal job has not run
        yet, as that job runs them (each enqueues its closed period's cycle invoice): before a
        cancellation or a plan change, which then apply to the period the subscription is in
        now. Period close catches up the same way; the renewal job, when it runs later, finds
        its period gone and does nothing."""
        for _ in range(MAX_CATCH_UP_RENEWALS):
            if sub.status not in RENEWABLE_STATUSES or sub.current_period_end > now:
                return
            period_end = sub.current_period_end
            await self.renew(session, ctx, sub.id, period_end, locked=sub, clock_id=clock_id)
            if sub.status != "canceled" and sub.current_period_end == period_end:
                return  # nothing moved; never loop on it

    async def _end(
        self,
        session: AsyncSession,
        ctx: Context,
        sub: Subscription,
        at: datetime,
        before: schemas.Subscription,
    ) -> None:
        from_status = sub.status
        sub.status = "canceled"
        sub.ended_at = at
        sub.cancel_at_period_end = False
        sub.pending_plan_id = sub.pending_price_id = None
        await self._log(session, ctx, sub, "canceled", before, from_status, sub.plan_id, {})
        limits_changed(session, sub.account_id)
        if at > sub.current_period_start:
            _, clock_id = await test_clocks.context_for(session, ctx, sub.account_id)
            last = Period(sub.current_period_start, at)
            await self._invoice(session, ctx, sub, "subscription_final", last, clock_id)

    def account_in_scope(self, ctx: Context, account_id: str | None) -> str:
        """The account to act on, without asking the database: an admin names it, other
        keys act on their own (another account is not found, so ids don't leak)."""
        if ctx.actor.role in (Role.ADMIN, Role.SYSTEM):
            if account_id is None:
                raise AccountRequired("pass account_id")
        elif account_id is None:
            account_id = ctx.actor.account_id
        if account_id is None or not ctx.actor.can_access(account_id):
            raise AccountNotFound(f"no account {account_id!r}")
        return account_id

    async def _account(self, session: AsyncSession, ctx: Context, account_id: str | None) -> str:
        """account_in_scope, for an account that exists."""
        account_id = self.account_in_scope(ctx, account_id)
        if await SubscriptionRepository(session).account(account_id) is None:
            raise AccountNotFound(f"no account {account_id!r}")
        return account_id

    async def _load(
        self, session: AsyncSession, ctx: Context, subscription_id: str, *, lock: bool = True
    ) -> tuple[Subscription, Context, str | None]:
        repo = SubscriptionRepository(session)
        if lock and (known := await repo.get(subscription_id)) is not None:
            # The account's invoicing lock before the subscription's row, the one lock order
            # (advisory, subscription, invoice, payment, account): a change credits an
            # invoice that credit notes and refunds give back from under that lock, and a
            # cancel or resume that renews first would otherwise deadlock a period close.
            await InvoiceRepository(session).lock_account(known.account_id)
        sub = await repo.get(subscription_id, lock=lock)
        if sub is None or not ctx.actor.can_access(sub.account_id):
            raise SubscriptionNotFound(f"no subscription {subscription_id!r}")
        clocked, clock_id = await test_clocks.context_for(session, ctx, sub.account_id)
        return sub, clocked, clock_id

    async def _bill_period(
        self,
        session: AsyncSession,
        ctx: Context,
        sub: Subscription,
        plan: Plan,
        price: PlanPrice,
        period: Period,
        at: datetime | None = None,
    ) -> list[InvoiceItem]:
        if sub.provider_billed:
            sub.billed_through = period.end
            return []  # the provider charges the fee
        coupon = None
        if sub.coupon_id is not None and sub.coupon_cycles_left != 0:
            coupon = await coupons.by_id(session, sub.coupon_id)
        lines, used = _period_lines(
            plan,
            price,
            period,
            coupon=coupon,
            cycles_left=sub.coupon_cycles_left,
            include_setup=not sub.setup_fee_billed,
        )
        if used and sub.coupon_cycles_left is not None:
            sub.coupon_cycles_left -= 1
        sub.setup_fee_billed = True
        sub.billed_through = period.end
        return await self._record(session, ctx, sub, lines, at=at)

    async def _record(
        self,
        session: AsyncSession,
        ctx: Context,
        sub: Subscription,
        lines: list[Line],
        at: datetime | None = None,
        gives_back: str | None = None,
        of: Sequence[Line] | None = None,
    ) -> list[InvoiceItem]:
        """The lines as pending invoice items, stamped `at` (default: now); those of `of`
        (default: all) name `gives_back`, the invoice whose charge they credit."""
        now = ctx.clock.now() if at is None else at
        crediting = lines if of is None else of
        repo = SubscriptionRepository(session)
        items = []
        for line in lines:
            if line.amount == 0:
                continue
            item = InvoiceItem(
                id=new_id("ii", now),
                account_id=sub.account_id,
                subscription_id=sub.id,
                kind=line.kind,
                description=line.description[:500],
                period_start=line.period_start,
                period_end=line.period_end,
                quantity=line.quantity,
                unit_price=line.unit_price,
                amount=line.amount,
                amount_minor=line.amount_minor,
                currency=line.currency,
                created_at=now,
                invoice_id=None,
                credited_invoice_id=gives_back if line in crediting else None,
            )
            repo.add(item)
            items.append(item)
        await session.flush()
        return items

    async def _schedule(
        self, session: AsyncSession, ctx: Context, sub: Subscription, clock_id: str | None
    ) -> None:
        """Enqueues the next lifecycle job at the period (or trial) end, once per boundary."""
        if sub.status == "trialing" and sub.trial_end is not None:
            name, at = TRIAL_END_JOB, sub.trial_end
            payload = {"subscription_id": sub.id, "trial_end": at.isoformat()}
        else:
            name, at = RENEW_JOB, sub.current_period_end
            payload = {"subscription_id": sub.id, "period_end": at.isoformat()}
        await enqueue(
            session,
            ctx,
            name,
            payload,
            run_at=at,
            dedupe_key=f"{name}:{sub.id}:{at.isoformat()}",
            test_clock_id=clock_id,
        )

    async def _cancel_at_provider(
        self, session: AsyncSession, ctx: Context, sub: Subscription, clock_id: str | None
    ) -> None:
        if sub.provider_subscription_id is None or not sub.provider_billed:
            return
        await enqueue(
            session,
            ctx,
            PROVIDER_UNSUBSCRIBE_JOB,
            {
                "subscription_id": sub.id,
                "provider": sub.payment_provider,
                "provider_subscription_id": sub.provider_subscription_id,
            },
            dedupe_key=f"{PROVIDER_UNSUBSCRIBE_JOB}:{sub.id}",
            test_clock_id=clock_id,
        )

    async def _invoice(
        self,
        session: AsyncSession,
        ctx: Context,
        sub: Subscription,
        reason: str,
        period: Period,
        clock_id: str | None,
        price_id: str | None = None,
    ) -> None:
        """Enqueues the generation of the invoice of (subscription, reason, period), once."""
        if sub.provider_billed:
            return  # the provider invoices it
        payload = {
            "subscription_id": sub.id,
            "reason": reason,
            "period_start": period.start.isoformat(),
            "period_end": period.end.isoformat(),
        }
        if price_id is not None:
            payload["price_id"] = price_id
        await enqueue(
            session,
            ctx,
            INVOICE_JOB,
            payload,
            dedupe_key=f"{INVOICE_JOB}:{sub.id}:{reason}:{period.start.isoformat()}",
            test_clock_id=clock_id,
        )

    async def _log(
        self,
        session: AsyncSession,
        ctx: Context,
        sub: Subscription,
        kind: str,
        before: schemas.Subscription | None,
        from_status: str | None,
        from_plan_id: str | None,
        data: dict[str, Any],
    ) -> None:
        """One history row and one audit entry per change."""
        await session.flush()
        now = ctx.clock.now()
        SubscriptionRepository(session).add(
            EventRow(
                id=new_id("subev", now),
                subscription_id=sub.id,
                account_id=sub.account_id,
                type=kind,
                at=now,
                from_status=from_status,
                to_status=sub.status,
                from_plan_id=from_plan_id,
                to_plan_id=sub.plan_id,
                to_price_id=sub.price_id,
                data=data,
                actor_key_id=ctx.actor.key_id,
                request_id=ctx.request_id,
            )
        )
        await audit.record(
            session,
            ctx,
            action=f"subscription.{kind}",
            object_type="subscription",
            object_id=sub.id,
            account_id=sub.account_id,
            before=before,
            after=await self.render(session, sub),
        )


def _plan_ref(plan: Plan) -> schemas.PlanRef:
    return schemas.PlanRef(id=plan.id, code=plan.code, version=plan.version, name=plan.name)


def _ids(items: list[InvoiceItem]) -> list[str]:
    return [item.id for item in items]


def item_schema(item: InvoiceItem) -> schemas.InvoiceItem:
    return schemas.InvoiceItem.model_validate(item)


def line_schema(line: Line, subscription_id: str | None = None) -> schemas.InvoiceItem:
    return _line_schema(line, subscription_id)


subscriptions = SubscriptionService()
