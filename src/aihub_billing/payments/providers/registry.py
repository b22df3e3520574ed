"""Builds the configured PaymentProcessor for a provider name, once, from BillingConfig."""

from __future__ import annotations

from collections.abc import Callable

from aihub_billing.config import BillingConfig, PaymentProviderConfig
from aihub_billing.kit.clock import Clock
from aihub_billing.payments.errors import ProviderNotConfigured
from aihub_billing.payments.providers.base import PaymentProcessor
from aihub_billing.payments.providers.paypal import PayPalProcessor
from aihub_billing.payments.providers.stripe import StripeProcessor

Builder = Callable[[PaymentProviderConfig, Clock], PaymentProcessor]


def _secret(value: object) -> str | None:
    getter = getattr(value, "get_secret_value", None)
    return getter() if callable(getter) else None


def build_stripe(config: PaymentProviderConfig, clock: Clock) -> PaymentProcessor:
    api_key = _secret(config.api_key)
    if not api_key:
        raise ProviderNotConfigured("stripe.api_key is not set")
    return StripeProcessor(
        api_key=api_key,
        webhook_secret=_secret(config.webhook_secret),
        api_base=config.api_base,
        timeout_seconds=config.timeout_seconds,
        max_retries=config.max_retries,
        retry_backoff_seconds=config.retry_backoff_seconds,
    )


def build_paypal(config: PaymentProviderConfig, clock: Clock) -> PaymentProcessor:
    client_secret = _secret(config.client_secret)
    if not config.client_id or not client_secret:
        raise ProviderNotConfigured("paypal.client_id and paypal.client_secret are not set")
    return PayPalProcessor(
        client_id=config.client_id,
        client_secret=client_secret,
        webhook_id=_secret(config.webhook_secret),
        sandbox=config.sandbox,
        api_base=config.api_base,
        timeout_seconds=config.timeout_seconds,
        max_retries=config.max_retries,
        retry_backoff_seconds=config.retry_backoff_seconds,
        extra_cert_hosts=tuple(config.webhook_cert_hosts),
        clock=clock,
    )


BUILDERS: dict[str, Builder] = {"stripe": build_stripe, "paypal": build_paypal}


class ProcessorRegistry:
    """Processors keyed by provider name, built on first use from the enabled providers."""

    def __init__(
        self, config: BillingConfig, clock: Clock, builders: dict[str, Builder] | None = None
    ) -> None:
        self._config = config
        self._clock = clock
        self._builders = builders or BUILDERS
        self._built: dict[str, PaymentProcessor] = {}

    def _settings(self, name: str) -> PaymentProviderConfig | None:
        return {"stripe": self._config.stripe, "paypal": self._config.paypal}.get(name)

    def enabled(self) -> list[str]:
        return [n for n in self._builders if (s := self._settings(n)) is not None and s.enabled]

    def default(self) -> str:
        names = self.enabled()
        if not names:
            raise ProviderNotConfigured("no payment provider is enabled")
        return names[0]

    def get(self, name: str) -> PaymentProcessor:
        processor = self._built.get(name)
        if processor is not None:
            return processor
        settings = self._settings(name)
        if settings is None or not settings.enabled or name not in self._builders:
            raise ProviderNotConfigured(f"payment provider {name!r} is not enabled")
        processor = self._built[name] = self._builders[name](settings, self._clock)
        return processor

    async def aclose(self) -> None:
        for processor in self._built.values():
            await processor.aclose()
        self._built.clear()
