"""UTCDateTime and PreciseDecimal on real models, written and read back on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from alembic.autogenerate import render_python_code
from alembic.operations import ops
from sqlalchemy import Column, select
from sqlalchemy.exc import StatementError

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.kit.ids import new_id
from aihub_billing.models import Account, Plan, PlanPrice
from aihub_billing.models.types import PreciseDecimal
from aihub_billing.service import BillingService

IST = timezone(timedelta(hours=5, minutes=30))
PST = timezone(timedelta(hours=-8))
LINT = timezone(timedelta(hours=14))
BIGINT_MAX = 9_223_372_036_854_775_807


def make_plan(clock: FrozenClock, code: str = "types", created_at: datetime | None = None) -> Plan:
    return Plan(
        id=new_id("plan", clock.now()),
        code=code,
        version=1,
        name=code.title(),
        created_at=created_at if created_at is not None else clock.now(),
    )


def make_price(clock: FrozenClock, plan: Plan, **values: Any) -> PlanPrice:
    fields: dict[str, Any] = {
        "currency": "USD",
        "interval_unit": "month",
        "interval_count": 1,
        "amount_minor": 0,
    }
    fields.update(values)
    return PlanPrice(id=new_id("price", clock.now()), plan_id=plan.id, **fields)


async def save_price(billing: BillingService, clock: FrozenClock, **values: Any) -> str:
    """Commits a plan and one price with `values`; returns the price id."""
    async with billing.transaction() as session:
        plan = make_plan(clock)
        session.add(plan)
        await session.flush()
        price = make_price(clock, plan, **values)
        session.add(price)
    return price.id


async def load_price(billing: BillingService, price_id: str) -> PlanPrice:
    async with billing.db.sessions() as session:
        price = await session.get(PlanPrice, price_id)
    assert price is not None
    return price


class TestUTCDateTime:
    async def test_offset_datetime_comes_back_as_the_same_instant_in_utc(
        self, billing: BillingService, clock: FrozenClock
    ) -> None:
        written = datetime(2026, 1, 31, 17, 30, 0, 123456, tzinfo=IST)
        async with billing.transaction() as session:
            plan = make_plan(clock, created_at=written)
            session.add(plan)

        async with billing.db.sessions() as session:
            read = await session.scalar(select(Plan.created_at).where(Plan.id == plan.id))

        assert read == datetime(2026, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)
        assert read is not None and read.tzinfo is UTC

    async def test_naive_datetime_is_refused_on_write(
        self, billing: BillingService, clock: FrozenClock
    ) -> None:
        with pytest.raises(StatementError) as excinfo:
            async with billing.transaction() as session:
                session.add(make_plan(clock, created_at=datetime(2026, 1, 31, 12, 0)))
                await session.flush()

        assert isinstance(excinfo.value.orig, ValueError)
        assert "naive" in str(excinfo.value.orig)
        async with billing.db.sessions() as session:
            assert (await session.scalars(select(Plan.id))).all() == []

    async def test_ordering_is_chronological_across_offsets(
        self, billing: BillingService, clock: FrozenClock
    ) -> None:
        # Local wall-clock order is the reverse of the real order for most of these.
        instants = {
            "c": datetime(2026, 1, 31, 5, 0, tzinfo=PST),  # 13:00 UTC
            "d": datetime(2026, 2, 1, 1, 0, tzinfo=LINT),  # 11:00 UTC, the day before
            "a": datetime(2026, 1, 31, 10, 0, tzinfo=UTC),  # 10:00 UTC
            "b": datetime(2026, 1, 31, 15, 0, tzinfo=IST),  # 09:30 UTC
        }
        async with billing.transaction() as session:
            for code, at in instants.items():
                session.add(make_plan(clock, code=code, created_at=at))

        async with billing.db.sessions() as session:
            ordered = (await session.scalars(select(Plan.code).order_by(Plan.created_at))).all()
            after = (
                await session.scalars(
                    select(Plan.code)
                    .where(Plan.created_at > datetime(2026, 1, 31, 16, 0, tzinfo=IST))
                    .order_by(Plan.created_at.desc())
                )
            ).all()

        assert ordered == ["b", "a", "d", "c"]
        # 16:00 +05:30 is 10:30 UTC: the bound value is compared as an instant too.
        assert after == ["c", "d"]


class TestPreciseDecimal:
    @pytest.mark.parametrize(
        ("written", "canonical"),
        [
            ("0.0000015", "0.0000015"),
            ("12345678901234567890.123456789012345678", "12345678901234567890.123456789012345678"),
            ("0", "0"),
            ("100", "100"),
            ("100.000", "100"),
            ("1.500000", "1.5"),
        ],
    )
    async def test_round_trips_exactly_in_canonical_form(
        self, billing: BillingService, clock: FrozenClock, written: str, canonical: str
    ) -> None:
        price_id = await save_price(billing, clock, overage_per_1m_tokens=Decimal(written))

        read = (await load_price(billing, price_id)).overage_per_1m_tokens

        assert isinstance(read, Decimal)
        assert read == Decimal(written)
        assert str(read) == canonical

    async def test_narrower_column_round_trips_tax_rate(
        self, billing: BillingService, clock: FrozenClock
    ) -> None:
        async with billing.transaction() as session:
            account = Account(
                id=new_id("acct", clock.now()),
                name="Tax",
                currency="EUR",
                tax_rate=Decimal("0.082500"),
                created_at=clock.now(),
                updated_at=clock.now(),
            )
            session.add(account)

        async with billing.db.sessions() as session:
            read = await session.scalar(select(Account.tax_rate).where(Account.id == account.id))

        assert read == Decimal("0.0825")
        assert str(read) == "0.0825"

    async def test_float_is_refused_on_write(
        self, billing: BillingService, clock: FrozenClock
    ) -> None:
        with pytest.raises(StatementError) as excinfo:
            await save_price(billing, clock, overage_per_1m_tokens=0.1)

        assert isinstance(excinfo.value.orig, TypeError)
        async with billing.db.sessions() as session:
            assert (await session.scalars(select(PlanPrice.id))).all() == []

    @pytest.mark.parametrize(("precision", "scale"), [(38, 18), (20, 6), (9, 6)])
    def test_autogenerate_renders_precision_and_scale(self, precision: int, scale: int) -> None:
        # A migration autogenerated for a new column must create the column the model declares.
        column = Column("x", PreciseDecimal(precision, scale))
        rendered = render_python_code(ops.UpgradeOps([ops.AddColumnOp("t", column)]))
        assert f"PreciseDecimal(precision={precision}, scale={scale})" in rendered


async def test_bigint_money_columns_hold_the_largest_bigint(
    billing: BillingService, clock: FrozenClock
) -> None:
    price_id = await save_price(billing, clock, amount_minor=BIGINT_MAX, setup_fee_minor=BIGINT_MAX)

    price = await load_price(billing, price_id)

    assert (price.amount_minor, price.setup_fee_minor) == (BIGINT_MAX, BIGINT_MAX)


@pytest.mark.parametrize(
    "value", [Decimal("0.0000000000000000001"), Decimal("1E+20"), Decimal("NaN")]
)
async def test_decimals_numeric_would_change_are_refused_on_every_backend(
    billing: BillingService, clock: FrozenClock, value: Decimal
) -> None:
    with pytest.raises(StatementError):
        await save_price(billing, clock, overage_per_1m_tokens=value)
