"""QuotaManager: limits from plan + overrides, atomic check-and-consume, reservations,
violations, threshold notifications and counter rebuilds.

The hot path (`check`) touches the database only when the account's limits are not cached;
violations and notifications are buffered and written by `flush` (BillingService runs it in
the background), so a refusal costs no extra round trip.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

import structlog
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aihub_billing.accounts.changes import limits_changed
from aihub_billing.accounts.errors import AccountNotFound
from aihub_billing.accounts.service import accounts
from aihub_billing.audit.service import audit
from aihub_billing.errors import AccountRequired, Forbidden
from aihub_billing.jobs import queue
from aihub_billing.kit.clock import monotonic
from aihub_billing.kit.context import Context, Role
from aihub_billing.kit.db import UNREACHABLE, SessionSource, session_of, unless_committed
from aihub_billing.kit.ids import new_id, new_token
from aihub_billing.kit.pagination import id_page
from aihub_billing.kit.periods import Period, month_at
from aihub_billing.models import QuotaNotificationTarget, QuotaOverride, QuotaViolation
from aihub_billing.notifications.service import DELIVERY_ATTEMPTS
from aihub_billing.notifications.service import notifications as outbound
from aihub_billing.plans import schemas as plan_schemas
from aihub_billing.plans.service import overage_price_missing, plans
from aihub_billing.quota import schemas
from aihub_billing.quota.engine import (
    CheckOutcome,
    CheckRequest,
    EngineUnavailable,
    Limits,
    QuotaEngine,
    Verdict,
)
from aihub_billing.quota.errors import (
    EstimateAboveRateLimit,
    ModelNotAllowed,
    QuotaExceeded,
    QuotaUnavailable,
    RateLimited,
    ReservationNotFound,
)
from aihub_billing.quota.repository import QuotaRepository
from aihub_billing.subscriptions import service as subscriptions
from aihub_billing.testclocks.repository import TestClockRepository
from aihub_billing.testclocks.service import on_clock, test_clocks
from aihub_billing.usage.service import CountedUsage, CountingPeriod, usage

log = structlog.get_logger("aihub_billing.quota")

DEFAULT_THRESHOLDS = (80, 100)
# Reservation ids of checks that quota_fail_mode=fail_open let through uncounted: usage that
# settles one counts its call as well as its tokens (no reservation ever held the call).
DEGRADED_PREFIX = "rsvopen"
_DEGRADED_ID = DEGRADED_PREFIX + "_"
NOTIFY_JOB = "quota.notify"
# How long the checks of an account whose counters are stale go on with them as they are
# when the database cannot be read for the rebuild (a check must not wait on it each time).
STALE_RETRY_SECONDS = 1.0
MONTHLY_LIMITS = frozenset({"calls", "tokens", "member_calls", "member_tokens"})

BACKEND_ERRORS = Counter(
    "aihub_billing_quota_backend_errors_total",
    "Quota operations that found the counter store (Redis) unreachable",
    ["fail_mode"],
)
CHECKS = Counter(
    "aihub_billing_quota_checks_total",
    "Quota checks by result (test-clock accounts left out)",
    ["result"],
)
DROPPED = Counter(
    "aihub_billing_quota_events_dropped_total",
    "Violations/notifications dropped because the write buffer was full",
)
# Checks of real accounts only (`_count`): a simulation on a test clock is no quota violation
# spike. Backend errors and dropped events are the server's own trouble: counted for every
# account.
_ADMITTED = CHECKS.labels("admitted")
_BLOCKED = CHECKS.labels("blocked")
_RATE_LIMITED = CHECKS.labels("rate_limited")
_DEGRADED = CHECKS.labels("fail_open")


# --- seams for the integrator ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Used calls and tokens of one period, as stored in the database."""

    calls: int = 0
    tokens: int = 0
    members: dict[str, tuple[int, int]] = field(default_factory=dict)


class UsageSource(Protocol):
    """Where a rebuild reads the period's stored usage (the usage table, once wired)."""

    async def used(self, account_id: str, period: Period) -> UsageTotals: ...


class ZeroUsageSource:
    """Stores nothing, so a rebuild starts every period at zero: a placeholder until the
    usage table is plugged in (never use it where usage is recorded)."""

    async def used(self, account_id: str, period: Period) -> UsageTotals:
        return UsageTotals()


class StoredUsageSource:
    """Reads a period's calls and tokens from the usage tables, in a session of its own (so it
    sees only committed events: the same truth every process rebuilds from)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def used(self, account_id: str, period: Period) -> UsageTotals:
        async with self.sessions() as session:
            got = await usage.used_in_period(session, account_id, period.start, period.end)
        members = {m: (u.calls, u.tokens) for m, u in got.per_member.items()}
        return UsageTotals(got.calls, got.tokens, members)


@dataclass(frozen=True, slots=True)
class PlanAndPeriod:
    plan_code: str
    limits: plan_schemas.PlanLimits
    period: Period
    price_id: str | None = None  # the subscription's (None: no subscription)


async def current_plan(
    session: AsyncSession, account_id: str, now: datetime, override: QuotaOverride | None
) -> PlanAndPeriod:
    """The account's plan and period from its subscription (the free plan without one).

    An override's `plan_code` swaps the plan whose limits apply (a custom deal), never the
    period, which always follows the subscription's anchor. The limits are monthly (SPEC §3),
    so a longer period (yearly, quarterly) counts them per month of it, as its invoice does.
    """
    current = await subscriptions.current_plan(session, account_id, now)
    month = month_at(current.period, now)
    price_id = current.subscription.price_id if current.subscription is not None else None
    if override is not None and override.plan_code:
        plan = await plans.get(session, override.plan_code)
        return PlanAndPeriod(plan.code, plan.limits, month, price_id)
    limits = plan_schemas.PlanLimits.model_validate(current.plan)
    return PlanAndPeriod(current.plan.code, limits, month, price_id)


async def _block_what_nothing_bills(
    session: AsyncSession, resolved: ResolvedLimits, price_id: str | None
) -> ResolvedLimits:
    """A `bill` limit whose overage no price bills (the subscription moved to a price
    without it, or there is none) blocks instead: usage past it would be admitted and never
    invoiced. Plans and overrides are refused that way when set; a later change of the
    subscription's price is not."""
    limits = resolved.limits
    if "bill" not in (limits.calls_policy, limits.tokens_policy):
        return resolved
    price = await plans.price(session, price_id) if price_id is not None else None
    calls_unbilled = price is None or price.overage_per_1k_calls is None
    tokens_unbilled = price is None or price.overage_per_1m_tokens is None
    calls_policy = "block" if calls_unbilled else limits.calls_policy
    tokens_policy = "block" if tokens_unbilled else limits.tokens_policy
    if (calls_policy, tokens_policy) == (limits.calls_policy, limits.tokens_policy):
        return resolved
    limits = replace(limits, calls_policy=calls_policy, tokens_policy=tokens_policy)
    return replace(
        resolved,
        limits=limits,
        calls_watch=_watch(limits.calls, limits.calls_policy, resolved.thresholds),
        tokens_watch=_watch(limits.tokens, limits.tokens_policy, resolved.thresholds),
    )


