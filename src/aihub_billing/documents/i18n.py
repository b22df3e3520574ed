"""Locales of invoice documents: the label catalog and Babel formatting of dates and amounts.

A locale is accepted when Babel knows it and its language has labels here; a regional
variant falls back to its language (de_AT and de_CH print German labels with their own
number and date rules). Chinese labels are Simplified, so zh_TW / zh_Hant are refused.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from types import MappingProxyType

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_interval
from babel.numbers import format_currency, format_decimal, format_percent

from aihub_billing.documents.errors import UnsupportedLocale
from aihub_billing.kit.money import minor_to_decimal

__all__ = [
    "LABELS",
    "SUPPORTED_LANGUAGES",
    "format_day",
    "format_money",
    "format_period",
    "format_price",
    "format_quantity",
    "format_rate",
    "label",
    "resolve_locale",
]

# English msgid -> translation, per language (Chinese keyed by script).
_DE = {
    "Invoice": "Rechnung",
    "Invoice number": "Rechnungsnummer",
    "Date": "Datum",
    "Due": "Fällig am",
    "Period": "Zeitraum",
    "Status": "Status",
    "From": "Von",
    "Bill to": "Rechnung an",
    "Tax ID": "USt-IdNr.",
    "Description": "Beschreibung",
    "Quantity": "Menge",
    "Unit price": "Einzelpreis",
    "Tax": "Steuer",
    "Tax rate": "Steuersatz",
    "Amount": "Betrag",
    "Subtotal": "Zwischensumme",
    "Total": "Gesamt",
    "Balance applied": "Verrechnetes Guthaben",
    "Credited": "Gutgeschrieben",
    "Amount paid": "Bezahlt",
    "Amount due": "Fälliger Betrag",
    "Notes": "Hinweise",
    "Page": "Seite",
    "DRAFT": "ENTWURF",
    "VOID": "STORNIERT",
    "PAID": "BEZAHLT",
    "draft": "Entwurf",
    "open": "Offen",
    "paid": "Bezahlt",
    "void": "Storniert",
    "uncollectible": "Uneinbringlich",
}
_FR = {
    "Invoice": "Facture",
    "Invoice number": "Numéro de facture",
    "Date": "Date",
    "Due": "Échéance",
    "Period": "Période",
    "Status": "Statut",
    "From": "De",
    "Bill to": "Facturé à",
    "Tax ID": "N° de TVA",
    "Description": "Description",
    "Quantity": "Quantité",
    "Unit price": "Prix unitaire",
    "Tax": "Taxe",
    "Tax rate": "Taux de taxe",
    "Amount": "Montant",
    "Subtotal": "Sous-total",
    "Total": "Total",
    "Balance applied": "Solde appliqué",
    "Credited": "Crédité",
    "Amount paid": "Montant payé",
    "Amount due": "Montant dû",
    "Notes": "Notes",
    "Page": "Page",
    "DRAFT": "BROUILLON",
    "VOID": "ANNULÉE",
    "PAID": "PAYÉE",
    "draft": "Brouillon",
    "open": "À payer",
    "paid": "Payée",
    "void": "Annulée",
    "uncollectible": "Irrécouvrable",
}
_ZH_HANS = {
    "Invoice": "发票",
    "Invoice number": "发票号码",
    "Date": "开票日期",
    "Due": "到期日",
    "Period": "计费周期",
    "Status": "状态",
    "From": "开票方",
    "Bill to": "客户",
    "Tax ID": "税号",
    "Description": "项目",
    "Quantity": "数量",
    "Unit price": "单价",
    "Tax": "税额",
    "Tax rate": "税率",
    "Amount": "金额",
    "Subtotal": "小计",
    "Total": "合计",
    "Balance applied": "已抵扣余额",
    "Credited": "已贷记",
    "Amount paid": "已付金额",
    "Amount due": "应付金额",
    "Notes": "备注",
    "Page": "页",
    "DRAFT": "草稿",
    "VOID": "已作废",
    "PAID": "已付款",
    "draft": "草稿",
    "open": "待付款",
    "paid": "已付款",
    "void": "已作废",
    "uncollectible": "无法收回",
}
_EN = {key: key for key in _DE} | {
    "draft": "Draft",
    "open": "Open",
    "paid": "Paid",
    "void": "Void",
    "uncollectible": "Uncollectible",
}

LABELS: MappingProxyType[str, MappingProxyType[str, str]] = MappingProxyType(
    {
        "en": MappingProxyType(_EN),
        "de": MappingProxyType(_DE),
        "fr": MappingProxyType(_FR),
        "zh_Hans": MappingProxyType(_ZH_HANS),
    }
)
SUPPORTED_LANGUAGES = ("de", "en", "fr", "zh_Hans")


def _catalog_key(locale: Locale) -> str:
    if locale.language == "zh":
        return f"zh_{locale.script or 'Hans'}"
    return locale.language


@lru_cache(maxsize=64)
def resolve_locale(name: str) -> Locale:
    """The Babel locale for `name` ("en_US", "de-AT", "zh_CN"), or UnsupportedLocale."""
    if not isinstance(name, str) or not name.strip():
        raise UnsupportedLocale(f"locale must be a name such as en_US, got {name!r}")
    try:
        locale = Locale.parse(name.strip().replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        raise UnsupportedLocale(
            f"unknown locale {name!r}; supported languages: {', '.join(SUPPORTED_LANGUAGES)}"
        ) from None
    if _catalog_key(locale) not in LABELS:
        raise UnsupportedLocale(
            f"no invoice labels for locale {name!r}; "
            f"supported languages: {', '.join(SUPPORTED_LANGUAGES)}"
        )
    return locale


def label(locale: Locale, msgid: str) -> str:
    """The translation of a label; an unknown msgid is shown as is (operator templates)."""
    return LABELS[_catalog_key(locale)].get(msgid, msgid)


def format_day(value: datetime | date, locale: Locale) -> str:
    """A date in the locale's long form: November 25, 2026 / 25. November 2026 / 2026年11月25日."""
    day = value.date() if isinstance(value, datetime) else value
    return format_date(day, "long", locale=locale)


def _last_day(start: datetime, end: datetime) -> date:
    # Periods are half-open: [Nov 1, Dec 1) is printed as Nov 1 – 30.
    if end > start:
        return (end - timedelta(microseconds=1)).date()
    return end.date()


def format_period(start: datetime, end: datetime, locale: Locale) -> str:
    """A half-open period as its first and last day, in the locale's interval form."""
    return format_interval(start.date(), _last_day(start, end), "yMMMd", locale=locale)


def format_money(amount_minor: int, currency: str, locale: Locale) -> str:
    """Integer minor units with the currency's own number of decimals (JPY 0, KWD 3)."""
    return format_currency(minor_to_decimal(amount_minor, currency), currency, locale=locale)


def format_price(unit_price: Decimal, currency: str, locale: Locale) -> str:
    """A precise unit price: at least the currency's decimals and every significant digit."""
    return format_currency(unit_price, currency, locale=locale, decimal_quantization=False)


def format_quantity(quantity: Decimal | int, locale: Locale) -> str:
    return format_decimal(quantity, locale=locale, decimal_quantization=False)


def format_rate(rate: Decimal, locale: Locale) -> str:
    """A tax rate given as a fraction (0.19) as a percentage with all its digits (19 %)."""
    return format_percent(rate, locale=locale, decimal_quantization=False)
