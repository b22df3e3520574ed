"""The pure arithmetic of invoice lines: overage, largest-remainder allocation, tax, totals.

No database and no floats: quantities and prices are Decimal or int, each line is rounded to
minor units once (`round_to_minor`), tax is computed per line from the rounded amount, and the
invoice's figures are integer sums of the lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction

from aihub_billing.invoices.errors import AmountOutOfRange
from aihub_billing.kit.money import minor_to_decimal, round_fraction, round_to_minor

PLACES = 18  # scale of the precise NUMERIC columns
# 10^15 minor units a line at most: the sums of an invoice's lines and tax stay far inside
# the 64-bit columns (and the 20 integer digits of the precise ones).
MAX_LINE_MINOR = 10**15
_QUANTUM = Decimal(1).scaleb(-PLACES)
USAGE_KINDS = ("overage_calls", "overage_tokens", "storage")


@dataclass(frozen=True, slots=True)
class DraftLine:
    kind: str
    description: str
    period_start: datetime
    period_end: datetime
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal  # precise: quantity × unit_price to the 18 stored places
    amount_minor: int  # the exact quantity × unit_price, rounded once
    model: str | None = None
    invoice_item_id: str | None = None
    tax_rate: Decimal | None = None
    tax_minor: int = 0


@dataclass(frozen=True, slots=True)
class Totals:
    subtotal_minor: int
    tax_minor: int
    total_minor: int


@dataclass(frozen=True, slots=True)
class OverageTerms:
    """What a plan version and its price say about overage (None = not billed)."""

    included_calls: int | None
    included_tokens: int | None
    included_storage_gb: Decimal | None
    calls_policy: str
    tokens_policy: str
    storage_policy: str
    per_1k_calls: Decimal | None
    per_1m_tokens: Decimal | None
    per_gb_month: Decimal | None


@dataclass(frozen=True, slots=True)
class PeriodUse:
    calls: int
    tokens: int
    tokens_by_model: Mapping[str, int]
    storage_gb_months: Decimal  # the average GB held in it
    share: Fraction = Fraction(1)  # of a whole month (one cut short holds a share of one)


def allocate(total: int, weights: Mapping[str, int]) -> dict[str, int]:
    """Splits the integer `total` over the keys in proportion to `weights` (largest remainder).

    The parts are integers summing exactly to `total`; ties go to the larger weight, then to the
    smaller key, so the split is deterministic.
    """
    if total < 0:
        raise ValueError("total must be >= 0")
    positive = {k: w for k, w in weights.items() if w > 0}
    weight_sum = sum(positive.values())
    if total == 0 or weight_sum == 0:
        return {}
    parts: dict[str, int] = {}
    remainders: list[tuple[int, int, str]] = []
    for key, weight in positive.items():
        whole, rest = divmod(total * weight, weight_sum)
        parts[key] = whole
        remainders.append((-rest, -weight, key))
    left = total - sum(parts.values())
    for _, _, key in sorted(remainders)[:left]:
        parts[key] += 1
    return {k: v for k, v in parts.items() if v > 0}


def _scaled(count: int, places: int) -> Decimal:
    """count / 10**places, exact and without padding (1500 / 1000 = 1.5, 2000 / 1000 = 2)."""
    return tidy(Decimal(count).scaleb(-places))


def tidy(value: Decimal) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 100
        if value == value.to_integral_value():
            return value.quantize(Decimal(1))
        return value.normalize()


def exact_product(quantity: Decimal, unit_price: Decimal) -> Decimal:
    """quantity × unit_price, exact (a 100-digit context holds any product of the columns)."""
    with localcontext() as ctx:
        ctx.prec = 100
        return quantity * unit_price


def precise_product(quantity: Decimal, unit_price: Decimal) -> Decimal:
    """quantity × unit_price kept to the 18 places the precise columns store: for storage and
    display only; the minor amount is rounded from the exact product."""
    with localcontext() as ctx:
        ctx.prec = 100
        amount = exact_product(quantity, unit_price)
        if int(amount.as_tuple().exponent) < -PLACES:
            amount = amount.quantize(_QUANTUM, rounding=ROUND_HALF_UP)
    return tidy(amount)


def line(
    kind: str,
    description: str,
    start: datetime,
    end: datetime,
    quantity: Decimal | int,
    unit_price: Decimal,
    currency: str,
    *,
    model: str | None = None,
) -> DraftLine:
    exact = exact_product(Decimal(quantity), unit_price)
    amount_minor = round_to_minor(exact, currency)
    if abs(amount_minor) > MAX_LINE_MINOR:
        raise AmountOutOfRange(
            f"{kind}: {quantity} at {unit_price} is {amount_minor} minor units of {currency}, "
            f"beyond the {MAX_LINE_MINOR:,} a line holds: check the plan's prices"
        )
    return DraftLine(
        kind=kind,
        description=description[:500],
        period_start=start,
        period_end=end,
        quantity=Decimal(quantity),
        unit_price=unit_price,
        amount=precise_product(Decimal(quantity), unit_price),
        # Rounded once, from the exact product: the 18-place amount is itself rounded.
        amount_minor=amount_minor,
        model=model,
    )


def overage_lines(
    terms: OverageTerms, months: Sequence[PeriodUse], currency: str, start: datetime, end: datetime
) -> list[DraftLine]:
    """Calls, tokens (per model) and storage beyond what the plan includes, when billed.

    The allowance is monthly: `months` holds the use of each month of the period (one for a
    period of a month or less), each month's excess counts, and the excesses are priced
    together, so each line is still rounded once."""
    lines: list[DraftLine] = []
    a_month = " a month" if len(months) > 1 else ""
    if (
        terms.calls_policy == "bill"
        and terms.included_calls is not None
        and terms.per_1k_calls is not None
    ):
        over = sum(max(0, m.calls - terms.included_calls) for m in months)
        if over > 0:
            lines.append(
                line(
                    "overage_calls",
                    f"API calls over the {terms.included_calls:,} included{a_month}: {over:,} "
                    f"at {terms.per_1k_calls} per 1,000 (quantity in thousands)",
                    start,
                    end,
                    _scaled(over, 3),
                    terms.per_1k_calls,
                    currency,
                )
            )
    if (
        terms.tokens_policy == "bill"
        and terms.included_tokens is not None
        and terms.per_1m_tokens is not None
    ):
        shares: dict[str, int] = {}
        for m in months:
            month_over = m.tokens - terms.included_tokens
            if month_over <= 0:
                continue
            # Tokens without a model breakdown (should not happen): one line.
            split = allocate(month_over, m.tokens_by_model) or {"": month_over}
            for model, part in split.items():
                shares[model] = shares.get(model, 0) + part
        for model in sorted(shares):
            lines.append(
                line(
                    "overage_tokens",
                    f"Tokens over the {terms.included_tokens:,} included{a_month}"
                    f"{f' ({model})' if model else ''}: {shares[model]:,} "
                    f"at {terms.per_1m_tokens} per 1M (quantity in millions)",
                    start,
                    end,
                    _scaled(shares[model], 6),
                    terms.per_1m_tokens,
                    currency,
                    model=model or None,
                )
            )
    if (
        terms.storage_policy == "bill"
        and terms.included_storage_gb is not None
        and terms.per_gb_month is not None
    ):
        included_gb = terms.included_storage_gb
        # Exact until the one rounding to the quantity's 18 places (a share of 1/31 does not
        # terminate).
        excess = [max(Decimal(0), m.storage_gb_months - included_gb) for m in months]
        exact = sum(
            (Fraction(e) * m.share for e, m in zip(excess, months, strict=True)), Fraction(0)
        )
        over_gb = round_fraction(exact, PLACES)
        if over_gb > 0:
            lines.append(
                line(
                    "storage",
                    f"Storage over the {included_gb} GB-months included{a_month}: "
                    f"{over_gb} GB-months at {terms.per_gb_month}",
                    start,
                    end,
                    over_gb,
                    terms.per_gb_month,
                    currency,
                )
            )
    return [x for x in lines if x.amount != 0]


def tax_of(amount_minor: int, rate: Decimal | None, currency: str) -> int:
    """The tax of one rounded line: rounded once, half-up (negative lines get negative tax)."""
    if rate is None or rate == 0:
        return 0
    return round_to_minor(minor_to_decimal(amount_minor, currency) * rate, currency)


def with_tax(lines: Sequence[DraftLine], rate: Decimal | None, currency: str) -> list[DraftLine]:
    return [
        replace(x, tax_rate=rate, tax_minor=tax_of(x.amount_minor, rate, currency)) for x in lines
    ]


def totals(lines: Sequence[DraftLine]) -> Totals:
    subtotal = sum((x.amount_minor for x in lines), 0)
    tax = sum((x.tax_minor for x in lines), 0)
    return Totals(subtotal, tax, subtotal + tax)


def tax_rate_for(
    exempt: bool, account_rate: Decimal | None, default_rate: Decimal
) -> Decimal | None:
    """Exemption wins; then the account's own rate; then the configured default."""
    if exempt:
        return None
    return account_rate if account_rate is not None else default_rate
