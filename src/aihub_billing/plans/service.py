"""PricingManager's catalog half for now: plans, their versions, limits and prices."""

from __future__ import annotations

from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.accounts.changes import EVERY_ACCOUNT, limits_changed
from aihub_billing.audit.service import audit
from aihub_billing.errors import Forbidden, ValidationFailed
from aihub_billing.kit.context import Context
from aihub_billing.kit.ids import new_id
from aihub_billing.models import Plan, PlanPrice
from aihub_billing.plans import schemas
from aihub_billing.plans.errors import PlanArchived, PlanExists, PlanNotFound, PriceNotFound
from aihub_billing.plans.repository import PlanRepository

_COMPUTED = {"amount", "billing_cycle"}
BillingCycle = Literal["monthly", "yearly", "custom"]
# monthly = month x 1, yearly = month x 12; custom = any other (unit, count).
CYCLES: dict[str, tuple[str, int]] = {"monthly": ("month", 1), "yearly": ("month", 12)}


def cycle_of(unit: str, count: int) -> BillingCycle:
    if (unit, count) == CYCLES["monthly"]:
        return "monthly"
    if (unit, count) == CYCLES["yearly"]:
        return "yearly"
    return "custom"


def overage_price_missing(problem: str) -> ValidationFailed:
    """The 422 a plan's own validation gives (same code, error type and shape), for limits and
    prices that only conflict once combined with stored ones."""
    error = {"loc": ["body"], "msg": problem, "type": schemas.OVERAGE_PRICE_MISSING}
    return ValidationFailed(f"body: {problem}", extra={"errors": [error]})


# SPEC §3: the plans every installation starts with.
DEFAULT_PLANS: tuple[schemas.PlanCreate, ...] = (
    schemas.PlanCreate(
        code="free",
        name="Free",
        limits=schemas.PlanLimits(included_api_calls=100, included_tokens=10_000),
        prices=[schemas.PlanPriceCreate(currency="USD", amount_minor=0)],
    ),
    schemas.PlanCreate(
        code="pro",
        name="Pro",
        limits=schemas.PlanLimits(included_api_calls=10_000, included_tokens=1_000_000),
        prices=[schemas.PlanPriceCreate(currency="USD", amount_minor=2999)],
    ),
    schemas.PlanCreate(
        code="enterprise",
        name="Enterprise",
        limits=schemas.PlanLimits(included_api_calls=1_000_000, included_tokens=100_000_000),
        prices=[schemas.PlanPriceCreate(currency="USD", amount_minor=9999)],
    ),
)


