"""InvoiceGenerator: one invoice per subscription period, exactly once; finalization with
gapless numbers; the status machine draft → open → paid | void | uncollectible.

Period close collects the subscription's pending invoice items (fees in advance, proration,
setup fee, discounts) and adds the closing period's overage in arrears (calls, tokens per
model, storage GB-months) from the usage rollups. Lines are rounded once, taxed per line, and
the invoice's figures are integer sums of its lines (see calc.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal

import structlog
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.accounts.errors import AccountNotFound
from aihub_billing.audit.service import audit
from aihub_billing.creditnotes import balance
from aihub_billing.errors import AccountRequired, InvalidRequest
from aihub_billing.invoices import calc, pdf, schemas
from aihub_billing.invoices.errors import (
    InvalidInvoiceTransition,
    InvalidPaymentAmount,
    InvoiceNotFound,
    NoUpcomingInvoice,
)
from aihub_billing.invoices.history import History
from aihub_billing.invoices.numbering import series_for
from aihub_billing.invoices.repository import InvoiceRepository
from aihub_billing.jobs.queue import deferred_enqueues, enqueue
from aihub_billing.kit.context import Context
from aihub_billing.kit.ids import new_id
from aihub_billing.kit.money import minor_to_decimal, round_fraction
from aihub_billing.kit.pagination import id_page
from aihub_billing.kit.periods import (
    Interval,
    Period,
    add_months,
    months_of,
    nth_period,
    period_index,
)
from aihub_billing.models import (
    Invoice,
    InvoiceItem,
    InvoiceLine,
    Plan,
    PlanPrice,
    Subscription,
)
from aihub_billing.notifications.service import notify
from aihub_billing.plans.schemas import PlanLimits
from aihub_billing.plans.service import plans
from aihub_billing.subscriptions.service import (
    MAX_CATCH_UP_RENEWALS,
    RENEWABLE_STATUSES,
    subscriptions,
)
from aihub_billing.testclocks.service import test_clocks
from aihub_billing.usage.billing import BilledUsage, PeriodKey, billed_usage
from aihub_billing.usage.service import usage

log = structlog.get_logger("aihub_billing.invoices")

GENERATE_JOB = "invoices.generate"
FINALIZE_JOB = "invoices.finalize"
# Registered by the payments domain; enqueued at finalization only when a handler exists.
COLLECT_JOB = "invoices.collect"

Reason = Literal["subscription_create", "subscription_cycle", "subscription_final", "late_usage"]
USAGE_REASONS: tuple[Reason, ...] = ("subscription_cycle", "subscription_final")
_USAGE_AND_ADJUSTMENT = (*calc.USAGE_KINDS, "adjustment")
# Which statuses each action leaves from. A draft is never voided or deleted: finalize it
# (POST /finalize) and void the open invoice, so every number that exists stays accounted for.
_FROM = {
    "void": ("open", "uncollectible"),
    "mark_uncollectible": ("open",),
    "mark_paid": ("open", "uncollectible"),
}


@dataclass(frozen=True, slots=True)
class Generated:
    invoice: Invoice | None
    outcome: Literal["created", "existing", "empty"]
    finalized: bool = False


@dataclass(slots=True)
class CloseOutcome:
    subscriptions: int = 0
    renewed: int = 0
    created: int = 0
    existing: int = 0
    empty: int = 0
    finalized: int = 0
    invoice_ids: list[str] = field(default_factory=list)

    def add(self, other: CloseOutcome) -> None:
        self.subscriptions += other.subscriptions
        self.renewed += other.renewed
        self.created += other.created
        self.existing += other.existing
        self.empty += other.empty
        self.finalized += other.finalized
        self.invoice_ids += other.invoice_ids

    def count(self, made: Generated) -> None:
        """A generation this run asked for, whose invoice did not exist yet."""
        if made.outcome == "created":
            self.created += 1
        else:
            self.empty += 1
        self.finalized += made.finalized
        if made.invoice is not None:
            self.invoice_ids.append(made.invoice.id)

    def schema(self) -> schemas.GenerateResult:
        return schemas.GenerateResult(
            subscriptions=self.subscriptions,
            renewed=self.renewed,
            created=self.created,
            existing=self.existing,
            empty=self.empty,
            finalized=self.finalized,
            invoice_ids=self.invoice_ids,
        )


def _interval(price: PlanPrice) -> Interval:
    return Interval(price.interval_unit, price.interval_count)  # type: ignore[arg-type]


def _terms(
    plan: Plan | PlanLimits, price: PlanPrice | None, override: dict[str, Any] | None = None
) -> calc.OverageTerms:
    """The allowance and policies the quota enforced (the plan's limits with the account's
    override on top, field by field, as `quota.service.resolve_limits` applies them) and the
    overage prices of the subscription's price: an override that grants more tokens must not
    leave the invoice billing them as overage."""
    o = override or {}

    def pick(field: str, planned: Any) -> Any:
        return planned if o.get(field) is None else o[field]

    return calc.OverageTerms(
        included_calls=pick("included_api_calls", plan.included_api_calls),
        included_tokens=pick("included_tokens", plan.included_tokens),
        included_storage_gb=plan.included_storage_gb,
        calls_policy=pick("calls_policy", plan.calls_policy),
        tokens_policy=pick("tokens_policy", plan.tokens_policy),
        storage_policy=plan.storage_policy,
        per_1k_calls=price.overage_per_1k_calls if price else None,
        per_1m_tokens=price.overage_per_1m_tokens if price else None,
        per_gb_month=price.overage_per_gb_month if price else None,
    )


def _item_line(item: InvoiceItem) -> calc.DraftLine:
    return calc.DraftLine(
        kind=item.kind,
        description=item.description,
        period_start=item.period_start,
        period_end=item.period_end,
        quantity=item.quantity,
        unit_price=item.unit_price,
        amount=item.amount,
        amount_minor=item.amount_minor,
        invoice_item_id=item.id,
    )


def _fields(draft: calc.DraftLine) -> dict[str, Any]:
    """A drafted line's fields, as both the stored line and the preview take them."""
    values = {f.name: getattr(draft, f.name) for f in fields(draft)}
    values["description"] = draft.description[:500]
    return values


def _row(invoice_id: str, position: int, draft: calc.DraftLine, now: datetime) -> InvoiceLine:
    return InvoiceLine(
        id=new_id("il", now), invoice_id=invoice_id, position=position, **_fields(draft)
    )


