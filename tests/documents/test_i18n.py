"""Labels and Babel formatting of invoice documents, without rendering a page."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from aihub_billing.documents import UnsupportedLocale
from aihub_billing.documents.i18n import (
    LABELS,
    format_day,
    format_money,
    format_period,
    format_price,
    format_quantity,
    format_rate,
    label,
    resolve_locale,
)
from tests.documents.helpers import normalize

EN = resolve_locale("en_US")
DE = resolve_locale("de_DE")
ZH = resolve_locale("zh_CN")


def test_every_language_translates_every_label() -> None:
    english = set(LABELS["en"])
    for language, catalog in LABELS.items():
        assert set(catalog) == english, language
        assert all(catalog.values()), language
    assert label(DE, "Unit price") == "Einzelpreis"
    assert label(ZH, "Amount due") == "应付金额"
    assert label(resolve_locale("fr_FR"), "DRAFT") == "BROUILLON"


def test_unknown_label_is_printed_as_given() -> None:
    assert label(DE, "Reverse charge") == "Reverse charge"


@pytest.mark.parametrize(
    ("name", "language", "territory"),
    [
        ("en_US", "en", "US"),
        ("de-DE", "de", "DE"),
        ("de_AT", "de", "AT"),  # German labels, Austrian number and currency rules
        ("zh_CN", "zh", "CN"),
        ("zh", "zh", None),
        ("en_GB", "en", "GB"),
    ],
)
def test_locales_resolve_and_fall_back_to_their_language(
    name: str, language: str, territory: str | None
) -> None:
    locale = resolve_locale(name)
    assert (locale.language, locale.territory) == (language, territory)


@pytest.mark.parametrize("name", ["xx_YY", "ja_JP", "zh_TW", "zh_Hant", "", "../../etc", "en US"])
def test_unknown_or_unlabelled_locales_are_refused(name: str) -> None:
    with pytest.raises(UnsupportedLocale) as raised:
        resolve_locale(name)
    assert raised.value.code == "unsupported_locale"
    assert raised.value.status == 400
    assert "supported languages" in raised.value.detail or "locale must be" in raised.value.detail


def test_money_has_the_currency_decimals() -> None:
    assert format_money(123450, "USD", EN) == "$1,234.50"
    assert normalize(format_money(123450, "USD", DE)) == "1.234,50 $"
    assert normalize(format_money(123450, "EUR", DE)) == "1.234,50 €"
    assert format_money(123450, "USD", ZH) == "US$1,234.50"
    assert format_money(123450, "JPY", EN) == "¥123,450"
    assert format_money(1234567, "KWD", EN) == "KWD1,234.567"
    assert normalize(format_money(1234567, "KWD", DE)) == "1.234,567 KWD"
    assert format_money(-1000, "USD", EN) == "-$10.00"
    assert normalize(format_money(123450, "EUR", resolve_locale("de_AT"))) == "€ 1.234,50"


@pytest.mark.parametrize(
    ("price", "currency", "expected"),
    [
        (D("0.0000015"), "USD", "$0.0000015"),
        (D("0.000001500"), "USD", "$0.0000015"),  # trailing zeros are not digits
        (D("0.00000123456789"), "USD", "$0.00000123456789"),
        (D("12.5"), "USD", "$12.50"),  # never fewer than the currency's decimals
        (D("2"), "USD", "$2.00"),
        (D("0.5"), "JPY", "¥0.5"),
        (D("3"), "JPY", "¥3"),
        (D("0.0004"), "KWD", "KWD0.0004"),
        (D("1.5"), "KWD", "KWD1.500"),
    ],
)
def test_unit_prices_keep_every_significant_digit(price: D, currency: str, expected: str) -> None:
    assert format_price(price, currency, EN) == expected


def test_unit_price_in_german() -> None:
    assert normalize(format_price(D("0.0000015"), "EUR", DE)) == "0,0000015 €"


def test_quantities_and_rates() -> None:
    assert format_quantity(D(1_234_567), EN) == "1,234,567"
    assert format_quantity(D("1234.5"), DE) == "1.234,5"
    assert format_quantity(D("0.125"), EN) == "0.125"
    assert format_rate(D("0.19"), EN) == "19%"
    assert normalize(format_rate(D("0.0725"), DE)) == "7,25 %"


def test_dates_in_the_locale_long_form() -> None:
    day = datetime(2026, 11, 25, 23, 59, tzinfo=UTC)
    assert format_day(day, EN) == "November 25, 2026"
    assert format_day(day, DE) == "25. November 2026"
    assert format_day(day, ZH) == "2026年11月25日"


def test_half_open_period_prints_its_last_day() -> None:
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    assert normalize(format_period(start, end, EN)) == "Nov 1 – 30, 2026"
    assert normalize(format_period(start, end, DE)) == "1.–30. Nov. 2026"
    assert format_period(start, end, ZH) == "2026年11月1日至30日"
    mid = datetime(2026, 11, 15, 12, tzinfo=UTC)  # an end inside a day includes that day
    assert normalize(format_period(start, mid, EN)) == "Nov 1 – 15, 2026"