# --- resolved limits ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResolvedLimits:
    account_id: str
    plan_code: str
    period: Period
    period_key: str
    limits: Limits
    allowed_models: frozenset[str] | None
    thresholds: tuple[int, ...]
    member_caps: dict[str, tuple[int | None, int | None]]
    # The least calls / tokens used at which a check has a threshold or overage to report.
    calls_watch: float = math.inf
    tokens_watch: float = math.inf
    # The frozen time of the test clock the account runs on (None: real time). Cached with
    # the limits: moving the clock drops them like a plan change.
    clock_time: datetime | None = None

    def now(self, ctx: Context) -> datetime:
        """The account's time: its test clock's, else the caller's."""
        return ctx.clock.now() if self.clock_time is None else self.clock_time

    def clocked(self, ctx: Context) -> Context:
        """`ctx` on the account's time."""
        return ctx if self.clock_time is None else on_clock(ctx, self.clock_time)

    def for_member(self, subject: str | None) -> Limits:
        cap = self.member_caps.get(subject) if subject else None
        if cap is None:
            return self.limits
        return replace(self.limits, member_calls=cap[0], member_tokens=cap[1])


def _count(resolved: ResolvedLimits, result: Counter) -> None:
    """Counts a check's result, unless the account runs on a test clock (known from its cached
    limits: no database round trip)."""
    if resolved.clock_time is None:
        result.inc()


def threshold_event_id(payload: dict[str, Any]) -> str:
    """One threshold crossing per (account, limit, threshold, period): its job's dedupe key
    and its event's id."""
    return "quota.threshold:{account_id}:{limit}:{threshold}:{period_start}".format(**payload)


async def _refuse_unbilled_overage(
    session: AsyncSession, ctx: Context, data: schemas.QuotaOverrideUpdate
) -> None:
    """422 when, under the override, usage past a `bill` limit would be admitted by the quota
    and invoiced by nothing: the account's price has no overage price for it, or the account
    has no subscription (nothing invoices it)."""
    current = await subscriptions.current_plan(session, data.account_id, ctx.clock.now())
    if data.plan_code is not None:
        limits = (await plans.get(session, data.plan_code)).limits
    else:
        limits = plan_schemas.PlanLimits.model_validate(current.plan)
    overridden = {
        name: value
        for name in ("included_api_calls", "included_tokens", "calls_policy", "tokens_policy")
        if (value := getattr(data, name)) is not None
    }
    limits = limits.model_copy(update=overridden)
    if current.subscription is None:
        billed = [
            policy
            for limit, policy, _ in plan_schemas.OVERAGE_PRICES
            if getattr(limits, policy) == "bill" and getattr(limits, limit) is not None
        ]
        if billed:
            raise overage_price_missing(
                f"{billed[0]} is bill but the account has no subscription: usage past the "
                "limit would be admitted and never invoiced"
            )
        return
    price = await plans.price(session, current.subscription.price_id)
    problem = plan_schemas.missing_overage_price(
        limits, [plan_schemas.PlanPrice.model_validate(price)]
    )
    if problem is not None:
        raise overage_price_missing(f"under the override, {problem}")


def _pick(override: Any, plan_value: Any) -> Any:
    return plan_value if override is None else override


def resolve_limits(
    account_id: str,
    plan_code: str,
    pl: plan_schemas.PlanLimits,
    period: Period,
    override: QuotaOverride | None,
    default_thresholds: tuple[int, ...],
) -> ResolvedLimits:
    """Plan limits with the account's override applied field by field."""
    o = override
    limits = Limits(
        calls=_pick(o and o.included_api_calls, pl.included_api_calls),
        tokens=_pick(o and o.included_tokens, pl.included_tokens),
        calls_policy=_pick(o and o.calls_policy, pl.calls_policy),
        tokens_policy=_pick(o and o.tokens_policy, pl.tokens_policy),
        rpm=_pick(o and o.rpm_limit, pl.rpm_limit),
        tpm=_pick(o and o.tpm_limit, pl.tpm_limit),
        concurrency=_pick(o and o.concurrency_limit, pl.concurrency_limit),
        member_calls=o.member_calls_limit if o else None,
        member_tokens=o.member_tokens_limit if o else None,
    )
    models = _pick(o and o.allowed_models, pl.allowed_models)
    # An empty list is the operator's "no notifications"; only null takes the defaults.
    thresholds = (
        tuple(o.thresholds) if o is not None and o.thresholds is not None else default_thresholds
    )
    # A cap's null field takes the account-wide member limit, as the override's own fields
    # take the plan's (a cap that raises the calls must not lift the token cap).
    caps = {
        subject: (
            _pick(cap.get("calls"), limits.member_calls),
            _pick(cap.get("tokens"), limits.member_tokens),
        )
        for subject, cap in ((o.member_caps or {}) if o else {}).items()
    }
    return ResolvedLimits(
        account_id=account_id,
        plan_code=plan_code,
        period=period,
        period_key=period.start.strftime("%Y%m%dT%H%M"),
        limits=limits,
        allowed_models=frozenset(models) if models is not None else None,
        thresholds=thresholds,
        member_caps=caps,
        calls_watch=_watch(limits.calls, limits.calls_policy, thresholds),
        tokens_watch=_watch(limits.tokens, limits.tokens_policy, thresholds),
    )


