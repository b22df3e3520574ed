"""PricingManager's catalog half for now: plans, their versions, limits and prices."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.audit.service import audit
from aihub_billing.errors import Forbidden
from aihub_billing.kit.context import Context
from aihub_billing.kit.ids import new_id
from aihub_billing.models import Plan, PlanPrice
from aihub_billing.plans import schemas
from aihub_billing.plans.errors import PlanExists, PlanNotFound
from aihub_billing.plans.repository import PlanRepository

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
