"""Amounts as each provider writes them, where that differs from our minor units (the ISO 4217
exponent, from Babel). Every amount crossing a provider adapter goes through here."""

from __future__ import annotations

from aihub_billing.kit.money import currency_exponent, minor_to_decimal, round_quotient
from aihub_billing.payments.errors import ProviderAmountNotSupported

# Stripe's own classes of currencies: its zero-decimal list, its three-decimal list, and
# two decimals for every other one, whatever ISO or CLDR say. Our minor units follow Babel
# (CLDR), which gives exponent 0 to currencies Stripe keeps two-decimal (ISK, whole króna only
# since 2023 but still sent as 100 per króna; RSD, ALL, LAK, ...): those scale by 100.
_STRIPE_ZERO_DECIMAL = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV"}
    | {"XAF", "XOF", "XPF"}
)
# Stripe takes three-decimal currencies only in whole tens of their minor unit (its payment
# partners' rule: the last digit 0).
_STRIPE_TENS = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})
# PayPal refuses decimals for these (DECIMALS_NOT_SUPPORTED) whatever their ISO exponent.
_PAYPAL_WHOLE = frozenset({"HUF", "JPY", "TWD"})


def _stripe_shift(code: str) -> int:
    """Stripe's decimals minus ours for `code`: the power of ten between the two units."""
    stripe = 0 if code in _STRIPE_ZERO_DECIMAL else 3 if code in _STRIPE_TENS else 2
    return stripe - currency_exponent(code)


def to_stripe(amount_minor: int, currency: str) -> int:
    """Our minor units as a Stripe `amount`; refused when Stripe cannot take it (a
    three-decimal amount not in whole tens, e.g. 5.125 KWD, or a fraction Stripe has no
    unit for)."""
    code = currency.upper()
    shift = _stripe_shift(code)
    factor = int(10 ** abs(shift))
    if (code in _STRIPE_TENS and amount_minor % 10) or (shift < 0 and amount_minor % factor):
        value = minor_to_decimal(amount_minor, code)
        raise ProviderAmountNotSupported(f"Stripe cannot take {value} {code}")
    return amount_minor * factor if shift >= 0 else amount_minor // factor


def from_stripe(amount: int, currency: str) -> int:
    """A Stripe `amount` in our minor units (a fraction of our unit, e.g. of a króna, which
    Stripe no longer takes, rounds half up)."""
    shift = _stripe_shift(currency.upper())
    factor = int(10 ** abs(shift))
    return round_quotient(amount, factor) if shift >= 0 else amount * factor


def paypal_value(amount_minor: int, currency: str) -> dict[str, str]:
    """Our minor units as a PayPal money object; refused when PayPal cannot take the amount
    (a fraction of a forint, yen or Taiwan dollar)."""
    value = minor_to_decimal(amount_minor, currency)
    if currency.upper() in _PAYPAL_WHOLE:
        if value != value.to_integral_value():
            raise ProviderAmountNotSupported(
                f"PayPal takes whole {currency} amounts only, not {value}"
            )
        return {"currency_code": currency, "value": f"{value:.0f}"}
    return {"currency_code": currency, "value": f"{value:.{currency_exponent(currency)}f}"}
