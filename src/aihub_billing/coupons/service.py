"""Coupons: created and archived by the operator, redeemed by subscriptions."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.audit.service import audit
from aihub_billing.coupons import schemas
from aihub_billing.coupons.errors import CouponExists, CouponNotFound, CouponNotRedeemable
from aihub_billing.coupons.repository import CouponRepository
from aihub_billing.errors import Forbidden
from aihub_billing.kit.context import Context
from aihub_billing.kit.ids import new_id
from aihub_billing.kit.pagination import id_page
from aihub_billing.models import Coupon
from aihub_billing.plans.service import plans
from aihub_billing.pricing.discounts import CouponTerms


def terms(coupon: Coupon) -> CouponTerms:
    """The pure calculator's view of a coupon."""
    return CouponTerms(percent_off=coupon.percent_off, amounts_off=dict(coupon.amounts_off or {}))


def applies_to_plan(coupon: Coupon, plan_code: str) -> bool:
    """Whether the coupon discounts this plan's prices (no plan list: every plan)."""
    return coupon.plan_codes is None or plan_code in coupon.plan_codes


def initial_cycles(coupon: Coupon) -> int | None:
    """Fee lines the coupon discounts once redeemed; None = forever."""
    if coupon.duration == "once":
        return 1
    if coupon.duration == "repeating":
        return coupon.duration_cycles
    return None


class CouponService:
    async def create(
        self, session: AsyncSession, ctx: Context, data: schemas.CouponCreate
    ) -> Coupon:
        if not ctx.actor.is_operator:
            raise Forbidden("only the operator manages coupons")
        repo = CouponRepository(session)
        if await repo.by_code(data.code) is not None:
            raise CouponExists(f"coupon {data.code!r} exists")
        for plan_code in data.plan_codes or ():
            await plans.get(session, plan_code)  # PlanNotFound: a typo would never apply
        now = ctx.clock.now()
        coupon = Coupon(
            id=new_id("coupon", now),
            times_redeemed=0,
            status="active",
            created_at=now,
            **data.model_dump(),
        )
        repo.add(coupon)
        await session.flush()
        await audit.record(
            session,
            ctx,
            action="coupon.created",
            object_type="coupon",
            object_id=coupon.id,
            account_id=None,
            after=schemas.Coupon.model_validate(coupon),
        )
        return coupon

    async def get(self, session: AsyncSession, code: str) -> Coupon:
        coupon = await CouponRepository(session).by_code(code)
        if coupon is None:
            raise CouponNotFound(f"no coupon {code!r}")
        return coupon

    async def by_id(self, session: AsyncSession, coupon_id: str) -> Coupon:
        coupon = await CouponRepository(session).get(coupon_id)
        if coupon is None:
            raise CouponNotFound(f"no coupon {coupon_id!r}")
        return coupon

    async def page(
        self, session: AsyncSession, *, cursor: str | None, limit: int | None
    ) -> tuple[list[Coupon], str | None]:
        repo = CouponRepository(session)
        return await id_page(
            cursor, limit, lambda after_id, n: repo.page(limit=n, after_id=after_id)
        )

    async def archive(self, session: AsyncSession, ctx: Context, code: str) -> Coupon:
        """No new redemptions; subscriptions that hold it keep their discount."""
        if not ctx.actor.is_operator:
            raise Forbidden("only the operator manages coupons")
        coupon = await self.get(session, code)
        if coupon.status == "archived":
            return coupon
        before = schemas.Coupon.model_validate(coupon)
        coupon.status = "archived"
        await session.flush()
        await audit.record(
            session,
            ctx,
            action="coupon.archived",
            object_type="coupon",
            object_id=coupon.id,
            account_id=None,
            before=before,
            after=schemas.Coupon.model_validate(coupon),
        )
        return coupon

    async def check(
        self,
        session: AsyncSession,
        ctx: Context,
        code: str,
        *,
        plan_code: str,
        currency: str,
        account_id: str | None = None,
    ) -> Coupon:
        """The coupon if it may be redeemed for this plan and currency now (counts nothing).

        An account redeems a coupon once: applying it again (to the subscription holding it,
        to a new one, or after another coupon) would discount more fee lines than its
        duration gives. The account is `account_id`, else the caller's own."""
        repo = CouponRepository(session)
        coupon = await repo.by_code(code)
        if coupon is None:
            raise CouponNotFound(f"no coupon {code!r}")
        now = ctx.clock.now()
        if coupon.status != "active":
            raise CouponNotRedeemable(f"coupon {code!r} is archived")
        if coupon.expires_at is not None and coupon.expires_at <= now:
            raise CouponNotRedeemable(f"coupon {code!r} has expired")
        if not applies_to_plan(coupon, plan_code):
            raise CouponNotRedeemable(f"coupon {code!r} does not apply to plan {plan_code!r}")
        if not terms(coupon).applies_to(currency):
            raise CouponNotRedeemable(f"coupon {code!r} has no amount in {currency}")
        if coupon.max_redemptions is not None and coupon.times_redeemed >= coupon.max_redemptions:
            raise CouponNotRedeemable(f"coupon {code!r} has been fully redeemed")
        account = account_id or ctx.actor.account_id
        if account is not None and await repo.redeemed_by(coupon.id, account):
            raise CouponNotRedeemable(f"coupon {code!r} has already been redeemed by this account")
        return coupon

    async def redeem(
        self,
        session: AsyncSession,
        ctx: Context,
        code: str,
        *,
        plan_code: str,
        currency: str,
        account_id: str | None = None,
    ) -> Coupon:
        """Checks the coupon and counts one redemption atomically."""
        coupon = await self.check(
            session, ctx, code, plan_code=plan_code, currency=currency, account_id=account_id
        )
        repo = CouponRepository(session)
        now = ctx.clock.now()
        if not await repo.take_redemption(coupon.id, now):
            raise CouponNotRedeemable(f"coupon {code!r} has been fully redeemed")
        account = account_id or ctx.actor.account_id
        if account is not None and not await repo.record_redemption(coupon.id, account, now):
            raise CouponNotRedeemable(f"coupon {code!r} has already been redeemed by this account")
        await session.refresh(coupon)
        return coupon


coupons = CouponService()