def _line_schema(position: int, draft: calc.DraftLine) -> schemas.InvoiceLine:
    return schemas.InvoiceLine(position=position, **_fields(draft))


def _series(now: datetime, clock_id: str | None) -> str:
    return series_for("INV", now.year, test_clock=clock_id is not None)


def _number(invoice: Invoice, series: str, sequence: int) -> None:
    invoice.series, invoice.sequence = series, sequence
    invoice.number = f"{series}-{sequence:06d}"


@dataclass(frozen=True, slots=True)
class _Draft:
    """An invoice generated by a period close, finalized with the rest of its batch."""

    invoice: Invoice
    rows: list[InvoiceLine]
    ctx: Context
    clock_id: str | None


@dataclass(slots=True)
class _Batch:
    """What a period close of a batch of subscriptions loads once and shares: the locked
    subscriptions, the accounts' contexts (their test clocks), prefetched usage, and the
    drafts finalized together at the end."""

    subs: list[Subscription]
    clocks: dict[str, tuple[Context, str | None]]
    usage: dict[PeriodKey, BilledUsage] = field(default_factory=dict)
    histories: dict[str, History] = field(default_factory=dict)
    drafts: list[_Draft] = field(default_factory=list)
    # Accounts, plans and prices loaded for the batch: held, so that the session's identity
    # map (weak references) answers every later get() of them without a query.
    held: list[object] = field(default_factory=list)


def _dates(period: Period) -> str:
    return f"{period.start:%Y-%m-%d} to {period.end:%Y-%m-%d}"