def _watch(limit: int | None, policy: str, thresholds: tuple[int, ...]) -> float:
    """The least count for which `QuotaManager._crossed` can find something: the first count
    at or past a threshold mark, or past a billed limit."""
    if limit is None or limit <= 0:
        return math.inf
    marks = [-(-limit * pct // 100) for pct in thresholds]
    if policy == "bill":
        marks.append(limit + 1)
    return min(marks, default=math.inf)


# --- the manager ----------------------------------------------------------------------------


class QuotaManager:
    """The seed's QuotaManager; one per process, built by BillingService from the config."""

    def __init__(
        self,
        engine: QuotaEngine,
        *,
        fail_mode: str = "fail_closed",
        thresholds: Iterable[int] = DEFAULT_THRESHOLDS,
        limits_ttl_seconds: float = 30.0,
        reservation_ttl_seconds: int = 300,
        usage_source: UsageSource | None = None,
        max_buffered: int = 10_000,
    ) -> None:
        self.engine = engine
        self.fail_mode = fail_mode
        self.thresholds = tuple(sorted(set(thresholds)))
        self.limits_ttl = limits_ttl_seconds
        self.reservation_ttl = reservation_ttl_seconds
        self._ttl = timedelta(seconds=reservation_ttl_seconds)
        self.usage_source: UsageSource = usage_source or ZeroUsageSource()
        self.max_buffered = max_buffered
        self._cache: dict[str, tuple[float, ResolvedLimits]] = {}
        self._violations: list[dict[str, Any]] = []
        self._notifications: list[dict[str, Any]] = []
        self._rebuilds: dict[tuple[str, str], asyncio.Task[bool]] = {}
        self._refreshing: set[str] = set()
        # Accounts whose counters disagree with the stored usage: usage that could not reach
        # them (store down), or counted for a transaction that did not commit. Their next
        # check (or status) rebuilds them from the database first.
        self._stale: set[str] = set()
        # Stale accounts whose rebuild found the database unreachable: not tried before then.
        self._stale_retry: dict[str, float] = {}
        self._unloads: set[asyncio.Task[None]] = set()  # held until done (no lost task)
        self._backend_errors = BACKEND_ERRORS.labels(fail_mode)

    # limits

    def invalidate(self, account_id: str | None = None) -> None:
        """Drops cached limits (of one account, or all); the next check reads them again."""
        if account_id is None:
            self._cache.clear()
        else:
            self._cache.pop(account_id, None)

    async def limits(self, session: SessionSource, ctx: Context, account_id: str) -> ResolvedLimits:
        cached = self._cache.get(account_id)
        if cached is not None and cached[1].period.end > cached[1].now(ctx):
            if cached[0] > monotonic():
                return cached[1]
            # Expired under load: one request re-reads, the others keep the old entry
            # meanwhile (invalidate() drops it, so a change is never served stale here).
            if account_id in self._refreshing:
                return cached[1]
        self._refreshing.add(account_id)
        try:
            async with session_of(session) as opened:
                return await self._resolve(opened, ctx, account_id)
        finally:
            self._refreshing.discard(account_id)

    async def _resolve(
        self, session: AsyncSession, ctx: Context, account_id: str
    ) -> ResolvedLimits:
        # Existence (account_for already confined non-operators to their own account).
        await accounts.get(session, ctx, account_id)
        clock = await TestClockRepository(session).clock_of_account(account_id)
        clock_time = clock.frozen_time if clock is not None else None
        now = clock_time or ctx.clock.now()
        override = await QuotaRepository(session).override(account_id)
        current = await current_plan(session, account_id, now, override)
        resolved = resolve_limits(
            account_id, current.plan_code, current.limits, current.period, override, self.thresholds
        )
        resolved = await _block_what_nothing_bills(session, resolved, current.price_id)
        if clock_time is not None:
            resolved = replace(resolved, clock_time=clock_time)
        self._cache[account_id] = (monotonic() + self.limits_ttl, resolved)
        return resolved

    # the hot path

    async def check(
        self,
        session: SessionSource,
        ctx: Context,
        *,
        account_id: str,
        model: str,
        estimated_tokens: int = 0,
        member_id: str | None = None,
    ) -> schemas.QuotaCheckResult:
        """Checks every limit and consumes/reserves atomically; raises on refusal."""
        now = ctx.clock.now()
        cached = self._cache.get(account_id)
        if (
            cached is not None
            and cached[0] > monotonic()
            and cached[1].period.end > now
            and cached[1].clock_time is None
        ):
            resolved = cached[1]  # the common case, without the call into limits()
        else:
            resolved = await self.limits(session, ctx, account_id)
            if resolved.clock_time is not None:
                ctx, now = resolved.clocked(ctx), resolved.clock_time
        actor = ctx.actor
        # A member's own key is capped as that member whatever the body names (else any id
        # would be a fresh cap); only a key bound to no member (the gateway's) names one.
        member = actor.member_id or member_id
        subject = member or actor.key_id
        if resolved.allowed_models is not None and model not in resolved.allowed_models:
            _count(resolved, _BLOCKED)
            self._violation(ctx, account_id, member, "model", 0, 0, "blocked", model, now)
            raise ModelNotAllowed(f"the {resolved.plan_code} plan does not include {model!r}")
        limits = resolved.for_member(subject) if resolved.member_caps else resolved.limits
        request = CheckRequest(
            account_id,
            resolved.period_key,
            resolved.period.end,
            now,
            new_id("rsv", now),
            estimated_tokens,
            subject,
            self.reservation_ttl,
        )
        try:
            if account_id in self._stale:
                await self._rebuild_stale(resolved, now)
            outcome = await self.engine.check(request, limits)
            if outcome.verdict is Verdict.NOT_LOADED:
                await self._rebuild(resolved, now)
                outcome = await self.engine.check(request, limits)
        except EngineUnavailable as exc:
            return self._unavailable(exc, request, resolved)
        if outcome.verdict is Verdict.REFUSED:
            raise self._refusal(ctx, resolved, limits, member, model, outcome, now, request)
        if outcome.verdict is Verdict.NOT_LOADED:  # pragma: no cover - flushed mid-check
            raise QuotaUnavailable("the counters were lost during the check; retry")
        _count(resolved, _ADMITTED)
        calls_used, tokens_used = outcome.calls_used, outcome.tokens_used
        # Below its watch mark a count crosses no threshold and no billed limit.
        if calls_used >= resolved.calls_watch:
            self._crossed(ctx, resolved, member, model, "calls", calls_used - 1, calls_used)
        if estimated_tokens and tokens_used >= resolved.tokens_watch:
            before = tokens_used - estimated_tokens
            self._crossed(ctx, resolved, member, model, "tokens", before, tokens_used)
        calls_limit, tokens_limit = limits.calls, limits.tokens
        return schemas.QuotaCheckResult.trusted(
            request.reservation_id,
            account_id,
            outcome.calls_overage,
            outcome.tokens_overage,
            estimated_tokens,
            None if calls_limit is None else max(calls_limit - calls_used, 0),
            None if tokens_limit is None else max(tokens_limit - tokens_used, 0),
            resolved.period.end,
            now + self._ttl,
        )

    def _backend_down(self, exc: EngineUnavailable) -> QuotaUnavailable:
        """The error for a counter store that cannot be reached, counted in the metrics."""
        self._backend_errors.inc()
        return QuotaUnavailable(str(exc), headers={"Retry-After": "1"})

    def _unavailable(
        self, exc: EngineUnavailable, request: CheckRequest, resolved: ResolvedLimits
    ) -> schemas.QuotaCheckResult:
        log.warning("quota.backend_unavailable", error=str(exc), fail_mode=self.fail_mode)
        if self.fail_mode != "fail_open":
            raise self._backend_down(exc) from exc
        self._backend_errors.inc()
        _count(resolved, _DEGRADED)
        return schemas.QuotaCheckResult(
            reservation_id=new_id(DEGRADED_PREFIX, request.now),
            account_id=request.account_id,
            overage=False,
            calls_overage=False,
            tokens_overage=False,
            reserved_tokens=0,
            remaining_calls=None,
            remaining_tokens=None,
            reset_at=resolved.period.end,
            expires_at=request.now,
            degraded=True,
        )

    def _refusal(
        self,
        ctx: Context,
        resolved: ResolvedLimits,
        limits: Limits,
        member: str | None,
        model: str,
        outcome: CheckOutcome,
        now: datetime,
        request: CheckRequest,
    ) -> QuotaExceeded | RateLimited | EstimateAboveRateLimit:
        name = outcome.limit_name or "unknown"
        value = outcome.limit_value or 0
        attempted = outcome.attempted or 0
        self._violation(
            ctx, resolved.account_id, member, name, value, attempted, "blocked", model, now
        )
        extra = {"limit": name, "limit_value": value, "attempted": attempted}
        if name in MONTHLY_LIMITS:
            _count(resolved, _BLOCKED)
            return QuotaExceeded(
                f"the {name} limit of {value} for this period is reached",
                extra={**extra, "reset_at": resolved.period.end.isoformat().replace("+00:00", "Z")},
            )
        _count(resolved, _RATE_LIMITED)
        if name == "tpm" and request.estimated_tokens > value:
            return EstimateAboveRateLimit(
                f"{request.estimated_tokens} estimated tokens are above the tokens-per-minute "
                f"limit of {value}: no minute admits them",
                extra=extra,
            )
        used = {"rpm": outcome.rpm_used, "tpm": outcome.tpm_used}.get(name, outcome.concurrent)
        return RateLimited.retry_after(
            f"the {name} limit of {value} is reached",
            limit=value,
            remaining=value - used,
            seconds=math.ceil(outcome.retry_after_ms / 1000),
            extra=extra,
        )

    # reservations and usage

    async def commit(
        self,
        session: AsyncSession,
        ctx: Context,
        reservation_id: str,
        actual_tokens: int,
        *,
        account_id: str,
    ) -> schemas.Settlement:
        resolved = await self.limits(session, ctx, account_id)
        return await self._settle(
            resolved.clocked(ctx), resolved, account_id, reservation_id, actual_tokens
        )

    async def _settle(
        self,
        ctx: Context,
        resolved: ResolvedLimits,
        account_id: str,
        reservation_id: str,
        actual_tokens: int,
        by_event: bool = False,
    ) -> schemas.Settlement:
        try:
            settled = await self.engine.commit(
                account_id,
                resolved.period_key,
                reservation_id,
                actual_tokens,
                ctx.clock.now(),
                by_event=by_event,
            )
        except EngineUnavailable as exc:
            raise self._backend_down(exc) from exc
        if not settled.found:
            raise ReservationNotFound(f"no live reservation {reservation_id!r}")
        if settled.difference > 0 and settled.tokens_used is not None:
            after = settled.tokens_used
            self._crossed(ctx, resolved, None, None, "tokens", after - settled.difference, after)
        return schemas.Settlement(
            reservation_id=reservation_id,
            reserved_tokens=settled.reserved_tokens,
            actual_tokens=actual_tokens,
            difference=settled.difference,
        )

    async def counting_period(
        self, session: AsyncSession, ctx: Context, account_id: str
    ) -> CountingPeriod:
        """The account's time and the current period of its counters (its limits are
        cached)."""
        resolved = await self.limits(session, ctx, account_id)
        return CountingPeriod(resolved.now(ctx), resolved.period.start, resolved.period.end)

    async def counted(
        self, session: AsyncSession, ctx: Context, account_id: str, usage: CountedUsage
    ) -> None:
        """Feeds a batch's newly stored API calls into the counters (the usage tracker's hook).

        A call with a live reservation settles it; one naming a reservation settled lately
        is that call after a commit (its tokens replace the committed ones), another call
        after a release or earlier usage (counted whole); one whose reservation expired (or
        is unknown) adds its tokens, since its call was counted by the check; any other
        adds a call and its tokens. A reserved call of another period (`usage.releases`) lets its
        reservation go, if still live, and adds nothing. The stored events stay the truth:
        when the counters cannot be reached, or the recording transaction does not commit
        after all, the account is rebuilt before its next check instead.
        """
        calls, tokens = usage.calls, usage.tokens
        settlements = []
        for settlement in usage.settlements:
            if settlement[0].startswith(_DEGRADED_ID):
                # Let through by fail_open: nothing was reserved or counted, so a call of its own.
                calls += 1
                tokens += settlement[1]
            else:
                settlements.append(settlement)
        # A fail_open id holds nothing to let go.
        releases = [r for r in usage.releases if not r.startswith(_DEGRADED_ID)]
        if not (calls or tokens or settlements or releases):
            return
        resolved = await self.limits(session, ctx, account_id)
        # The counters move now, before the commit: should it not come, they would count
        # usage the database never stored (and the client's retry counts it again).
        unless_committed(session, partial(self._uncommitted, account_id, resolved.period_key))
        try:
            if settlements or releases:
                clocked = resolved.clocked(ctx)
                # Together: the engine sends the settlements of one loop turn as one batch.
                settled = await asyncio.gather(
                    *(
                        self._settle(
                            clocked, resolved, account_id, reservation_id, settled_tokens, True
                        )
                        for reservation_id, settled_tokens in settlements
                    ),
                    *(self._let_go(clocked, resolved, account_id, rid) for rid in releases),
                    return_exceptions=True,
                )
                # Only a settlement raises ReservationNotFound (a release finds nothing quietly).
                for n, outcome in enumerate(settled):
                    if isinstance(outcome, ReservationNotFound):
                        tokens += settlements[n][1]
                    elif isinstance(outcome, BaseException):
                        raise outcome
            if calls or tokens:
                await self.record(
                    session,
                    ctx,
                    account_id=account_id,
                    calls=calls,
                    tokens=tokens,
                    member_id=usage.member_id,
                )
        except QuotaUnavailable:
            self._stale.add(account_id)
            log.warning("quota.counters_behind_usage", account_id=account_id)

    def _uncommitted(self, account_id: str, period_key: str) -> None:
        self._stale.add(account_id)
        log.warning("quota.counted_usage_not_committed", account_id=account_id)
        # The counters are shared (Redis): every process rebuilds them, not only this one.
        try:
            task = asyncio.get_running_loop().create_task(self._unload(account_id, period_key))
        except RuntimeError:  # no loop (a session closed outside one): the stale mark stays
            return
        self._unloads.add(task)
        task.add_done_callback(self._unloads.discard)

    async def _unload(self, account_id: str, period_key: str) -> None:
        try:
            await self.engine.unload(account_id, period_key)
        except EngineUnavailable:
            # Out of reach: this process still rebuilds (its stale mark); the others keep
            # the extra count until a rebuild (`quota rebuild`, or lost counters).
            log.warning("quota.unload_failed", account_id=account_id)

    async def _let_go(
        self, ctx: Context, resolved: ResolvedLimits, account_id: str, reservation_id: str
    ) -> None:
        """Releases a reservation whose call turned out to be another period's usage: one of
        an earlier period touches none of the current counters (its slot is freed); one of
        this period returns its call and tokens. Gone already: nothing to do."""
        try:
            await self.engine.release(
                account_id, resolved.period_key, reservation_id, ctx.clock.now()
            )
        except EngineUnavailable as exc:
            raise self._backend_down(exc) from exc

    async def release(
        self, session: AsyncSession, ctx: Context, reservation_id: str, *, account_id: str
    ) -> schemas.Settlement:
        resolved = await self.limits(session, ctx, account_id)
        try:
            settled = await self.engine.release(
                account_id, resolved.period_key, reservation_id, resolved.now(ctx)
            )
        except EngineUnavailable as exc:
            raise self._backend_down(exc) from exc
        if not settled.found:
            raise ReservationNotFound(f"no live reservation {reservation_id!r}")
        return schemas.Settlement(
            reservation_id=reservation_id,
            reserved_tokens=settled.reserved_tokens,
            actual_tokens=0,
            difference=0,
        )

    async def record(
        self,
        session: AsyncSession,
        ctx: Context,
        *,
        account_id: str,
        calls: int,
        tokens: int,
        member_id: str | None = None,
    ) -> None:
        """Counts usage that came without a reservation (the usage tracker calls it)."""
        resolved = await self.limits(session, ctx, account_id)
        ctx = resolved.clocked(ctx)
        now = ctx.clock.now()
        try:
            if not await self.engine.is_loaded(account_id, resolved.period_key):
                await self._rebuild(resolved, now)
            calls_used, tokens_used = await self.engine.record(
                account_id,
                resolved.period_key,
                resolved.period.end,
                now,
                calls=calls,
                tokens=tokens,
                # The subject a check of this key counts its cap on: its member, else the
                # key itself (so a capped key's unreserved usage counts for its cap).
                member=member_id or ctx.actor.key_id,
            )
        except EngineUnavailable as exc:
            # The stored usage stays the truth; these counters are short until a rebuild.
            raise self._backend_down(exc) from exc
        self._crossed(ctx, resolved, member_id, None, "calls", calls_used - calls, calls_used)
        self._crossed(ctx, resolved, member_id, None, "tokens", tokens_used - tokens, tokens_used)

    async def status(
        self, session: AsyncSession, ctx: Context, account_id: str
    ) -> schemas.QuotaStatus:
        resolved = await self.limits(session, ctx, account_id)
        now = resolved.now(ctx)
        try:
            if account_id in self._stale:
                await self._rebuild_stale(resolved, now)
            current = await self.engine.status(account_id, resolved.period_key, now)
            if not current.loaded:
                await self._rebuild(resolved, now)
                current = await self.engine.status(account_id, resolved.period_key, now)
        except EngineUnavailable as exc:
            raise self._backend_down(exc) from exc
        limits = resolved.limits
        reset = current.window_reset_ms / 1000
        return schemas.QuotaStatus(
            account_id=account_id,
            plan_type=resolved.plan_code,
            remaining_calls=_remaining(limits.calls, current.calls_used),
            remaining_tokens=_remaining(limits.tokens, current.tokens_used),
            reset_at=resolved.period.end,
            used_calls=current.calls_used,
            used_tokens=current.tokens_used,
            limit_calls=limits.calls,
            limit_tokens=limits.tokens,
            calls_policy=limits.calls_policy,
            tokens_policy=limits.tokens_policy,
            rate_limits=schemas.RateLimits(
                rpm=schemas.RateLimitState(
                    limit=limits.rpm,
                    used=current.rpm_used,
                    remaining=_remaining(limits.rpm, current.rpm_used),
                    reset_seconds=reset,
                ),
                tpm=schemas.RateLimitState(
                    limit=limits.tpm,
                    used=current.tpm_used,
                    remaining=_remaining(limits.tpm, current.tpm_used),
                    reset_seconds=reset,
                ),
                concurrency=schemas.ConcurrencyState(
                    limit=limits.concurrency, in_flight=current.concurrent
                ),
            ),
        )

    # rebuild

    async def rebuild(
        self, session: AsyncSession, ctx: Context, account_id: str, *, force: bool = False
    ) -> bool:
        """Loads the period's counters from the usage source; True when it wrote them."""
        resolved = await self.limits(session, ctx, account_id)
        try:
            return await self._rebuild(resolved, resolved.now(ctx), force=force)
        except EngineUnavailable as exc:
            raise self._backend_down(exc) from exc

    async def _rebuild_stale(self, resolved: ResolvedLimits, now: datetime) -> None:
        """Loads the counters of an account in `_stale` from the stored usage (forced).

        The mark goes first, so one made meanwhile (a transaction failing during the
        rebuild) stays for the next check; a failed rebuild keeps it. A database out of
        reach leaves the counters as they are for STALE_RETRY_SECONDS: the checks go on
        with them rather than fail or wait on it.
        """
        account_id = resolved.account_id
        retry_at = self._stale_retry.get(account_id)
        if retry_at is not None and retry_at > monotonic():
            return
        self._stale.discard(account_id)
        try:
            await self._rebuild(resolved, now, force=True)
        except UNREACHABLE as exc:
            self._stale.add(account_id)
            self._stale_retry[account_id] = monotonic() + STALE_RETRY_SECONDS
            log.warning("quota.rebuild_deferred", account_id=account_id, error=repr(exc)[:200])
            return
        except BaseException:
            self._stale.add(account_id)
            raise
        self._stale_retry.pop(account_id, None)

    async def _rebuild(self, resolved: ResolvedLimits, now: datetime, force: bool = False) -> bool:
        key = (resolved.account_id, resolved.period_key)
        running = self._rebuilds.get(key)
        if running is not None and not force:
            return await asyncio.shield(running)
        task = asyncio.ensure_future(self._load(resolved, now, force))
        self._rebuilds[key] = task
        try:
            return await asyncio.shield(task)
        finally:
            if self._rebuilds.get(key) is task:
                del self._rebuilds[key]

    async def _load(self, resolved: ResolvedLimits, now: datetime, force: bool) -> bool:
        totals = await self.usage_source.used(resolved.account_id, resolved.period)
        loaded = await self.engine.load(
            resolved.account_id,
            resolved.period_key,
            resolved.period.end,
            now,
            calls=totals.calls,
            tokens=totals.tokens,
            members=totals.members,
            force=force,
        )
        if loaded:
            log.info("quota.rebuilt", account_id=resolved.account_id, period=resolved.period_key)
        return loaded

    async def rebuild_missing(self, session: AsyncSession, ctx: Context) -> int:
        """At start-up: rebuilds every active account whose counters are missing."""
        return await self.rebuild_accounts(session, ctx, missing_only=True)

    async def active_accounts(self, session: AsyncSession) -> int:
        """How many accounts rebuild_accounts goes through."""
        return await QuotaRepository(session).active_accounts()

    async def rebuild_accounts(
        self,
        session: AsyncSession,
        ctx: Context,
        *,
        missing_only: bool = False,
        on_account: Callable[[str, bool], None] | None = None,
    ) -> int:
        """Loads the current period's counters of every active account from the stored usage
        (live reservations stay counted); with `missing_only`, only where they are missing,
        otherwise replacing what they hold. `on_account(account_id, written)` follows each
        account; returns how many were written."""
        repo = QuotaRepository(session)
        rebuilt, after = 0, None
        while True:
            ids = await repo.account_ids(after_id=after, limit=500)
            if not ids:
                return rebuilt
            for account_id in ids:
                resolved = await self.limits(session, ctx, account_id)
                written = False
                try:
                    if not (
                        missing_only
                        and await self.engine.is_loaded(account_id, resolved.period_key)
                    ):
                        written = await self._rebuild(
                            resolved, resolved.now(ctx), force=not missing_only
                        )
                        self._stale.discard(account_id)
                        self._stale_retry.pop(account_id, None)
                except EngineUnavailable as exc:
                    raise self._backend_down(exc) from exc
                rebuilt += written
                if on_account is not None:
                    on_account(account_id, written)
            after = ids[-1]

    # violations and notifications (buffered; `flush` writes them)

    def _violation(
        self,
        ctx: Context,
        account_id: str,
        member: str | None,
        limit_name: str,
        limit_value: int,
        attempted: int,
        action: str,
        model: str | None,
        now: datetime,
    ) -> None:
        if len(self._violations) >= self.max_buffered:
            DROPPED.inc()
            return
        self._violations.append(
            {
                "id": new_id("qv", now),
                "account_id": account_id,
                "member_id": member,
                "api_key_id": ctx.actor.key_id,
                "limit_name": limit_name,
                "limit_value": limit_value,
                "attempted": attempted,
                "action": action,
                "model": model,
                "at": now,
            }
        )

    def _crossed(
        self,
        ctx: Context,
        resolved: ResolvedLimits,
        member: str | None,
        model: str | None,
        name: str,
        before: int,
        after: int,
    ) -> None:
        """Queues what a step from `before` to `after` crossed: thresholds, a billed overage."""
        limits = resolved.limits
        limit = limits.calls if name == "calls" else limits.tokens
        if limit is None or limit <= 0 or after <= before:
            return
        for pct in resolved.thresholds:
            # Exactly one step crosses each mark: the counters move atomically.
            if before * 100 < limit * pct <= after * 100:
                self._notify(resolved, name, pct, limit, after)
        policy = limits.calls_policy if name == "calls" else limits.tokens_policy
        if policy == "bill" and before <= limit < after:
            now = ctx.clock.now()
            self._violation(
                ctx, resolved.account_id, member, name, limit, after, "billed", model, now
            )

    def _notify(self, resolved: ResolvedLimits, name: str, pct: int, limit: int, used: int) -> None:
        if len(self._notifications) >= self.max_buffered:
            DROPPED.inc()
            return
        period = resolved.period
        self._notifications.append(
            {
                "account_id": resolved.account_id,
                "limit": name,
                "threshold": pct,
                "limit_value": limit,
                "used": used,
                "period_start": period.start.isoformat(),
                "period_end": period.end.isoformat(),
            }
        )

    @property
    def pending(self) -> int:
        return len(self._violations) + len(self._notifications)

    async def flush(self, session: AsyncSession, ctx: Context) -> int:
        """Writes buffered violations (one INSERT) and enqueues notification jobs (deduped)."""
        violations, self._violations = self._violations, []
        notifications, self._notifications = self._notifications, []
        try:
            await QuotaRepository(session).add_violations(violations)
            # An account on a test clock gets its notification on the clock's time, run by
            # its advance (a worker never claims it).
            clocked = (
                await test_clocks.contexts_for(
                    session, ctx, sorted({str(p["account_id"]) for p in notifications})
                )
                if notifications
                else {}
            )
            for payload in notifications:
                dedupe = threshold_event_id(payload)
                account_ctx, clock_id = clocked[str(payload["account_id"])]
                await queue.enqueue(
                    session,
                    account_ctx,
                    NOTIFY_JOB,
                    payload,
                    dedupe_key=dedupe,
                    # The key must outlive its job (pruned after a week): an override set
                    # again or a counter rebuild reports the threshold again in this period.
                    dedupe_until=datetime.fromisoformat(str(payload["period_end"])),
                    max_attempts=DELIVERY_ATTEMPTS,
                    test_clock_id=clock_id,
                )
        except BaseException:
            # Keep them for the next flush (the caller's transaction rolls back).
            self._violations[:0] = violations
            self._notifications[:0] = notifications
            raise
        return len(violations) + len(notifications)

    # admin: overrides, violations, notification targets

    async def get_override(
        self, session: AsyncSession, ctx: Context, account_id: str
    ) -> schemas.QuotaOverride | None:
        await accounts.get(session, ctx, account_id)
        row = await QuotaRepository(session).override(account_id)
        return schemas.QuotaOverride.model_validate(row) if row is not None else None

    async def set_override(
        self, session: AsyncSession, ctx: Context, data: schemas.QuotaOverrideUpdate
    ) -> schemas.QuotaOverride:
        if not ctx.actor.is_operator:
            raise Forbidden("only the operator sets quota overrides")
        await accounts.get(session, ctx, data.account_id)
        # On the account's time (its test clock's, if on one): the audit entry dates the
        # change, and invoices read which override was in force in a period from it.
        ctx, _ = await test_clocks.context_for(session, ctx, data.account_id)
        if data.plan_code is not None:
            await plans.get(session, data.plan_code)  # PlanNotFound when unknown
        await _refuse_unbilled_overage(session, ctx, data)
        repo = QuotaRepository(session)
        row = await repo.override(data.account_id)
        before = schemas.QuotaOverride.model_validate(row) if row is not None else None
        now = ctx.clock.now()
        values = data.model_dump(exclude={"account_id"})
        if row is None:
            row = QuotaOverride(
                account_id=data.account_id, created_at=now, updated_at=now, **values
            )
            repo.add(row)
        else:
            for name, value in values.items():
                setattr(row, name, value)
            row.updated_at = now
        await session.flush()
        after = schemas.QuotaOverride.model_validate(row)
        await audit.record(
            session,
            ctx,
            action="quota_override.set",
            object_type="quota_override",
            object_id=data.account_id,
            account_id=data.account_id,
            before=before,
            after=after,
        )
        # This process re-reads at once (_report_passed drops what it read); others drop
        # theirs once the change is committed.
        await self._report_passed(session, ctx, data.account_id)
        limits_changed(session, data.account_id)
        return after

    async def _report_passed(self, session: AsyncSession, ctx: Context, account_id: str) -> None:
        """Queues the thresholds the period's usage is already past under the account's new
        limits: a limit lowered below the usage is crossed by no check. (One job per threshold
        and period: those reported under the old limits are not sent again.)"""
        resolved = await self._resolve(session, ctx, account_id)  # the uncommitted override
        self.invalidate(account_id)  # not cached before the commit
        try:
            current = await self.engine.status(account_id, resolved.period_key, resolved.now(ctx))
        except EngineUnavailable:
            return  # the counters are unknown now; checks report crossings as they come
        if not current.loaded:
            return
        for name, limit, used in (
            ("calls", resolved.limits.calls, current.calls_used),
            ("tokens", resolved.limits.tokens, current.tokens_used),
        ):
            if limit is None or limit <= 0:
                continue
            for pct in resolved.thresholds:
                if used * 100 >= limit * pct:
                    self._notify(resolved, name, pct, limit, used)

    async def violations(
        self,
        session: AsyncSession,
        ctx: Context,
        *,
        account_id: str | None,
        cursor: str | None,
        limit: int | None,
    ) -> tuple[list[QuotaViolation], str | None]:
        if not ctx.actor.is_operator:
            account_id = account_for(ctx, account_id)
        elif account_id is not None:
            await accounts.get(session, ctx, account_id)
        repo = QuotaRepository(session)
        return await id_page(
            cursor,
            limit,
            lambda after_id, n: repo.violations(account_id, after_id=after_id, limit=n),
        )

    async def get_target(
        self, session: AsyncSession, ctx: Context, account_id: str
    ) -> schemas.NotificationTarget | None:
        await accounts.get(session, ctx, account_id)
        _owner_or_operator(ctx)  # the URL may carry a token
        row = await QuotaRepository(session).target(account_id)
        return _render_target(row) if row is not None else None

    async def set_target(
        self,
        session: AsyncSession,
        ctx: Context,
        account_id: str,
        data: schemas.NotificationTargetUpdate,
    ) -> schemas.NotificationTargetSet:
        """Sets where notifications go; a new webhook secret is made and shown once (stored
        encrypted when encryption is on). A URL on a non-public host is refused (422)."""
        await accounts.get(session, ctx, account_id)
        _owner_or_operator(ctx)
        url = str(data.webhook_url) if data.webhook_url is not None else None
        if url is not None:
            outbound.check_url(url)  # WebhookUrlNotAllowed
        repo = QuotaRepository(session)
        row = await repo.target(account_id)
        before = _render_target(row) if row is not None else None
        now = ctx.clock.now()
        secret = "whsec_" + new_token(32) if url is not None else None
        if row is None:
            row = QuotaNotificationTarget(account_id=account_id, created_at=now)
            repo.add(row)
        row.webhook_url, row.webhook_secret, row.email, row.updated_at = (
            url,
            outbound.seal(secret) if secret is not None else None,
            data.email,
            now,
        )
        await session.flush()
        after = _render_target(row)
        await audit.record(
            session,
            ctx,
            action="quota_notification_target.set",
            object_type="quota_notification_target",
            object_id=account_id,
            account_id=account_id,
            before=before,
            after=after,
        )
        return schemas.NotificationTargetSet(**after.model_dump(), webhook_secret=secret)


def _owner_or_operator(ctx: Context) -> None:
    if not ctx.actor.is_operator and ctx.actor.role != Role.OWNER:
        raise Forbidden("only the account owner or the operator reads or sets notification targets")


def _render_target(row: QuotaNotificationTarget) -> schemas.NotificationTarget:
    return schemas.NotificationTarget(
        account_id=row.account_id,
        webhook_url=row.webhook_url,
        email=row.email,
        has_webhook_secret=row.webhook_secret is not None,
        updated_at=row.updated_at,
    )


def _remaining(limit: int | None, used: int) -> int | None:
    return None if limit is None else max(limit - used, 0)


def account_for(ctx: Context, requested: str | None) -> str:
    """The account a quota call is about: the key's own; operator keys must name one."""
    if ctx.actor.is_operator:
        if requested is None:
            raise AccountRequired("operator keys must give the account_id")
        return requested
    own = ctx.actor.account_id
    if own is None or (requested is not None and requested != own):
        # Another account's id is reported as unknown, like every other cross-tenant read.
        raise AccountNotFound(f"no account {requested!r}")
    return own


# --- notifications --------------------------------------------------------------------------


class QuotaNotifications:
    """Delivers threshold notifications (the `quota.notify` job) through `notifications`."""

    async def deliver(
        self,
        session: AsyncSession,
        ctx: Context,
        payload: dict[str, Any],
        *,
        test_clock_id: str | None,
    ) -> None:
        """Hands the event to one job per channel (notifications: each retried on its own)."""
        event = {
            "id": threshold_event_id(payload),
            "type": "quota.threshold_reached",
            "created_at": ctx.clock.now().isoformat(),
            "data": payload,
        }
        subject = f"{payload['threshold']}% of your monthly {payload['limit']} used"
        await outbound.deliver(
            session,
            ctx,
            {"account_id": payload["account_id"], "subject": subject, **event},
            test_clock_id=test_clock_id,
        )


notifications = QuotaNotifications()