class PlanService:
    async def catalog(self, session: AsyncSession) -> list[schemas.Plan]:
        repo = PlanRepository(session)
        plans = await repo.latest()
        prices = await repo.prices_for([p.id for p in plans])
        return [_render(plan, prices.get(plan.id, [])) for plan in plans]

    async def get(self, session: AsyncSession, code: str) -> schemas.Plan:
        repo = PlanRepository(session)
        plan = await repo.latest_version(code)
        if plan is None:
            raise PlanNotFound(f"no plan {code!r}")
        prices = await repo.prices_for([plan.id])
        return _render(plan, prices.get(plan.id, []))

    async def create(
        self, session: AsyncSession, ctx: Context, data: schemas.PlanCreate
    ) -> schemas.Plan:
        if not ctx.actor.is_operator:
            raise Forbidden("only the operator manages plans")
        repo = PlanRepository(session)
        if await repo.latest_version(data.code) is not None:
            raise PlanExists(f"plan {data.code!r} exists")
        now = ctx.clock.now()
        plan = Plan(
            id=new_id("plan", now),
            code=data.code,
            version=1,
            name=data.name,
            description=data.description,
            status="active",
            trial_days=data.trial_days,
            created_at=now,
            **data.limits.model_dump(),
        )
        repo.add(plan)
        # Prices reference the plan row: it must reach the database first.
        await session.flush()
        prices = []
        for price_in in data.prices:
            price = PlanPrice(id=new_id("price", now), plan_id=plan.id, **price_in.model_dump())
            repo.add(price)
            prices.append(price)
        await session.flush()
        rendered = _render(plan, prices)
        await audit.record(
            session,
            ctx,
            action="plan.created",
            object_type="plan",
            object_id=plan.id,
            account_id=None,
            after=rendered,
        )
        return rendered

    async def update(
        self, session: AsyncSession, ctx: Context, code: str, data: schemas.PlanUpdate
    ) -> schemas.Plan:
        """Writes version N+1; running subscriptions keep their version until they renew."""
        if not ctx.actor.is_operator:
            raise Forbidden("only the operator manages plans")
        repo = PlanRepository(session)
        current = await repo.lock_latest(code)
        if current is None:
            raise PlanNotFound(f"no plan {code!r}")
        old_prices = (await repo.prices_for([current.id])).get(current.id, [])
        before = _render(current, old_prices)
        now = ctx.clock.now()
        fields = data.model_dump(exclude_unset=True, exclude={"limits", "prices"})
        # Limits given are merged over the current ones (omitted fields kept, an explicit null
        # lifts that limit): replacing them all would make omitted allowances unlimited.
        limits = before.limits
        if data.limits is not None:
            limits = schemas.PlanLimits.model_validate(
                {**limits.model_dump(), **data.limits.model_dump(exclude_unset=True)}
            )
        price_inputs = (
            data.prices
            if data.prices is not None
            else [
                schemas.PlanPriceCreate.model_validate(p.model_dump(exclude=_COMPUTED))
                for p in before.prices
            ]
        )
        # Only the merged version shows whether a `bill` limit lost its overage price: a
        # PATCH may change the limits alone or the prices alone.
        problem = schemas.missing_overage_price(limits, price_inputs)
        if problem is not None:
            raise overage_price_missing(problem)
        plan = Plan(
            id=new_id("plan", now),
            code=current.code,
            version=current.version + 1,
            name=fields.get("name") or current.name,
            description=fields.get("description", current.description),
            status=current.status,
            trial_days=(data.trial_days if data.trial_days is not None else current.trial_days),
            created_at=now,
            **limits.model_dump(),
        )
        repo.add(plan)
        await session.flush()
        prices = []
        for price_in in price_inputs:
            price = PlanPrice(id=new_id("price", now), plan_id=plan.id, **price_in.model_dump())
            repo.add(price)
            prices.append(price)
        await session.flush()
        rendered = _render(plan, prices)
        await audit.record(
            session,
            ctx,
            action="plan.updated",
            object_type="plan",
            object_id=plan.id,
            account_id=None,
            before=before,
            after=rendered,
        )
        # Accounts without a subscription follow the latest `free` version, and an override's
        # plan_code the latest version of its plan: their cached limits go, everywhere.
        limits_changed(session, EVERY_ACCOUNT)
        return rendered

    async def archive(self, session: AsyncSession, ctx: Context, code: str) -> schemas.Plan:
        """No new subscriptions to the plan; running ones continue. Archiving twice is a no-op."""
        if not ctx.actor.is_operator:
            raise Forbidden("only the operator manages plans")
        repo = PlanRepository(session)
        plan = await repo.lock_latest(code)
        if plan is None:
            raise PlanNotFound(f"no plan {code!r}")
        prices = (await repo.prices_for([plan.id])).get(plan.id, [])
        if plan.status == "archived":
            return _render(plan, prices)
        before = _render(plan, prices)
        plan.status = "archived"
        await session.flush()
        rendered = _render(plan, prices)
        await audit.record(
            session,
            ctx,
            action="plan.archived",
            object_type="plan",
            object_id=plan.id,
            account_id=None,
            before=before,
            after=rendered,
        )
        return rendered

    async def version(self, session: AsyncSession, plan_id: str) -> Plan:
        plan = await PlanRepository(session).get(plan_id)
        if plan is None:
            raise PlanNotFound(f"no plan version {plan_id!r}")
        return plan

    async def preload(self, session: AsyncSession, plan_ids: list[str]) -> list[Plan | PlanPrice]:
        """Loads plan versions and their prices in two queries (for batch work); the caller
        holds the returned objects so that later lookups by id need no query."""
        repo = PlanRepository(session)
        loaded: list[Plan | PlanPrice] = list(await repo.versions(plan_ids))
        for prices in (await repo.prices_for(plan_ids)).values():
            loaded += prices
        return loaded

    async def price(self, session: AsyncSession, price_id: str) -> PlanPrice:
        price = await PlanRepository(session).price(price_id)
        if price is None:
            raise PriceNotFound(f"no price {price_id!r}")
        return price

    async def latest(self, session: AsyncSession, code: str) -> Plan:
        plan = await PlanRepository(session).latest_version(code)
        if plan is None:
            raise PlanNotFound(f"no plan {code!r}")
        return plan

    async def price_for(
        self, session: AsyncSession, plan: Plan, currency: str, unit: str, count: int
    ) -> PlanPrice | None:
        prices = (await PlanRepository(session).prices_for([plan.id])).get(plan.id, [])
        for price in prices:
            if (price.currency, price.interval_unit, price.interval_count) == (
                currency,
                unit,
                count,
            ):
                return price
        return None

    async def resolve(
        self,
        session: AsyncSession,
        code: str,
        currency: str,
        cycle: BillingCycle,
        interval: tuple[str, int] | None = None,
    ) -> tuple[Plan, PlanPrice]:
        """The latest version of an active plan and its price for the currency and cycle.

        `custom` takes `interval` (unit, count), or the plan's only custom price.
        """
        plan = await self.latest(session, code)
        if plan.status != "active":
            raise PlanArchived(f"plan {code!r} is archived")
        prices = (await PlanRepository(session).prices_for([plan.id])).get(plan.id, [])
        wanted = CYCLES.get(cycle) or interval
        matches = [
            p
            for p in prices
            if p.currency == currency
            and (
                (p.interval_unit, p.interval_count) == wanted
                if wanted is not None
                else (p.interval_unit, p.interval_count) not in CYCLES.values()
            )
        ]
        if len(matches) != 1:
            raise PriceNotFound(
                f"plan {code!r} has no single {cycle} price in {currency}"
                + (f" every {wanted[1]} {wanted[0]}(s)" if wanted else "")
            )
        return plan, matches[0]

    async def seed_defaults(self, session: AsyncSession, ctx: Context) -> list[str]:
        """Creates the SPEC §3 plans that don't exist yet; returns the codes it created."""
        repo = PlanRepository(session)
        created = []
        for plan in DEFAULT_PLANS:
            if await repo.latest_version(plan.code) is None:
                await self.create(session, ctx, plan)
                created.append(plan.code)
        return created


def _render(plan: Plan, prices: list[PlanPrice]) -> schemas.Plan:
    return schemas.Plan(
        id=plan.id,
        code=plan.code,
        version=plan.version,
        name=plan.name,
        description=plan.description,
        status=plan.status,
        trial_days=plan.trial_days,
        limits=schemas.PlanLimits.model_validate(plan),
        prices=[schemas.PlanPrice.model_validate(p) for p in sorted(prices, key=_price_order)],
        created_at=plan.created_at,
    )


def _price_order(price: PlanPrice) -> tuple[str, str, int]:
    return (price.currency, price.interval_unit, price.interval_count)


plans = PlanService()