class InvoiceService:
    # Set from the configuration by BillingService.
    finalize_after: timedelta = timedelta(hours=1)
    default_tax_rate: Decimal = Decimal(0)
    store_pdfs: bool = True

    def __init__(self) -> None:
        self._plans: dict[str, Plan] = {}
        self._prices: dict[str, PlanPrice] = {}

    # Generation.

    async def generate(
        self,
        session: AsyncSession,
        ctx: Context,
        subscription_id: str,
        reason: Reason,
        period: Period,
        *,
        price_id: str | None = None,
    ) -> Generated:
        """The invoice of (subscription, reason, period): created once, found on reruns.

        One transaction (the caller's): the invoice, its lines, the collected items and the
        finalization job land together or not at all.
        """
        if reason == "late_usage":
            final = await InvoiceRepository(session).by_key(
                subscription_id, "subscription_final", period.start
            )
            if final is None:  # nothing was due when it ended: the usage makes the final one
                reason = "subscription_final"
        return await self._generate(session, ctx, subscription_id, reason, period, price_id)

    async def _generate(
        self,
        session: AsyncSession,
        ctx: Context,
        subscription_id: str,
        reason: Reason,
        period: Period,
        price_id: str | None,
        batch: _Batch | None = None,
    ) -> Generated:
        """`batch`: a period close that holds the account's lock, knows that this invoice
        does not exist yet, and finalizes its drafts together at the end."""
        await session.flush()  # the session does not autoflush: the queries below must see it all
        repo = InvoiceRepository(session)
        sub = await repo.subscription(subscription_id)
        if sub is None:
            return Generated(None, "empty")
        if batch is None:
            await repo.lock_account(sub.account_id)
            existing = await repo.by_key(sub.id, reason, period.start)
            if existing is not None:
                return Generated(existing, "existing")
            ctx, clock_id = await test_clocks.context_for(session, ctx, sub.account_id)
            history = (await repo.histories([sub.id]))[sub.id]
            known: dict[PeriodKey, BilledUsage] = {}
        else:
            ctx, clock_id = batch.clocks[sub.account_id]
            history, known = batch.histories[sub.id], batch.usage
        if reason == "late_usage":  # an ended subscription's last period, billed once more
            items = []
            lines = await self._adjustment_lines(session, sub, period.end, "", history, known)
        else:
            boundary = period.start if reason == "subscription_create" else period.end
            items = history.pending_items(history.close_time(boundary) or boundary)
            lines = [_item_line(item) for item in items]
        if reason in USAGE_REASONS:
            lines += await self._usage_lines(session, sub, period, price_id, history, known)
            lines += await self._adjustment_lines(session, sub, period.start, "", history, known)
        if reason == "subscription_final":  # with or without an invoice now
            await self._late_usage_later(session, ctx, sub, period, clock_id)
        if not lines:
            return Generated(None, "empty")
        account = await repo.account(sub.account_id)
        assert account is not None  # a subscription's account exists (foreign key)
        rate = calc.tax_rate_for(account.tax_exempt, account.tax_rate, self.default_tax_rate)
        lines = calc.with_tax(lines, rate, sub.currency)
        figures = calc.totals(lines)
        now = ctx.clock.now()
        invoice = Invoice(
            id=new_id("inv", now),
            account_id=sub.account_id,
            subscription_id=sub.id,
            billing_reason=reason,
            status="draft",
            currency=sub.currency,
            period_start=period.start,
            period_end=period.end,
            series=None,
            sequence=None,
            number=None,
            subtotal_minor=figures.subtotal_minor,
            tax_minor=figures.tax_minor,
            total_minor=figures.total_minor,
            balance_applied_minor=0,
            amount_due_minor=figures.total_minor,
            amount_paid_minor=0,
            amount_credited_minor=0,
            memo=None,
            payment_provider=sub.payment_provider,
            attempt_count=0,
            next_payment_attempt_at=None,
            due_at=None,
            created_at=now,
            updated_at=now,
            finalized_at=None,
            paid_at=None,
            voided_at=None,
            marked_uncollectible_at=None,
        )
        if repo.postgres:
            # The account's advisory lock is held: no other run can insert this invoice now.
            repo.add(invoice)
            await session.flush()
        else:
            try:
                async with session.begin_nested():
                    repo.add(invoice)
                    await session.flush()
            except IntegrityError:
                # A concurrent run created it first (the unique key settles the race).
                found = await repo.by_key(sub.id, reason, period.start)
                if found is None:
                    raise
                return Generated(found, "existing")
        rows = [_row(invoice.id, n, draft, now) for n, draft in enumerate(lines, start=1)]
        for row in rows:
            repo.add(row)
        claimed = await repo.claim_items([item.id for item in items], invoice.id)
        if claimed != len(items):  # the account lock makes this impossible; never bill twice
            raise RuntimeError(f"invoice items of {sub.id} were collected concurrently")
        await session.flush()
        await audit.record(
            session,
            ctx,
            action="invoice.created",
            object_type="invoice",
            object_id=invoice.id,
            account_id=invoice.account_id,
            after=self._render(invoice, rows),
        )
        finalized = False
        if self.finalize_after <= timedelta(0):
            # Finalized in this transaction: its usage lines are as fresh as can be.
            if batch is not None:
                batch.drafts.append(_Draft(invoice, rows, ctx, clock_id))
            else:
                await self._finalize(session, ctx, invoice, clock_id, rows=rows)
            finalized = True
        else:
            await enqueue(
                session,
                ctx,
                FINALIZE_JOB,
                {"invoice_id": invoice.id},
                run_at=now + self.finalize_after,
                dedupe_key=f"{FINALIZE_JOB}:{invoice.id}",
                test_clock_id=clock_id,
            )
        log.info("invoice.created", invoice_id=invoice.id, subscription_id=sub.id, reason=reason)
        return Generated(invoice, "created", finalized)

    async def _late_usage_later(
        self,
        session: AsyncSession,
        ctx: Context,
        sub: Subscription,
        period: Period,
        clock_id: str | None,
    ) -> None:
        """A running subscription bills its previous period's late usage on its next invoice
        (one period back); an ended one has no next invoice, so its last period gets one
        look at the time that invoice would have been made: an invoice if usage came (the
        final invoice itself when the period had nothing to invoice when it ended)."""
        price = await self._price(session, sub.price_id)
        await enqueue(
            session,
            ctx,
            GENERATE_JOB,
            {
                "subscription_id": sub.id,
                "reason": "late_usage",
                "period_start": period.start.isoformat(),
                "period_end": period.end.isoformat(),
            },
            run_at=_interval(price).shift(period.end, 1),
            dedupe_key=f"{GENERATE_JOB}:{sub.id}:late_usage:{period.start.isoformat()}",
            test_clock_id=clock_id,
        )

    async def _in_force(
        self,
        session: AsyncSession,
        sub: Subscription,
        at: datetime,
        price_id: str | None,
        history: History,
    ) -> tuple[Plan, PlanPrice | None, str] | None:
        """The plan version, price and status the subscription had just before `at`.

        The price is the caller's, else the one its history recorded then (a refresh or a
        late-usage adjustment after the price moved on keeps the period's own overage rates),
        else, for history older than that record, the current one's cycle."""
        state = history.state_before(at)
        plan_id, then, status = state if state is not None else (sub.plan_id, None, sub.status)
        plan = await self._plan(session, plan_id)
        price_id = price_id or then
        if price_id is not None:
            return plan, await self._price(session, price_id), status
        current = await self._price(session, sub.price_id)
        if plan_id == sub.plan_id:
            return plan, current, status
        price = await plans.price_for(
            session, plan, sub.currency, current.interval_unit, current.interval_count
        )
        return plan, price, status

    async def _usage_lines(
        self,
        session: AsyncSession,
        sub: Subscription,
        period: Period,
        price_id: str | None,
        history: History,
        known: dict[PeriodKey, BilledUsage],
    ) -> list[calc.DraftLine]:
        """Overage in arrears for a closed period (`known`: usage of periods that a period
        close fetched for its whole batch).

        The allowance is monthly, so each month of a longer period (`months_of`) is held
        against the terms the quota enforced in it: the plan version and price in force at
        the month's end (`price_id`, the period's own price, at the period's end), with the
        account's quota override as it stood then. Months under the same terms are billed
        together. Only the usage made while the subscription was not paused counts (while
        paused the account is on `free` and nothing is billed), against the month's whole
        allowance: a month paused throughout bills none, one paused for a part bills the
        rest's."""
        if sub.trial_end is not None and period.start < sub.trial_end:
            return []  # trial usage is not billed
        groups: list[tuple[calc.OverageTerms, list[Period], list[calc.PeriodUse]]] = []
        for n, month in enumerate(months_of(period)):
            last = month.end == period.end
            found = await self._in_force(
                session, sub, month.end, price_id if last else None, history
            )
            if found is None or found[2] == "trialing":
                continue
            spans = history.unpaused(month.start, month.end)
            if not spans:
                continue  # paused throughout
            plan, price, _ = found
            override = history.override_at(month.end)
            terms = await self._account_terms(session, plan, price, override)
            use = await self._month_use(session, sub, terms, period, n, month, spans, known)
            if use is None:
                continue
            if groups and groups[-1][0] == terms:
                groups[-1][1].append(month)
                groups[-1][2].append(use)
            else:
                groups.append((terms, [month], [use]))
        lines: list[calc.DraftLine] = []
        for terms, months, uses in groups:
            start, end = months[0].start, months[-1].end
            if len(groups) == 1:
                start, end = period.start, period.end
            lines += calc.overage_lines(terms, uses, sub.currency, start, end)
        return lines

    async def _month_use(
        self,
        session: AsyncSession,
        sub: Subscription,
        terms: calc.OverageTerms,
        period: Period,
        n: int,
        month: Period,
        spans: list[tuple[datetime, datetime]],
        known: dict[PeriodKey, BilledUsage],
    ) -> calc.PeriodUse | None:
        """The billed usage of the n-th month of the period (None: nothing of it is billed)."""
        calls_billed = terms.calls_policy == "bill" and terms.per_1k_calls is not None
        calls_billed = calls_billed and terms.included_calls is not None
        tokens_billed = terms.tokens_policy == "bill" and terms.per_1m_tokens is not None
        tokens_billed = tokens_billed and terms.included_tokens is not None
        storage_billed = terms.storage_policy == "bill" and terms.per_gb_month is not None
        storage_billed = storage_billed and terms.included_storage_gb is not None
        if not (calls_billed or tokens_billed or storage_billed):
            return None
        used = BilledUsage()
        if calls_billed or tokens_billed:
            keys = [(sub.account_id, start, end) for start, end in spans]
            missing = [key for key in keys if key not in known]
            fetched = await billed_usage(session, missing) if missing else {}
            for key in keys:
                part = known[key] if key in known else fetched[key]
                for model, tokens in part.tokens_by_model.items():
                    used.tokens_by_model[model] = used.tokens_by_model.get(model, 0) + tokens
                used.calls += part.calls
                used.tokens += part.tokens
        gb_months, share = Decimal(0), Fraction(1)
        if storage_billed:
            gb_months = await self._unpaused_gb_months(session, sub.account_id, month, spans)
            # GB-months are of a whole month: a month cut short (the period's last, or a
            # period shorter than a month) holds and includes its share of one.
            whole = add_months(period.start, n + 1) - month.start
            share = min(Fraction(month.duration // _US, whole // _US), Fraction(1))
        return calc.PeriodUse(used.calls, used.tokens, used.tokens_by_model, gb_months, share)

    @staticmethod
    async def _account_terms(
        session: AsyncSession,
        plan: Plan,
        price: PlanPrice | None,
        override: dict[str, Any] | None,
    ) -> calc.OverageTerms:
        """Overage terms under the account's quota override: its `plan_code` swaps the plan
        whose limits apply (its current version), never the prices."""
        if override is not None and override.get("plan_code"):
            limits = (await plans.get(session, override["plan_code"])).limits
            return _terms(limits, price, override)
        return _terms(plan, price, override)

    @staticmethod
    async def _unpaused_gb_months(
        session: AsyncSession,
        account_id: str,
        period: Period,
        spans: list[tuple[datetime, datetime]],
    ) -> Decimal:
        """Storage held in the spans, in GB-months of the whole period: each span's average
        GB weighted by its share of the period (rounded half-up to 18 places)."""
        if spans == [(period.start, period.end)]:  # never paused: the period's own figure
            return await usage.storage_gb_months(session, account_id, period.start, period.end)
        total = Fraction(0)
        length = (period.end - period.start) // _US
        for start, end in spans:
            average = await usage.storage_gb_months(session, account_id, start, end)
            total += Fraction(average) * Fraction((end - start) // _US, length)
        return round_fraction(total, calc.PLACES)

    async def _adjustment_lines(
        self,
        session: AsyncSession,
        sub: Subscription,
        since: datetime,
        exclude_id: str,
        history: History,
        known: dict[PeriodKey, BilledUsage],
    ) -> list[calc.DraftLine]:
        """Usage that reached the period before `since` after its invoice was finalized: the
        recomputed overage minus what was invoiced for that period, as one line."""
        repo = InvoiceRepository(session)
        previous = history.previous_usage_invoice(since, exclude_id)
        if previous is None or previous.status == "draft":
            return []  # a draft refreshes its own usage lines when it is finalized
        closed = Period(previous.period_start, previous.period_end)
        recomputed = await self._usage_lines(session, sub, closed, None, history, known)
        expected = sum((x.amount_minor for x in recomputed), 0)
        invoiced = await repo.invoiced_usage_minor(
            sub.id, closed.start, _USAGE_AND_ADJUSTMENT, exclude_id
        )
        difference = expected - invoiced
        if difference == 0:
            return []
        amount = minor_to_decimal(difference, sub.currency)
        return [
            calc.DraftLine(
                kind="adjustment",
                description=f"Usage adjustment for {_dates(closed)} (usage recorded late)",
                period_start=closed.start,
                period_end=closed.end,
                quantity=Decimal(1),
                unit_price=calc.tidy(amount),
                amount=calc.tidy(amount),
                amount_minor=difference,
            )
        ]

    # Period close for every due subscription (admin endpoint and CLI).

    async def closable(self, session: AsyncSession, account_id: str | None) -> list[str]:
        return await InvoiceRepository(session).closable_subscriptions(account_id)

    @staticmethod
    def check_close_at(ctx: Context, at: datetime | None) -> None:
        if at is not None and at > ctx.clock.now():
            raise InvalidRequest("`at` is in the future: only closed periods are invoiced")

    async def close_period(
        self,
        session: AsyncSession,
        ctx: Context,
        *,
        account_id: str | None = None,
        at: datetime | None = None,
        subscription_ids: list[str] | None = None,
    ) -> CloseOutcome:
        """Runs overdue renewals, then generates every missing invoice of closed periods
        (creation, last cycle, final) of the subscriptions; reruns find what exists."""
        self.check_close_at(ctx, at)
        if subscription_ids is None:
            if (
                account_id is not None
                and await InvoiceRepository(session).account(account_id) is None
            ):
                raise AccountNotFound(f"no account {account_id!r}")
            subscription_ids = await self.closable(session, account_id)
        outcome = CloseOutcome(subscriptions=len(subscription_ids))
        async with deferred_enqueues(session):
            batch = await self._load_batch(session, ctx, subscription_ids)
            # The first paid period's invoice comes first, so its items stay on it.
            firsts = [(sub, await self._first_period(session, sub)) for sub in batch.subs]
            created = [(sub, period) for sub, period in firsts if period is not None]
            await self._generate_missing(
                session, ctx, batch, "subscription_create", created, outcome
            )
            renewed = {
                sub.id: await self._renew_due(session, batch, sub, at, outcome)
                for sub in batch.subs
            }
            closed = [
                (sub, await self._closed_period(session, sub, renewed[sub.id]))
                for sub in batch.subs
            ]
            for reason in USAGE_REASONS:
                due = [(sub, c[1]) for sub, c in closed if c is not None and c[0] == reason]
                await self._generate_missing(session, ctx, batch, reason, due, outcome)
            await self._finalize_many(session, batch.drafts)
        return outcome

    async def _load_batch(
        self, session: AsyncSession, ctx: Context, subscription_ids: list[str]
    ) -> _Batch:
        """Locks the subscriptions' accounts (for invoicing) and the subscriptions, and loads
        what their close reads: accounts, test clocks, plans and prices."""
        repo = InvoiceRepository(session)
        subs = await repo.lock_for_close(subscription_ids)
        account_ids = sorted({sub.account_id for sub in subs})
        batch = _Batch(subs, await test_clocks.contexts_for(session, ctx, account_ids))
        batch.held += await repo.accounts(account_ids)
        batch.held += await plans.preload(session, sorted({sub.plan_id for sub in subs}))
        return batch

    async def _first_period(self, session: AsyncSession, sub: Subscription) -> Period | None:
        if sub.billed_through is None:
            return None
        first = sub.trial_end or sub.created_at
        interval = _interval(await self._price(session, sub.price_id))
        return Period(first, interval.shift(first, 1))

    async def _renew_due(
        self,
        session: AsyncSession,
        batch: _Batch,
        sub: Subscription,
        at: datetime | None,
        outcome: CloseOutcome,
    ) -> Period | None:
        """Runs the renewals due by `at` (or now) and returns the last period they closed.
        Its invoice is generated next with the batch's; when several renewals were overdue,
        each earlier closed period's cycle invoice (its overage, the fee its renewal recorded)
        is generated before the next renewal records more items."""
        clocked, clock_id = batch.clocks[sub.account_id]
        cutoff = clocked.clock.now() if at is None else min(at, clocked.clock.now())
        closed: tuple[Period, str] | None = None
        for _ in range(MAX_CATCH_UP_RENEWALS):
            if sub.status not in RENEWABLE_STATUSES:
                break
            if sub.current_period_end > cutoff:
                break
            if closed is not None:
                await self._close_renewed(session, clocked, batch, sub, *closed, outcome)
            closed = Period(sub.current_period_start, sub.current_period_end), sub.price_id
            await subscriptions.renew(
                session,
                clocked,
                sub.id,
                sub.current_period_end,
                locked=sub,
                clock_id=clock_id,
                enqueue_invoice=False,
            )
            outcome.renewed += 1
        return None if closed is None else closed[0]

    async def _close_renewed(
        self,
        session: AsyncSession,
        ctx: Context,
        batch: _Batch,
        sub: Subscription,
        period: Period,
        price_id: str,
        outcome: CloseOutcome,
    ) -> None:
        """The cycle invoice of a period that a catch-up renewal closed, unless it exists."""
        repo = InvoiceRepository(session)
        await session.flush()
        found = await repo.by_key(sub.id, "subscription_cycle", period.start)
        if found is not None:
            outcome.existing += 1
            outcome.invoice_ids.append(found.id)
            return
        batch.histories.update(await repo.histories([sub.id]))
        outcome.count(
            await self._generate(
                session, ctx, sub.id, "subscription_cycle", period, price_id, batch
            )
        )

    async def _closed_period(
        self, session: AsyncSession, sub: Subscription, renewed: Period | None = None
    ) -> tuple[Reason, Period] | None:
        """The subscription's last closed period that has an invoice to generate, if any;
        `renewed`, the period this close's renewals ended last, when the anchor cannot tell it
        (a billing-cycle change moved the anchor to that period's end)."""
        start = sub.current_period_start
        if sub.status == "canceled":
            if sub.ended_at is not None and sub.ended_at > start:
                return "subscription_final", Period(start, sub.ended_at)
        elif sub.status != "trialing" and start > sub.billing_anchor:
            interval = _interval(await self._price(session, sub.price_id))
            index = period_index(sub.billing_anchor, interval, start)
            previous = nth_period(sub.billing_anchor, interval, index - 1)
            if previous.end == start:
                return "subscription_cycle", previous
        if renewed is not None and sub.status != "canceled":
            return "subscription_cycle", renewed
        return None

    async def _generate_missing(
        self,
        session: AsyncSession,
        ctx: Context,
        batch: _Batch,
        reason: Reason,
        wanted: list[tuple[Subscription, Period]],
        out: CloseOutcome,
    ) -> None:
        """The batch's invoices of `reason` that do not exist yet (one query finds those that
        do), with their usage fetched in one go."""
        if not wanted:
            return
        repo = InvoiceRepository(session)
        await session.flush()
        existing = await repo.by_keys(reason, [(sub.id, period.start) for sub, period in wanted])
        missing = []
        for sub, period in wanted:
            found = existing.get((sub.id, period.start))
            if found is None:
                missing.append((sub, period))
            else:
                out.existing += 1
                out.invoice_ids.append(found)
        batch.histories = await repo.histories([sub.id for sub, _ in missing])
        if reason in USAGE_REASONS:
            keys = [(sub.account_id, period.start, period.end) for sub, period in missing]
            for sub, period in missing:  # and the periods that late usage may adjust
                previous = batch.histories[sub.id].previous_usage_invoice(period.start, "")
                if previous is not None and previous.status != "draft":
                    keys.append((sub.account_id, previous.period_start, previous.period_end))
            batch.usage.update(await billed_usage(session, keys))
        for sub, period in missing:
            out.count(await self._generate(session, ctx, sub.id, reason, period, None, batch))

    # Finalization and the status machine.

    async def finalize(
        self, session: AsyncSession, ctx: Context, invoice_id: str, *, scheduled: bool = False
    ) -> Invoice:
        """draft → open (numbered), or → paid when nothing is due. A scheduled run (the
        finalize job) on an invoice that is no longer a draft does nothing."""
        invoice = await self._locked(session, ctx, invoice_id)
        if invoice.status != "draft":
            if scheduled:
                return invoice
            raise InvalidInvoiceTransition(f"only a draft is finalized, not {invoice.status}")
        clocked, clock_id = await test_clocks.context_for(session, ctx, invoice.account_id)
        await self._finalize(session, clocked, invoice, clock_id)
        return invoice

    async def _finalize(
        self,
        session: AsyncSession,
        ctx: Context,
        invoice: Invoice,
        clock_id: str | None,
        *,
        rows: list[InvoiceLine] | None = None,
    ) -> None:
        """`rows`: the lines, when the invoice was generated in this very transaction (its
        usage lines are fresh then); otherwise a draft's usage lines are recomputed first."""
        repo = InvoiceRepository(session)
        if rows is not None:
            before = self._render(invoice, rows)
        else:
            before = await self.render(session, invoice)
        now = ctx.clock.now()
        if (
            rows is None
            and invoice.billing_reason in USAGE_REASONS
            and invoice.subscription_id is not None
        ):
            await self._refresh_usage(session, invoice, now)
        series = _series(now, clock_id)
        _number(invoice, series, await repo.next_number(series))
        applied = await self._apply_balance(session, ctx, invoice)
        await self._settle(session, ctx, invoice, clock_id, applied, before, rows, now)

    async def _finalize_many(self, session: AsyncSession, drafts: list[_Draft]) -> None:
        """Finalizes the drafts a period close generated, in their order: the credit they
        consume first, then their numbers (one statement per series, so the series' row lock
        is held only for the rest of the transaction's finalization), then the rest."""
        if not drafts:
            return
        repo = InvoiceRepository(session)
        befores = [self._render(d.invoice, d.rows) for d in drafts]
        await session.flush()  # the balance rows reference the invoices
        # One query tells which accounts have credit at all; only those take the balance's
        # lock to consume it. (Credit that arrives after this read stays on the balance for
        # the next invoice, as if it had arrived after the finalization.)
        credit = await balance.balances_of(session, [d.invoice.account_id for d in drafts])
        applied: list[int | None] = []
        for d in drafts:  # a negative total carries credit (with its number) after numbering
            if d.invoice.total_minor < 0:
                applied.append(None)
            elif credit.get((d.invoice.account_id, d.invoice.currency), 0) > 0:
                applied.append(await self._apply_balance(session, d.ctx, d.invoice))
            else:
                applied.append(0)
        # One moment per draft names its series and stamps its finalization, so a number of
        # one year never carries a finalization in the next (a close running over midnight).
        moments = [d.ctx.clock.now() for d in drafts]
        by_series: dict[str, list[_Draft]] = {}
        for d, at in zip(drafts, moments, strict=True):
            by_series.setdefault(_series(at, d.clock_id), []).append(d)
        for series in sorted(by_series):
            first = await repo.next_numbers(series, len(by_series[series]))
            for offset, d in enumerate(by_series[series]):
                _number(d.invoice, series, first + offset)
        for d, before, taken, at in zip(drafts, befores, applied, moments, strict=True):
            if taken is None:
                taken = await self._apply_balance(session, d.ctx, d.invoice)
            await self._settle(session, d.ctx, d.invoice, d.clock_id, taken, before, d.rows, at)

    async def _settle(
        self,
        session: AsyncSession,
        ctx: Context,
        invoice: Invoice,
        clock_id: str | None,
        applied: int,
        before: schemas.Invoice,
        rows: list[InvoiceLine] | None,
        now: datetime,
    ) -> None:
        """The numbered invoice after `applied` credit: open or paid, audited, its PDF and
        collection enqueued."""
        invoice.balance_applied_minor = applied
        invoice.amount_due_minor = max(invoice.total_minor - invoice.balance_applied_minor, 0)
        invoice.finalized_at = invoice.updated_at = now
        invoice.due_at = now
        if invoice.amount_due_minor <= 0:
            # Nothing to collect; a negative total (credits above charges) became account
            # credit in _apply_balance.
            invoice.status = "paid"
            invoice.paid_at = now
        else:
            invoice.status = "open"
        await session.flush()
        if rows is not None:
            after = self._render(invoice, rows)
        else:
            after = await self.render(session, invoice)
        await audit.record(
            session,
            ctx,
            action="invoice.finalized",
            object_type="invoice",
            object_id=invoice.id,
            account_id=invoice.account_id,
            before=before,
            after=after,
        )
        if self.store_pdfs:
            await pdf.schedule(session, ctx, invoice, clock_id)
        if invoice.status == "open":
            await enqueue(
                session,
                ctx,
                COLLECT_JOB,
                {"invoice_id": invoice.id},
                dedupe_key=f"{COLLECT_JOB}:{invoice.id}",
                test_clock_id=clock_id,
            )

    async def _apply_balance(self, session: AsyncSession, ctx: Context, invoice: Invoice) -> int:
        """At finalization: account credit pays what it can of the total; a negative total
        is carried to the balance instead. Returns the credit applied."""
        await session.flush()  # the balance rows reference the invoice
        if invoice.total_minor < 0:
            await balance.carry_credit(
                session,
                ctx,
                invoice_id=invoice.id,
                account_id=invoice.account_id,
                currency=invoice.currency,
                amount_minor=-invoice.total_minor,
                description=f"Credit from invoice {invoice.number or invoice.id}",
            )
            return 0
        return await balance.consume(
            session,
            ctx,
            account_id=invoice.account_id,
            currency=invoice.currency,
            invoice_id=invoice.id,
            up_to_minor=invoice.total_minor,
        )

    async def _refresh_usage(self, session: AsyncSession, invoice: Invoice, now: datetime) -> None:
        """Recomputes a draft's usage and adjustment lines (late usage is included), and
        taxes every line at the account's rate now: a rate changed since the draft was made
        applies to the whole invoice, not to its usage lines alone."""
        repo = InvoiceRepository(session)
        sub = await repo.subscription(invoice.subscription_id or "")
        if sub is None:
            return
        lines = await repo.lines(invoice.id)
        kept = [x for x in lines if x.kind not in _USAGE_AND_ADJUSTMENT]
        old = [x for x in lines if x.kind in _USAGE_AND_ADJUSTMENT]
        period = Period(invoice.period_start, invoice.period_end)
        history = (await repo.histories([sub.id]))[sub.id]
        fresh = await self._usage_lines(session, sub, period, None, history, {})
        fresh += await self._adjustment_lines(session, sub, period.start, invoice.id, history, {})
        account = await repo.account(invoice.account_id)
        assert account is not None
        rate = calc.tax_rate_for(account.tax_exempt, account.tax_rate, self.default_tax_rate)
        fresh = calc.with_tax(fresh, rate, invoice.currency)
        retaxed = False
        for line in kept:
            tax = calc.tax_of(line.amount_minor, rate, invoice.currency)
            if line.tax_minor != tax or line.tax_rate != rate:
                line.tax_rate, line.tax_minor, retaxed = rate, tax, True
        old_key = [(x.kind, x.model, x.amount, x.amount_minor, x.tax_minor) for x in old]
        new_key = [(x.kind, x.model, x.amount, x.amount_minor, x.tax_minor) for x in fresh]
        usage: Sequence[InvoiceLine | calc.DraftLine]
        if old_key != new_key:
            await repo.delete_lines([x.id for x in old])
            for x in old:
                session.expunge(x)
            await session.flush()
            position = max((x.position for x in kept), default=0)
            for draft in fresh:
                position += 1
                repo.add(_row(invoice.id, position, draft, now))
            usage = fresh
        elif retaxed:
            for x in old:  # same tax, though the rate may read otherwise (an exempt zero)
                x.tax_rate = rate
            usage = old
        else:
            return
        invoice.subtotal_minor = sum(x.amount_minor for x in kept) + sum(
            x.amount_minor for x in usage
        )
        invoice.tax_minor = sum(x.tax_minor for x in kept) + sum(x.tax_minor for x in usage)
        invoice.total_minor = invoice.subtotal_minor + invoice.tax_minor
        await session.flush()

    async def document_changed(
        self, session: AsyncSession, ctx: Context, invoice: Invoice, clock_id: str | None
    ) -> None:
        """Another domain changed a finalized invoice (a credit note): its stored PDF is
        rendered again (once per version)."""
        if self.store_pdfs:
            await pdf.schedule(session, ctx, invoice, clock_id)

    async def settle_if_covered(
        self, session: AsyncSession, ctx: Context, invoice: Invoice, before: schemas.Invoice
    ) -> bool:
        """An open invoice whose amount due is covered (by credit notes) is paid; no attempt to
        collect it runs again. The caller holds the invoice's lock."""
        if invoice.status != "open" or invoice.amount_due_minor > invoice.amount_paid_minor:
            return False
        ctx = await self._clocked(session, ctx, invoice)
        invoice.status = "paid"
        invoice.paid_at = invoice.updated_at = ctx.clock.now()
        invoice.next_payment_attempt_at = None
        await self._audit(session, ctx, invoice, "invoice.paid", before, None)
        await self._recover(session, ctx, invoice)
        return True

    @staticmethod
    async def _recover(session: AsyncSession, ctx: Context, invoice: Invoice) -> None:
        """A paid invoice ends the dunning of its subscription: past_due → active, and the
        account hears it (`subscription.recovered`, as after a provider's payment)."""
        if invoice.status != "paid" or invoice.subscription_id is None:
            return
        if await subscriptions.mark_recovered(
            session, ctx, invoice.subscription_id, invoice_id=invoice.id
        ):
            await _notify(
                session,
                ctx,
                invoice,
                "subscription.recovered",
                "Your subscription is active again",
                {"subscription_id": invoice.subscription_id},
            )

    async def mark_paid(
        self,
        session: AsyncSession,
        ctx: Context,
        invoice_id: str,
        amount_minor: int | None = None,
        *,
        payment_id: str | None = None,
        recover: bool = True,
    ) -> Invoice:
        """Records a payment (the whole remaining amount by default); paid once fully paid,
        which stops dunning and (`recover`) takes a past_due subscription back to active and
        notifies the account (`invoice.paid`, then `subscription.recovered` when it was past
        due). `recover=False`: the caller (collection, for a provider's payment) recovers the
        subscription and sends those notifications itself."""
        invoice = await self._locked(session, ctx, invoice_id)
        self._check("mark_paid", invoice)
        ctx = await self._clocked(session, ctx, invoice)
        remaining = invoice.amount_due_minor - invoice.amount_paid_minor
        amount = remaining if amount_minor is None else amount_minor
        if amount <= 0 or amount > remaining:
            raise InvalidPaymentAmount(f"{amount} minor units do not fit the {remaining} still due")
        before = await self.render(session, invoice)
        now = ctx.clock.now()
        invoice.amount_paid_minor += amount
        invoice.updated_at = now
        action = "invoice.payment_recorded"
        if invoice.amount_paid_minor >= invoice.amount_due_minor:
            invoice.status, invoice.paid_at, action = "paid", now, "invoice.paid"
            invoice.next_payment_attempt_at = None  # no retry runs on a paid invoice
        await self._audit(session, ctx, invoice, action, before, payment_id)
        if recover and invoice.status == "paid":
            await _notify(
                session,
                ctx,
                invoice,
                "invoice.paid",
                f"Invoice {invoice.number} is paid",
                {"payment_id": payment_id, "amount_minor": amount},
            )
            await self._recover(session, ctx, invoice)
        return invoice

    async def void(self, session: AsyncSession, ctx: Context, invoice_id: str) -> Invoice:
        invoice = await self._locked(session, ctx, invoice_id)
        self._check("void", invoice)
        if invoice.amount_paid_minor > 0:
            # Voiding would drop the payment: neither refunded nor credited to the account.
            raise InvalidInvoiceTransition(
                f"{invoice.amount_paid_minor} minor units are paid on it: credit-note the "
                "invoice (the paid part goes to the account balance) instead of voiding it"
            )
        ctx = await self._clocked(session, ctx, invoice)
        before = await self.render(session, invoice)
        invoice.status = "void"
        invoice.voided_at = invoice.updated_at = ctx.clock.now()
        # The credit it consumed goes back (and a negative one's carried credit stays: it
        # was the customer's).
        await balance.restore(session, ctx, invoice.id)
        await self._audit(session, ctx, invoice, "invoice.voided", before, None)
        return invoice

    async def mark_uncollectible(
        self, session: AsyncSession, ctx: Context, invoice_id: str
    ) -> Invoice:
        invoice = await self._locked(session, ctx, invoice_id)
        self._check("mark_uncollectible", invoice)
        ctx = await self._clocked(session, ctx, invoice)
        before = await self.render(session, invoice)
        invoice.status = "uncollectible"
        invoice.marked_uncollectible_at = invoice.updated_at = ctx.clock.now()
        await self._audit(session, ctx, invoice, "invoice.marked_uncollectible", before, None)
        return invoice

    @staticmethod
    def _check(action: str, invoice: Invoice) -> None:
        if invoice.status not in _FROM[action]:
            allowed = " or ".join(_FROM[action])
            raise InvalidInvoiceTransition(
                f"{action.replace('_', ' ')} needs an invoice that is {allowed}, "
                f"not {invoice.status}"
            )

    async def _audit(
        self,
        session: AsyncSession,
        ctx: Context,
        invoice: Invoice,
        action: str,
        before: schemas.Invoice,
        payment_id: str | None,
    ) -> None:
        await session.flush()
        log.info(action, invoice_id=invoice.id, payment_id=payment_id)
        if self.store_pdfs:
            _, clock_id = await test_clocks.context_for(session, ctx, invoice.account_id)
            await pdf.schedule(session, ctx, invoice, clock_id)
        await audit.record(
            session,
            ctx,
            action=action,
            object_type="invoice",
            object_id=invoice.id,
            account_id=invoice.account_id,
            before=before,
            after=await self.render(session, invoice),
        )

    async def _locked(self, session: AsyncSession, ctx: Context, invoice_id: str) -> Invoice:
        repo = InvoiceRepository(session)
        invoice = await repo.get(invoice_id)
        if invoice is None or not ctx.actor.can_access(invoice.account_id):
            raise InvoiceNotFound(f"no invoice {invoice_id!r}")
        await repo.lock_account(invoice.account_id)
        locked = await repo.get(invoice_id, lock=True)
        assert locked is not None
        return locked

    async def _clocked(self, session: AsyncSession, ctx: Context, invoice: Invoice) -> Context:
        """The context at the account's time (its test clock's, when attached)."""
        clocked, _ = await test_clocks.context_for(session, ctx, invoice.account_id)
        return clocked

    # Reading.

    async def get(self, session: AsyncSession, ctx: Context, invoice_id: str) -> schemas.Invoice:
        return await self.render(session, await self.row(session, ctx, invoice_id))

    async def row(self, session: AsyncSession, ctx: Context, invoice_id: str) -> Invoice:
        """The invoice if the caller may see it (another account's is not found)."""
        invoice = await InvoiceRepository(session).get(invoice_id)
        if invoice is None or not ctx.actor.can_access(invoice.account_id):
            raise InvoiceNotFound(f"no invoice {invoice_id!r}")
        return invoice

    async def render(self, session: AsyncSession, invoice: Invoice) -> schemas.Invoice:
        return self._render(invoice, await InvoiceRepository(session).lines(invoice.id))

    @staticmethod
    def _render(invoice: Invoice, lines: list[InvoiceLine]) -> schemas.Invoice:
        summary = schemas.InvoiceSummary.model_validate(invoice)
        return schemas.Invoice(
            **summary.model_dump(), lines=[schemas.InvoiceLine.model_validate(x) for x in lines]
        )

    # Plan versions and prices never change (a change is a new row): cached by id.

    # A rolled-back transaction expires what it loaded: such a cached row is loaded again.

    async def _plan(self, session: AsyncSession, plan_id: str) -> Plan:
        plan = self._plans.get(plan_id)
        if plan is None or inspect(plan).expired_attributes:
            plan = self._plans[plan_id] = await plans.version(session, plan_id)
        return plan

    async def _price(self, session: AsyncSession, price_id: str) -> PlanPrice:
        price = self._prices.get(price_id)
        if price is None or inspect(price).expired_attributes:
            price = self._prices[price_id] = await plans.price(session, price_id)
        return price

    async def page(
        self,
        session: AsyncSession,
        ctx: Context,
        *,
        account_id: str | None = None,
        status: str | None = None,
        subscription_id: str | None = None,
        period_from: datetime | None = None,
        period_to: datetime | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> tuple[list[schemas.InvoiceSummary], str | None]:
        if not ctx.actor.is_operator:
            if account_id is not None and account_id != ctx.actor.account_id:
                raise AccountNotFound(f"no account {account_id!r}")
            account_id = ctx.actor.account_id
        repo = InvoiceRepository(session)
        rows, next_cursor = await id_page(  # newest first: the cursor is the last id seen
            cursor,
            limit,
            lambda before_id, n: repo.page(
                account_id=account_id,
                status=status,
                subscription_id=subscription_id,
                period_from=period_from,
                period_to=period_to,
                before_id=before_id,
                limit=n,
            ),
        )
        return [schemas.InvoiceSummary.model_validate(r) for r in rows], next_cursor

    async def upcoming(
        self, session: AsyncSession, ctx: Context, account_id: str | None
    ) -> schemas.UpcomingInvoice:
        """What the invoice closing the current period would hold now (not stored): the
        pending items, the period's overage so far, a late-usage adjustment."""
        account_id = account_id or ctx.actor.account_id
        if account_id is None:
            raise AccountRequired("operator keys must give the account_id")
        if not ctx.actor.can_access(account_id):
            raise AccountNotFound(f"no account {account_id!r}")
        repo = InvoiceRepository(session)
        account = await repo.account(account_id)
        if account is None:
            raise AccountNotFound(f"no account {account_id!r}")
        sub = await repo.open_subscription(account_id)
        if sub is None:
            raise NoUpcomingInvoice(f"account {account_id!r} has no open subscription")
        clocked, _ = await test_clocks.context_for(session, ctx, account_id)
        now = clocked.clock.now()
        period = Period(sub.current_period_start, sub.current_period_end)
        history = (await repo.histories([sub.id]))[sub.id]
        lines = [_item_line(i) for i in history.pending_items(now)]
        if sub.status != "trialing":  # paused now: the overage of the unpaused part so far
            so_far = Period(period.start, max(min(now, period.end), period.start + _US))
            use_lines = await self._usage_lines(session, sub, so_far, sub.price_id, history, {})
            lines += [replace(x, period_end=period.end) for x in use_lines]
            lines += await self._adjustment_lines(session, sub, period.start, "", history, {})
        rate = calc.tax_rate_for(account.tax_exempt, account.tax_rate, self.default_tax_rate)
        lines = calc.with_tax(lines, rate, sub.currency)
        figures = calc.totals(lines)
        return schemas.UpcomingInvoice(
            account_id=account_id,
            subscription_id=sub.id,
            billing_reason="subscription_cycle",
            status="upcoming",
            currency=sub.currency,
            period_start=period.start,
            period_end=period.end,
            subtotal_minor=figures.subtotal_minor,
            tax_minor=figures.tax_minor,
            total_minor=figures.total_minor,
            balance_applied_minor=0,
            amount_due_minor=figures.total_minor,
            amount_paid_minor=0,
            amount_credited_minor=0,
            lines=[_line_schema(i, x) for i, x in enumerate(lines, start=1)],
        )


_US = timedelta(microseconds=1)


async def notify_invoice_event(
    session: AsyncSession,
    ctx: Context,
    invoice: Invoice,
    event_type: str,
    subject: str,
    data: dict[str, Any],
    clock_id: str | None,
    *,
    suffix: str = "",
) -> None:
    """An invoice event for the account (collection's and the invoices' own), identified by
    type and invoice (and `suffix`): the same event is delivered once, whichever path sends
    it."""
    await notify(
        session,
        ctx,
        account_id=invoice.account_id,
        event_type=event_type,
        event_id=f"{event_type}:{invoice.id}" + (f":{suffix}" if suffix else ""),
        subject=subject,
        data={
            "invoice_id": invoice.id,
            "invoice_number": invoice.number,
            "amount_due_minor": invoice.amount_due_minor,
            "currency": invoice.currency,
            **data,
        },
        test_clock_id=clock_id,
    )


async def _notify(
    session: AsyncSession,
    ctx: Context,
    invoice: Invoice,
    event_type: str,
    subject: str,
    data: dict[str, Any],
) -> None:
    _, clock_id = await test_clocks.context_for(session, ctx, invoice.account_id)
    await notify_invoice_event(session, ctx, invoice, event_type, subject, data, clock_id)


invoices = InvoiceService()
