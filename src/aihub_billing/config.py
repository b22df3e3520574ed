"""Typed settings from env / .env / TOML, validated per environment.

Precedence: init kwargs > ``AIHUB_BILLING_*`` env > ``.env`` > TOML file > defaults.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from aihub_billing.documents.errors import DocumentError
from aihub_billing.documents.i18n import resolve_locale
from aihub_billing.documents.invoice import Party
from aihub_billing.documents.render import TEMPLATE_NAME_PATTERN, available_templates
from aihub_billing.kit.db import DEFAULT_POOL_SIZE
from aihub_billing.kit.money import normalize_currency
from aihub_billing.kit.secretbox import SecretBox

ENV_PREFIX = "AIHUB_BILLING_"
CONFIG_FILE_ENV = "AIHUB_BILLING_CONFIG_FILE"
DEFAULT_CONFIG_FILE = "aihub-billing.toml"

Environment = Literal["development", "test", "staging", "production"]

# The bootstrap operator key is typed by a person: refuse a guessable one where money is real.
MIN_ADMIN_KEY_LENGTH = 32
_LOG_LEVELS = frozenset({"CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"})
_STRIPE_LIVE_PREFIXES = ("sk_live_", "rk_live_")
_STRIPE_TEST_PREFIXES = ("sk_test_", "rk_test_")


class PaymentProviderConfig(BaseModel):
    """Settings of one payment provider (used for both Stripe and PayPal)."""

    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)

    enabled: bool = False
    api_key: SecretStr | None = None  # Stripe secret key (sk_/rk_); unused for PayPal
    # Stripe: the whsec_ signing secret; PayPal: the webhook id used for verification.
    webhook_secret: SecretStr | None = None
    client_id: str | None = None  # PayPal REST client id
    client_secret: SecretStr | None = None  # PayPal REST secret
    sandbox: bool = True
    api_base: str | None = None  # overrides the provider base URL (tests: local fakes)
    timeout_seconds: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)
    retry_backoff_seconds: float = Field(default=0.5, gt=0, le=30)
    # PayPal: extra hosts allowed to serve webhook certificates (tests: the local fake). Empty
    # by default: only PayPal's own domain is trusted.
    webhook_cert_hosts: list[str] = Field(default_factory=list)


class PricingConfig(BaseModel):
    """Billing currency and tax rate."""

    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)

    currency: str = "USD"
    tax_rate: Decimal = Field(default=Decimal("0"), ge=0, lt=1)

    @field_validator("currency")
    @classmethod
    def _check_currency(cls, value: str) -> str:
        return normalize_currency(value)

    @field_validator("tax_rate", mode="before")
    @classmethod
    def _tax_rate_to_decimal(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("tax_rate must be a number, not a boolean")
        # str() first: Decimal(0.08) would carry the float's binary error.
        if isinstance(value, float):
            return Decimal(str(value))
        return value


class InvoiceDocumentConfig(BaseModel):
    """Invoice PDFs: template, default locale, operator template directory, logo, seller."""

    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)

    template: str = Field(default="classic", pattern=TEMPLATE_NAME_PATTERN)
    locale: str = "en_US"
    # Render and store the PDF at each change of a finalized invoice (a job); false: PDFs are
    # rendered only when asked for.
    store: bool = True
    templates_dir: Path | None = None  # its files take precedence over the packaged ones
    logo_path: Path | None = None
    seller_name: str = "aihub-billing"
    seller_email: str | None = None
    seller_address: list[str] = Field(default_factory=list, max_length=8)
    seller_tax_id: str | None = None

    @field_validator("locale")
    @classmethod
    def _check_locale(cls, value: str) -> str:
        try:
            resolve_locale(value)
        except DocumentError as exc:
            raise ValueError(exc.detail) from None
        return value

    @field_validator("templates_dir")
    @classmethod
    def _check_templates_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"documents.templates_dir is not a directory: {value}")
        return value

    @field_validator("logo_path")
    @classmethod
    def _check_logo(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"documents.logo_path is not a file: {value}")
        return value

    @model_validator(mode="after")
    def _check_template(self) -> InvoiceDocumentConfig:
        # Checked here, not at the first PDF: every render would answer 400 to the client
        # for a setting of the server's, and the stored-PDF jobs would fail until dead.
        known = available_templates(self.templates_dir)
        if self.template not in known:
            raise ValueError(
                f"documents.template {self.template!r} is not a template here "
                f"(available: {', '.join(known)})"
            )
        return self

    def seller(self) -> Party:
        """The seller block printed on every invoice."""
        return Party(
            name=self.seller_name,
            email=self.seller_email,
            address=tuple(self.seller_address),
            tax_id=self.seller_tax_id,
        )


class DunningConfig(BaseModel):
    """What happens when an invoice's automatic payment fails."""

    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)

    # Retries this many days after the first failed attempt (the invoice's finalization).
    retry_days: list[int] = Field(default_factory=lambda: [1, 3, 5, 7], max_length=20)
    # After the last retry fails: cancel the subscription, or move it to the free plan.
    final_action: Literal["cancel", "downgrade"] = "cancel"

    @field_validator("retry_days")
    @classmethod
    def _increasing(cls, value: list[int]) -> list[int]:
        if any(day < 1 for day in value) or value != sorted(set(value)):
            raise ValueError("retry_days are strictly increasing whole days >= 1")
        return value


