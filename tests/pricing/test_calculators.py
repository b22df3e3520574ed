"""Table-driven exact results for every price model, tier boundaries and zero usage included."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aihub_billing.pricing.calculators import (
    Flat,
    Graduated,
    Package,
    PerUnit,
    PriceModel,
    Tier,
    Volume,
    calculate,
)

# 0-1000 at 0.002, 1001-5000 at 0.0015 (+1.00 flat when reached), above at 0.001.
TIERS = (
    Tier(D(1000), D("0.002")),
    Tier(D(5000), D("0.0015"), flat_fee=D("1.00")),
    Tier(None, D("0.001")),
)
GRADUATED = Graduated(TIERS)
VOLUME = Volume(TIERS)


@pytest.mark.parametrize(
    ("model", "quantity", "free", "amount"),
    [
        # flat: charged whatever the usage
        (Flat(D("29.99")), D(0), D(0), D("29.99")),
        (Flat(D("29.99")), D(123), D(0), D("29.99")),
        # per unit: 0.0000015 USD per token, unrounded
        (PerUnit(D("0.0000015")), D(0), D(0), D(0)),
        (PerUnit(D("0.0000015")), D(1), D(0), D("0.0000015")),
        (PerUnit(D("0.0000015")), D(1_000_000), D(0), D("1.5000000")),
        (PerUnit(D("0.0000015")), D(1_000_333), D(1000), D("1.4989995")),
        (PerUnit(D("0.5")), D(10), D(20), D(0)),
        # graduated: each unit in its own tier
        (GRADUATED, D(0), D(0), D(0)),
        (GRADUATED, D(1), D(0), D("0.002")),
        (GRADUATED, D(1000), D(0), D("2.000")),
        (GRADUATED, D(1001), D(0), D("3.0015")),  # 2.000 + 1 x 0.0015 + 1.00 flat
        (GRADUATED, D(5000), D(0), D("9.0000")),  # 2.000 + 4000 x 0.0015 + 1.00
        (GRADUATED, D(5001), D(0), D("9.001")),
        (GRADUATED, D(12000), D(0), D("16.000")),
        (GRADUATED, D(1500), D(500), D("2.000")),  # free units come off the top
        (GRADUATED, D("1000.5"), D(0), D("3.00075")),  # fractional units (GB) work
        # volume: all units at the tier the total lands in
        (VOLUME, D(0), D(0), D(0)),
        (VOLUME, D(1000), D(0), D("2.000")),
        (VOLUME, D(1001), D(0), D("2.5015")),  # 1001 x 0.0015 + 1.00
        (VOLUME, D(5000), D(0), D("8.5000")),
        (VOLUME, D(5001), D(0), D("5.001")),  # the cheaper tier can cost less in total
        # package: per started block
        (Package(D(1000), D("0.50")), D(0), D(0), D(0)),
        (Package(D(1000), D("0.50")), D(1), D(0), D("0.50")),
        (Package(D(1000), D("0.50")), D(1000), D(0), D("0.50")),
        (Package(D(1000), D("0.50")), D(1001), D(0), D("1.00")),
        (Package(D(1000), D("0.50")), D(2500), D(1500), D("0.50")),
        (Package(D(1000), D("0.50")), D(2501), D(1500), D("1.00")),
    ],
)
def test_exact_amounts(model: PriceModel, quantity: D, free: D, amount: D) -> None:
    charge = calculate(model, quantity, free)
    assert charge.amount == amount
    assert charge.amount == sum((line.amount for line in charge.lines), D(0))


def test_graduated_breakdown_per_tier() -> None:
    charge = calculate(GRADUATED, D(6000))
    assert [(ln.tier, ln.above, ln.up_to, ln.quantity, ln.amount) for ln in charge.lines] == [
        (0, D(0), D(1000), D(1000), D("2.000")),
        (1, D(1000), D(5000), D(4000), D("7.0000")),
        (2, D(5000), None, D(1000), D("1.000")),
    ]


def test_volume_breakdown_names_the_tier() -> None:
    (line,) = calculate(VOLUME, D(5001)).lines
    assert (line.tier, line.above, line.up_to, line.quantity) == (2, D(5000), None, D(5001))


def test_package_breakdown_counts_blocks() -> None:
    (line,) = calculate(Package(D(1000), D("0.50")), D(1001)).lines
    assert (line.quantity, line.unit_price) == (D(2), D("0.50"))


@pytest.mark.parametrize(
    "make",
    [
        lambda: Graduated(()),
        lambda: Graduated((Tier(D(10), D(1)),)),  # last tier must be unbounded
        lambda: Graduated((Tier(None, D(1)), Tier(None, D(1)))),
        lambda: Volume((Tier(D(10), D(1)), Tier(D(10), D(1)), Tier(None, D(1)))),
        lambda: Tier(D(0), D(1)),
        lambda: Tier(D(10), D(-1)),
        lambda: Package(D(0), D(1)),
        lambda: PerUnit(D("NaN")),
    ],
)
def test_malformed_models_are_refused(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


def test_floats_are_refused() -> None:
    with pytest.raises(TypeError):
        PerUnit(0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        calculate(PerUnit(D(1)), 3.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        calculate(PerUnit(D(1)), D(-1))


quantities = st.decimals(min_value=0, max_value=10**7, places=3, allow_nan=False)


@given(quantities, quantities)
def test_graduated_is_monotonic_and_splits_exactly(a: D, b: D) -> None:
    low, high = sorted((a, b))
    assert calculate(GRADUATED, low).amount <= calculate(GRADUATED, high).amount
    charge = calculate(GRADUATED, high)
    assert sum((ln.quantity for ln in charge.lines), D(0)) == high


@given(quantities)
def test_graduated_without_flat_fees_never_exceeds_top_rate(q: D) -> None:
    tiers = tuple(Tier(t.up_to, t.unit_price) for t in TIERS)
    assert calculate(Graduated(tiers), q).amount <= q * D("0.002")
    assert calculate(Volume(tiers), q).amount <= calculate(Graduated(tiers), q).amount
