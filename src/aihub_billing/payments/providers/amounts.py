"""Amounts as each provider writes them, where that differs from our minor units (the ISO 4217
exponent, from Babel). Every amount crossing a provider adapter goes through here."""

from __future__ import annotations

from aihub_billing.kit.money import currency_exponent, minor_to_decimal, round_quotient
from aihub_billing.payments.errors import ProviderAmountNotSupported

# Stripe kept ISK two-decimal in its API when card networks made it whole-króna only: an
# amount of 100 is 1 króna, and charges must be multiples of 100. ISO (and we) say exponent 0.
_STRIPE_SCALE = {"ISK": 100}
# Stripe takes three-decimal currencies only in whole tens of their minor unit (its payment
# partners' rule: the last digit 0).
_STRIPE_TENS = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})
# PayPal refuses decimals for these (DECIMALS_NOT_SUPPORTED) whatever their ISO exponent.
_PAYPAL_WHOLE = frozenset({"HUF", "JPY", "TWD"})


def to_stripe(amount_minor: int, currency: str) -> int:
    """Our minor units as a Stripe `amount`; refused when Stripe cannot take it (a
    three-decimal amount not in whole tens, e.g. 5.125 KWD)."""
    code = currency.upper()
    if code in _STRIPE_TENS and amount_minor % 10:
        value = minor_to_decimal(amount_minor, code)
        raise ProviderAmountNotSupported(
            f"Stripe takes {code} amounts in whole hundredths only, not {value}"
        )
    return amount_minor * _STRIPE_SCALE.get(code, 1)


def from_stripe(amount: int, currency: str) -> int:
    """A Stripe `amount` in our minor units (a fraction of a króna, which Stripe no longer
    takes, rounds half up)."""
    scale = _STRIPE_SCALE.get(currency.upper(), 1)
    return amount if scale == 1 else round_quotient(amount, scale)


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
