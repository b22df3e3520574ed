"""The pure arithmetic of a credit note: what remains creditable, the tax a credit carries,
and how a credit lands on an invoice (amount due first, then the account balance).

Integer minor units throughout; each figure is rounded once, half-up, by `kit.money`
(`round_to_minor`, or `round_quotient` for a ratio of two amounts). No database.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from aihub_billing.kit.money import minor_to_decimal, round_quotient, round_to_minor


class ExceedsCreditable(ValueError):
    """The requested credit is above what remains creditable (on a line or the invoice)."""


@dataclass(frozen=True, slots=True)
class LineState:
    """An invoice line and what credit notes already took from it."""

    amount_minor: int
    tax_minor: int
    tax_rate: Decimal | None
    credited_amount_minor: int = 0
    credited_tax_minor: int = 0

    @property
    def remaining_amount(self) -> int:
        return max(0, self.amount_minor - self.credited_amount_minor)

    @property
    def remaining_tax(self) -> int:
        return max(0, self.tax_minor - self.credited_tax_minor)

    @property
    def creditable(self) -> int:
        return self.remaining_amount + self.remaining_tax


@dataclass(frozen=True, slots=True)
class InvoiceState:
    """An invoice's totals, the sums of the credit notes already issued against it, and what
    was refunded of its payments outside credit notes."""

    currency: str
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    credited_subtotal_minor: int = 0
    credited_tax_minor: int = 0
    # Paid and then refunded other than by a credit note: given back already.
    refunded_minor: int = 0

    @property
    def credited_total(self) -> int:
        return self.credited_subtotal_minor + self.credited_tax_minor

    @property
    def creditable(self) -> int:
        return max(0, self.total_minor - self.credited_total - self.refunded_minor)

    @property
    def remaining_tax(self) -> int:
        return max(0, self.tax_minor - self.credited_tax_minor)

    @property
    def remaining_subtotal(self) -> int:
        return max(0, self.creditable - self.remaining_tax)


@dataclass(frozen=True, slots=True)
class Credit:
    """One credited part: pre-tax amount and its tax, in minor units."""

    amount_minor: int
    tax_minor: int

    @property
    def total(self) -> int:
        return self.amount_minor + self.tax_minor


def credit_line(line: LineState, amount_minor: int | None, currency: str) -> Credit:
    """The credit of `amount_minor` (pre-tax; None = all that remains) on one line.

    The whole remaining amount takes the whole remaining tax; a part takes
    round_to_minor(amount x tax_rate), never more than the line's remaining tax.
    """
    remaining = line.remaining_amount
    amount = remaining if amount_minor is None else amount_minor
    if amount <= 0:
        raise ExceedsCreditable("nothing remains creditable on this line")
    if amount > remaining:
        raise ExceedsCreditable(f"at most {remaining} minor units (before tax) on this line")
    if amount == remaining:
        tax = line.remaining_tax
    elif line.tax_rate is None:
        tax = 0
    else:
        precise = minor_to_decimal(amount, currency) * line.tax_rate
        tax = min(line.remaining_tax, max(0, round_to_minor(precise, currency)))
    return Credit(amount, tax)


def credit_amount(invoice: InvoiceState, total_minor: int) -> Credit:
    """A plain, tax-inclusive amount against the invoice, split by the invoice's tax ratio.

    tax = round_to_minor(total x invoice tax / invoice total), kept within what remains of
    the invoice's tax and such that the pre-tax part stays within what remains of its subtotal.
    """
    if total_minor <= 0 or total_minor > invoice.creditable:
        raise ExceedsCreditable(f"at most {invoice.creditable} minor units on this invoice")
    # Exact: total x tax / invoice total in minor units, rounded once, half away from zero.
    # (Rounding the ratio to the context's 28 digits first could push an exact half down.)
    tax = round_quotient(total_minor * invoice.tax_minor, invoice.total_minor)
    tax = min(invoice.remaining_tax, max(0, tax))
    tax = max(tax, total_minor - invoice.remaining_subtotal)
    return Credit(total_minor - tax, tax)


def check_invoice(invoice: InvoiceState, credits: list[Credit]) -> None:
    """The credits together stay within what remains of the invoice: total, tax and subtotal."""
    amount = sum(c.amount_minor for c in credits)
    tax = sum(c.tax_minor for c in credits)
    if amount + tax <= 0:
        raise ExceedsCreditable("the credit note would be empty")
    if amount + tax > invoice.creditable:
        raise ExceedsCreditable(f"at most {invoice.creditable} minor units on this invoice")
    if tax > invoice.remaining_tax or amount > invoice.remaining_subtotal:
        raise ExceedsCreditable("the credit is above what remains of the invoice's subtotal/tax")


@dataclass(frozen=True, slots=True)
class Landing:
    """Where a credit on an invoice goes: off the amount due, then elsewhere."""

    off_amount_due: int
    rest: int


def land(total_minor: int, amount_due_minor: int, *, open_invoice: bool) -> Landing:
    """An open invoice's credit first reduces what is still owed; the rest (and all of it on a
    paid invoice) is refunded or credited to the balance."""
    off = min(total_minor, max(0, amount_due_minor)) if open_invoice else 0
    return Landing(off, total_minor - off)


def consumable(balance_minor: int, up_to_minor: int) -> int:
    """What an invoice may take from a balance: never more than the balance holds."""
    return max(0, min(balance_minor, up_to_minor))
