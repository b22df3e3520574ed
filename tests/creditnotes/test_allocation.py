"""Properties of the pure credit note arithmetic: for any invoice and any sequence of credits
(by line, by part of a line, by plain amount) and balance uses, credited never exceeds
creditable, tax credited never exceeds a line's (or the invoice's) tax, and the balance never
goes negative."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from aihub_billing.creditnotes.allocation import (
    Credit,
    ExceedsCreditable,
    InvoiceState,
    LineState,
    check_invoice,
    consumable,
    credit_amount,
    credit_line,
    land,
)
from aihub_billing.kit.money import minor_to_decimal, round_to_minor

CURRENCIES = ["USD", "JPY", "KWD"]
rates = st.one_of(
    st.none(), st.decimals(min_value=0, max_value=Decimal("0.3"), places=4, allow_nan=False)
)
lines_st = st.lists(st.tuples(st.integers(1, 10**7), rates), min_size=1, max_size=5)
# An operation: ("line", index, amount or None) or ("amount", fraction of what remains).
ops_st = st.lists(
    st.one_of(
        st.tuples(st.just("line"), st.integers(0, 4), st.one_of(st.none(), st.integers(1, 10**7))),
        st.tuples(st.just("amount"), st.integers(0, 4), st.integers(1, 10**7)),
    ),
    max_size=12,
)


def tax_of(amount: int, rate: Decimal | None, currency: str) -> int:
    return (
        0 if rate is None else round_to_minor(minor_to_decimal(amount, currency) * rate, currency)
    )


@settings(max_examples=300, deadline=None)
@given(currency=st.sampled_from(CURRENCIES), lines=lines_st, ops=ops_st)
def test_credits_never_exceed_what_is_creditable(
    currency: str, lines: list[tuple[int, Decimal | None]], ops: list[tuple[str, int, int | None]]
) -> None:
    taxes = [tax_of(a, r, currency) for a, r in lines]
    subtotal, tax = sum(a for a, _ in lines), sum(taxes)
    credited_lines = [(0, 0) for _ in lines]
    credited_sub = credited_tax = 0
    for kind, index, amount in ops:
        invoice = InvoiceState(currency, subtotal, tax, subtotal + tax, credited_sub, credited_tax)
        index %= len(lines)
        state = LineState(lines[index][0], taxes[index], lines[index][1], *credited_lines[index])
        try:
            if kind == "line":
                part = credit_line(state, amount, currency)
                assert part.amount_minor <= state.remaining_amount
                assert part.tax_minor <= state.remaining_tax
                if amount is None:
                    assert part.total == state.creditable
            else:
                assert amount is not None
                part = credit_amount(invoice, amount)
                assert part.total == amount
            check_invoice(invoice, [part])
        except ExceedsCreditable:
            continue
        assert part.amount_minor >= 0 and part.tax_minor >= 0 and part.total > 0
        if kind == "line":
            a, t = credited_lines[index]
            credited_lines[index] = (a + part.amount_minor, t + part.tax_minor)
        credited_sub += part.amount_minor
        credited_tax += part.tax_minor
        for (line_amount, _), line_tax, (a, t) in zip(lines, taxes, credited_lines, strict=True):
            assert a <= line_amount and t <= line_tax
        assert credited_sub + credited_tax <= subtotal + tax
        assert credited_tax <= tax and credited_sub <= subtotal


@settings(max_examples=200, deadline=None)
@given(
    amount=st.integers(1, 10**9),
    rate=st.decimals(min_value=0, max_value=1, places=6, allow_nan=False),
    currency=st.sampled_from(CURRENCIES),
)
def test_a_whole_line_credits_exactly_its_amount_and_tax(
    amount: int, rate: Decimal, currency: str
) -> None:
    line = LineState(amount, tax_of(amount, rate, currency), rate)
    assert credit_line(line, None, currency) == Credit(amount, line.tax_minor)
    assert credit_line(line, amount, currency) == Credit(amount, line.tax_minor)


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["credit", "consume", "land"]), st.integers(0, 10**6)),
        max_size=30,
    )
)
def test_the_balance_never_goes_negative(steps: list[tuple[str, int]]) -> None:
    balance = 0
    for kind, amount in steps:
        if kind == "credit":
            balance += amount
        elif kind == "consume":
            taken = consumable(balance, amount)
            assert 0 <= taken <= amount and taken <= balance
            balance -= taken
        else:
            due = amount // 2
            landing = land(amount, due, open_invoice=True)
            assert landing.off_amount_due == min(amount, due)
            assert landing.off_amount_due + landing.rest == amount and landing.rest >= 0
            balance += landing.rest
        assert balance >= 0


def test_a_plain_amount_rounds_its_tax_once_from_the_exact_ratio() -> None:
    # 20% VAT: 2.47 + 0.49 = 2.96. Half of it, 1.48, carries exactly 1.48 x 49 / 296 = 0.245
    # of tax, half-up 0.25 (not 0.24 from a ratio first rounded to 28 digits).
    invoice = InvoiceState("USD", 247, 49, 296)
    assert credit_amount(invoice, 148) == Credit(123, 25)
    assert credit_amount(InvoiceState("JPY", 1973, 143, 2116), 1058) == Credit(986, 72)


@settings(max_examples=300, deadline=None)
@given(
    subtotal=st.integers(1, 10**9),
    rate=st.decimals(min_value=0, max_value=Decimal("0.3"), places=4, allow_nan=False),
    share=st.fractions(min_value=0, max_value=1),
    currency=st.sampled_from(CURRENCIES),
)
def test_a_plain_amount_on_a_fresh_invoice_takes_the_exact_tax_share(
    subtotal: int, rate: Decimal, share: Fraction, currency: str
) -> None:
    tax = tax_of(subtotal, rate, currency)
    total = subtotal + tax
    amount = max(1, math.floor(total * share))
    exact = Fraction(amount * tax, total)
    part = credit_amount(InvoiceState(currency, subtotal, tax, total), amount)
    assert part.tax_minor == math.floor(exact + Fraction(1, 2))
    assert part.total == amount
