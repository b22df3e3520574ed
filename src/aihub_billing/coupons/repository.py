"""Queries on coupons, including the atomic redemption counter."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import exists, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.kit.ids import new_id
from aihub_billing.models import Coupon, CouponRedemption


class CouponRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, coupon_id: str) -> Coupon | None:
        return await self.session.get(Coupon, coupon_id)

    async def by_code(self, code: str) -> Coupon | None:
        result = await self.session.execute(select(Coupon).where(Coupon.code == code))
        return result.scalar_one_or_none()

    async def page(self, *, limit: int, after_id: str | None) -> list[Coupon]:
        query = select(Coupon).order_by(Coupon.id).limit(limit)
        if after_id is not None:
            query = query.where(Coupon.id > after_id)
        return list((await self.session.execute(query)).scalars())

    async def redeemed_by(self, coupon_id: str, account_id: str) -> bool:
        """Whether the account redeemed the coupon already."""
        query = select(
            exists().where(
                CouponRedemption.coupon_id == coupon_id, CouponRedemption.account_id == account_id
            )
        )
        return bool((await self.session.execute(query)).scalar())

    async def record_redemption(self, coupon_id: str, account_id: str, now: datetime) -> bool:
        """Records the account's redemption; False when it had one already (the unique key
        decides, so two racing redemptions by one account cannot both count)."""
        dialect = self.session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        result = await self.session.execute(
            insert(CouponRedemption)
            .values(
                id=new_id("cred", now), coupon_id=coupon_id, account_id=account_id, created_at=now
            )
            .on_conflict_do_nothing(index_elements=["coupon_id", "account_id"])
        )
        return bool(getattr(result, "rowcount", 0))

    async def take_redemption(self, coupon_id: str, now: datetime) -> bool:
        """Counts one redemption unless the coupon is used up, expired or archived.

        One conditional UPDATE: PostgreSQL row-locks it, SQLite has a single writer, so
        concurrent redemptions never push the count past max_redemptions.
        """
        result = await self.session.execute(
            update(Coupon)
            .where(
                Coupon.id == coupon_id,
                Coupon.status == "active",
                or_(Coupon.expires_at.is_(None), Coupon.expires_at > now),
                or_(
                    Coupon.max_redemptions.is_(None),
                    Coupon.times_redeemed < Coupon.max_redemptions,
                ),
            )
            .values(times_redeemed=Coupon.times_redeemed + 1)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))

    def add(self, coupon: Coupon) -> None:
        self.session.add(coupon)