class BillingConfig(BaseSettings):
    """All settings of aihub-billing; see the module docstring for the sources."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        hide_input_in_errors=True,
    )

    enabled: bool = True
    environment: Environment = "development"
    database_url: str = "sqlite+aiosqlite:///./var/aihub_billing.db"
    database_replica_url: str | None = None
    # PostgreSQL connections per process (and per replica), opened as needed and kept.
    database_pool_size: int = Field(default=DEFAULT_POOL_SIZE, ge=1, le=1_000)
    redis_url: str | None = None
    redis_max_connections: int = Field(default=100, ge=1, le=10_000)
    admin_key: SecretStr | None = None  # bootstrap operator key
    stripe: PaymentProviderConfig = Field(default_factory=PaymentProviderConfig)
    paypal: PaymentProviderConfig = Field(default_factory=PaymentProviderConfig)
    pricing: PricingConfig = Field(default_factory=PricingConfig)
    documents: InvoiceDocumentConfig = Field(default_factory=InvoiceDocumentConfig)
    dunning: DunningConfig = Field(default_factory=DunningConfig)
    # At-rest encryption of secrets kept in the database (webhook signing secrets) with
    # `encryption_key`, a Fernet key; production requires both.
    encryption_enabled: bool = False
    encryption_key: SecretStr | None = None
    notifications_enabled: bool = False
    # Let accounts point webhooks at loopback / private / link-local addresses: for local
    # development and tests only (refused in production).
    notifications_allow_private_targets: bool = False
    quota_fail_mode: Literal["fail_open", "fail_closed"] = "fail_closed"
    # Run the job worker inside `serve`; None = yes on SQLite, no otherwise.
    embedded_worker: bool | None = None
    log_level: str = "INFO"
    log_json: bool = False
    # One info line per request (method, route template, status, duration, request id); off
    # when a proxy in front logs requests already. Latency metrics are kept either way.
    access_log: bool = True
    jobs_poll_interval_seconds: float = Field(default=1.0, gt=0)
    jobs_max_attempts: int = Field(default=8, ge=1)
    idempotency_ttl_hours: int = Field(default=24, ge=1)
    # Quota: notify at these percentages of a monthly limit; limits cached per process.
    quota_thresholds: list[int] = Field(default_factory=lambda: [80, 100], max_length=10)
    quota_limits_cache_seconds: float = Field(default=300.0, ge=0)
    quota_reservation_ttl_seconds: int = Field(default=300, ge=1, le=86_400)
    quota_key_prefix: str = Field(default="", max_length=64, pattern=r"^[^{}]*$")
    quota_flush_interval_seconds: float = Field(default=1.0, gt=0)
    # PostgreSQL: how often each API and worker process rolls stored usage up into the
    # daily rollups (one at a time; readers add what is not rolled up yet, so figures are
    # exact either way: this bounds how many raw events a statistic has to add).
    usage_rollup_interval_seconds: float = Field(default=1.0, gt=0)
    # API key -> actor cache per process; a key revoked elsewhere works up to this long.
    auth_cache_seconds: float = Field(default=10.0, ge=0)
    # Requests per API key (GCRA): `per_minute` on average, up to `burst` at once (0 = a
    # minute's worth); 0 disables. Operator keys have their own rate, unlimited by default (a
    # gateway may send every account's traffic with one). In Redis when configured.
    api_rate_limit_per_minute: int = Field(default=6000, ge=0)
    api_rate_limit_burst: int = Field(default=0, ge=0)
    api_rate_limit_operator_per_minute: int = Field(default=0, ge=0)
    # Request bodies over these sizes are refused with 413 before they are read: /usage/batch
    # (a 1,000-event batch with ~6 metadata fields per event is about 610 KB), and the rest.
    max_batch_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # A generated invoice stays a draft this long (late usage is included), then is
    # finalized by a job; 0 = finalized at once.
    invoice_finalize_after_seconds: float = Field(default=3600.0, ge=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        explicit = os.environ.get(CONFIG_FILE_ENV)
        toml_file = Path(explicit or DEFAULT_CONFIG_FILE)
        # Only the default file may be absent: a mistyped explicit path must not
        # silently fall back to defaults.
        if explicit and not toml_file.is_file():
            raise FileNotFoundError(f"{CONFIG_FILE_ENV} points to a missing file: {toml_file}")
        toml_settings = TomlConfigSettingsSource(settings_cls, toml_file=toml_file)
        return init_settings, env_settings, dotenv_settings, toml_settings

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in _LOG_LEVELS:
            raise ValueError(f"log_level must be one of {sorted(_LOG_LEVELS)}")
        return level

    @field_validator("encryption_key")
    @classmethod
    def _check_encryption_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip():
            SecretBox(value.get_secret_value().strip())  # a ValueError that never shows it
        return value

    def secret_box(self) -> SecretBox | None:
        """The at-rest cipher of `encryption_key`, or None when no key is set."""
        if not _has(self.encryption_key):
            return None
        assert self.encryption_key is not None
        return SecretBox(self.encryption_key.get_secret_value().strip())

    @model_validator(mode="after")
    def _check_environment(self) -> BillingConfig:
        problems = (
            _production_problems(self)
            if self.environment == "production"
            else _non_production_problems(self)
        )
        if problems:
            raise ValueError(f"invalid {self.environment} config: " + "; ".join(problems))
        return self

    @field_serializer("database_url", "database_replica_url", when_used="json")
    def _dump_database_url(self, value: str | None) -> str | None:
        return None if value is None else redacted_database_url(value)

    @field_serializer("redis_url", when_used="json")
    def _dump_redis_url(self, value: str | None) -> str | None:
        return None if value is None else _redact_url_password(value)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def run_embedded_worker(self) -> bool:
        """Whether `serve` should also run the job worker in-process."""
        if self.embedded_worker is None:
            return self.is_sqlite
        return self.embedded_worker

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if isinstance(value, str) and name in (
                "database_url",
                "database_replica_url",
            ):
                value = redacted_database_url(value)
            elif isinstance(value, str) and name == "redis_url":
                value = _redact_url_password(value)
            yield name, value


def redacted_database_url(url: str) -> str:
    """Return ``url`` with its password (if any) replaced by ``***``."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return _redact_url_password(url)
    if parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True)


