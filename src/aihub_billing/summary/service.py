"""The billing summary: what the account is on, its usage and quota this period, and where
the period is heading at its run rate."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.accounts.service import accounts
from aihub_billing.kit.context import Context
from aihub_billing.kit.money import minor_to_decimal, round_to_minor
from aihub_billing.kit.periods import month_at
from aihub_billing.quota.service import QuotaManager
from aihub_billing.subscriptions.errors import AccountRequired
from aihub_billing.subscriptions.service import current_plan
from aihub_billing.summary import schemas
from aihub_billing.summary.forecast import projected_amount, projected_count, runs_out_at
from aihub_billing.testclocks.service import test_clocks
from aihub_billing.usage.service import ModelUsage, usage

_DAY = timedelta(days=1)
# Subscriptions whose period end is a renewal (a canceled or ending one has none).
_RENEWING = {"trialing", "active", "past_due"}


class SummaryService:
    async def summary(
        self, session: AsyncSession, ctx: Context, account_id: str | None, quota: QuotaManager
    ) -> schemas.Summary:
        if account_id is None:
            if ctx.actor.is_operator:
                raise AccountRequired("pass account_id")
            account_id = ctx.actor.account_id or ""
        account = await accounts.get(session, ctx, account_id)
        ctx, _ = await test_clocks.context_for(session, ctx, account.id)
        now = ctx.clock.now()
        on = await current_plan(session, account.id, now)
        # The quota's month: the period itself, or the month of a longer (yearly) period.
        start, end = (month := month_at(on.period, now)).start, month.end
        renewal = on.period.end
        # Everything recorded in the period (events may be stamped a little ahead of now).
        used = await usage.usage_by_model(session, account.id, start, end)
        status = await quota.status(session, ctx, account.id)
        sub = on.subscription
        renews = sub is not None and sub.status in _RENEWING and not sub.cancel_at_period_end
        calls = sum(m.calls for m in used)
        tokens = sum(m.input_tokens + m.output_tokens for m in used)
        costs = _by_currency(used)
        currency = account.currency
        projected = {c: projected_amount(a, start, now, end) for c, a in costs.items()}
        runs_out = runs_out_at(tokens, status.limit_tokens, start, now, end)
        return schemas.Summary(
            user_id=account.id,
            current_subscription=schemas.CurrentSubscription(
                plan_type=on.plan.code,
                status=sub.status if sub is not None else "none",
                # A trial end not run yet (the job is late) is due now, not days ago.
                days_until_renewal=max(0, -(-(renewal - now) // _DAY))
                if renews or sub is None
                else None,
            ),
            usage_this_month=schemas.UsageThisMonth(
                total_requests=calls,
                total_cost=_rounded(costs.get(currency, Decimal(0)), currency),
                currency=currency,
                costs=_amounts(costs),
                period_start=start,
            ),
            quota_status=schemas.QuotaStatus(
                plan_type=status.plan_type,
                remaining_calls=status.remaining_calls,
                remaining_tokens=status.remaining_tokens,
                reset_at=status.reset_at,
            ),
            forecast=schemas.Forecast(
                period_end=end,
                projected_requests=projected_count(calls, start, now, end),
                projected_cost=_rounded(projected.get(currency, Decimal(0)), currency),
                currency=currency,
                projected_costs=_amounts(projected),
                token_quota_runs_out_on=runs_out.date() if runs_out is not None else None,
            ),
        )


def _by_currency(used: Sequence[ModelUsage]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for row in used:
        out[row.currency] = out.get(row.currency, Decimal(0)) + row.cost
    return out


def _rounded(amount: Decimal, currency: str) -> Decimal:
    """The one rounding of a shown amount: half-up to the currency's minor units."""
    return minor_to_decimal(round_to_minor(amount, currency), currency)


def _amounts(amounts: dict[str, Decimal]) -> list[schemas.CurrencyAmount]:
    return [
        schemas.CurrencyAmount(currency=c, amount=_rounded(a, c))
        for c, a in sorted(amounts.items())
    ]


summaries = SummaryService()
