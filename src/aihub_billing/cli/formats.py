"""How the CLI prints amounts and costs (Babel, as invoices do; never floats), periods and
times (ISO dates, UTC: compact and sortable in a terminal)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from babel import Locale

from aihub_billing.documents.i18n import format_money, format_price, resolve_locale

__all__ = ["Formats"]


class Formats:
    """Formatting in one locale (the invoice documents' configured one)."""

    def __init__(self, locale: str) -> None:
        self.locale: Locale = resolve_locale(locale)

    def money(self, amount_minor: int, currency: str) -> str:
        """Integer minor units, with the currency's own decimals."""
        return format_money(amount_minor, currency, self.locale)

    def cost(self, amount: Decimal, currency: str | None) -> str:
        """An unrounded usage cost with every significant digit (rounding is the invoice's)."""
        if currency is None:
            return "-"
        return format_price(amount, currency, self.locale)

    @staticmethod
    def period(start: datetime, end: datetime) -> str:
        """A half-open period [start, end) as its first and last UTC day, as invoices show it."""
        last = end - timedelta(microseconds=1) if end > start else end
        return f"{start.astimezone(UTC):%Y-%m-%d} – {last.astimezone(UTC):%Y-%m-%d}"

    @staticmethod
    def time(value: datetime | None) -> str:
        """UTC to the minute."""
        if value is None:
            return "-"
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")

    @staticmethod
    def count(value: int | None, unlimited: str = "unlimited") -> str:
        return unlimited if value is None else f"{value:,}"