def _redact_url_password(url: str) -> str:
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        return url
    if not has_password:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def _has(value: SecretStr | str | None) -> bool:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return bool(value and value.strip())


def _stripe_key_mode(
    key: SecretStr | None,
) -> Literal["live", "test", "unknown"] | None:
    if key is None:
        return None
    raw = key.get_secret_value()
    if raw.startswith(_STRIPE_LIVE_PREFIXES):
        return "live"
    if raw.startswith(_STRIPE_TEST_PREFIXES):
        return "test"
    return "unknown"


_STRIPE_LIVE = "https://api.stripe.com"
_PAYPAL_LIVE = "https://api-m.paypal.com"


def _production_problems(config: BillingConfig) -> list[str]:
    problems: list[str] = []
    # The default, a SQLite file relative to the working directory, is for trying the service;
    # real money goes where the operator said (any source counts: init, env, .env, TOML). A
    # SQLite URL given on purpose is accepted.
    if "database_url" not in config.model_fields_set or not config.database_url.strip():
        problems.append(
            "database_url must be set in production (not the default SQLite file under ./var)"
        )
    admin_key = config.admin_key.get_secret_value() if config.admin_key else None
    if admin_key is not None and len(admin_key) < MIN_ADMIN_KEY_LENGTH:
        problems.append(f"admin_key must be at least {MIN_ADMIN_KEY_LENGTH} characters")
    if not config.encryption_enabled:
        problems.append("encryption_enabled must be true in production")
    if config.notifications_allow_private_targets:
        problems.append("notifications_allow_private_targets is for tests; not in production")
    problems += _encryption_problems(config)
    stripe, paypal = config.stripe, config.paypal
    if stripe.enabled:
        mode = _stripe_key_mode(stripe.api_key) if _has(stripe.api_key) else None
        if mode is None:
            problems.append("stripe.api_key is required when stripe is enabled")
        elif mode == "test":
            problems.append("stripe.api_key is a test key (sk_test_/rk_test_); use a live key")
        elif mode == "unknown":
            problems.append("stripe.api_key is not a live key (expected sk_live_/rk_live_)")
        if not _has(stripe.webhook_secret):
            problems.append("stripe.webhook_secret is required when stripe is enabled")
        if stripe.sandbox:
            problems.append("stripe.sandbox must be false in production")
        if stripe.api_base and stripe.api_base.rstrip("/") != _STRIPE_LIVE:
            # The live secret key would go to that host.
            problems.append(f"stripe.api_base is for tests; in production only {_STRIPE_LIVE}")
    if paypal.enabled:
        if not _has(paypal.webhook_secret):
            problems.append("paypal.webhook_secret (the webhook id) is required when paypal is on")
        if not _has(paypal.client_id):
            problems.append("paypal.client_id is required when paypal is enabled")
        if not _has(paypal.client_secret):
            problems.append("paypal.client_secret is required when paypal is enabled")
        if paypal.sandbox:
            problems.append("paypal.sandbox must be false in production")
        if paypal.api_base and paypal.api_base.rstrip("/") != _PAYPAL_LIVE:
            # E.g. PayPal's sandbox host: production would run on test credentials.
            problems.append(f"paypal.api_base is for tests; in production only {_PAYPAL_LIVE}")
        if paypal.webhook_cert_hosts:
            problems.append("paypal.webhook_cert_hosts is for tests; not allowed in production")
    return problems


def _encryption_problems(config: BillingConfig) -> list[str]:
    if config.encryption_enabled and not _has(config.encryption_key):
        return ["encryption_key (a Fernet key) is required when encryption_enabled is true"]
    return []


def _non_production_problems(config: BillingConfig) -> list[str]:
    problems: list[str] = _encryption_problems(config)
    env = config.environment
    # A live key has no business in a non-production config, even with Stripe switched off.
    if _stripe_key_mode(config.stripe.api_key) == "live":
        problems.append(f"stripe.api_key is a live key (sk_live_/rk_live_); not allowed in {env}")
    for name, provider in (("stripe", config.stripe), ("paypal", config.paypal)):
        if provider.enabled and not provider.sandbox:
            problems.append(f"{name}.sandbox must be true in {env}")
    return problems
