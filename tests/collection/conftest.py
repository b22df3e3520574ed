"""The collection tests pay invoices at the local Stripe and PayPal fakes."""

from tests.payments.support import billing, paypal_fake, paypal_key, stripe_fake  # noqa: F401
