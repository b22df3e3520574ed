"""aihub_billing.config: sources, per-environment validation, secret hiding."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from aihub_billing.config import (
    BillingConfig,
    PaymentProviderConfig,
    PricingConfig,
    redacted_database_url,
)

SECRET = "s3cr3t-DO-NOT-LEAK-7f3a9c"
# A Fernet key (encryption_key): 32 bytes, url-safe base64.
ENCRYPTION_KEY = "c0tTZWNyZXQtRE8tTk9ULUxFQUstN2YzYTljLWFiY2Q="


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.upper().startswith("AIHUB_BILLING_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- seed examples (verbatim) -------------------------------------------------


def test_seed_development_example() -> None:
    billing_config = BillingConfig(
        enabled=True,
        environment="development",
        stripe=PaymentProviderConfig(enabled=True, api_key="sk_test_...", sandbox=True),
        paypal=PaymentProviderConfig(enabled=False, sandbox=True),
        pricing=PricingConfig(currency="USD", tax_rate=0.08),
    )
    assert billing_config.environment == "development"
    assert billing_config.pricing.tax_rate == Decimal("0.08")
    assert str(billing_config.pricing.tax_rate) == "0.08"
    assert billing_config.stripe.api_key is not None
    assert billing_config.stripe.api_key.get_secret_value() == "sk_test_..."


def test_seed_production_example(monkeypatch: pytest.MonkeyPatch) -> None:
    # The at-rest key comes from the environment (or a secrets file), never from code.
    monkeypatch.setenv("AIHUB_BILLING_ENCRYPTION_KEY", ENCRYPTION_KEY)
    # So does the database: production refuses the default SQLite file under ./var.
    monkeypatch.setenv("AIHUB_BILLING_DATABASE_URL", PROD_DATABASE_URL)
    billing_config = BillingConfig(
        enabled=True,
        environment="production",
        stripe=PaymentProviderConfig(
            enabled=True,
            api_key="sk_live_...",
            webhook_secret="whsec_...",
            sandbox=False,
        ),
        encryption_enabled=True,
        notifications_enabled=True,
    )
    assert billing_config.environment == "production"
    assert billing_config.stripe.enabled and not billing_config.stripe.sandbox
    assert not billing_config.paypal.enabled


# --- defaults and helpers -------------------------------------------------------


def test_defaults_need_no_configuration() -> None:
    config = BillingConfig()
    assert config.environment == "development"
    assert config.is_sqlite
    assert config.run_embedded_worker()
    assert config.quota_fail_mode == "fail_closed"
    assert config.pricing.currency == "USD"
    assert config.pricing.tax_rate == Decimal("0")
    assert not config.stripe.enabled and not config.paypal.enabled
    assert config.stripe is not BillingConfig().stripe


@pytest.mark.parametrize(
    ("database_url", "embedded_worker", "expected"),
    [
        ("sqlite+aiosqlite:///./x.db", None, True),
        ("postgresql+asyncpg://u@h/db", None, False),
        ("postgresql+asyncpg://u@h/db", True, True),
        ("sqlite+aiosqlite:///./x.db", False, False),
    ],
)
def test_run_embedded_worker(
    database_url: str, embedded_worker: bool | None, expected: bool
) -> None:
    config = BillingConfig(database_url=database_url, embedded_worker=embedded_worker)
    assert config.run_embedded_worker() is expected


def test_log_level_is_normalised_and_checked() -> None:
    assert BillingConfig(log_level="debug").log_level == "DEBUG"
    with pytest.raises(ValidationError, match="log_level"):
        BillingConfig(log_level="chatty")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"jobs_poll_interval_seconds": 0},
        {"jobs_max_attempts": 0},
        {"idempotency_ttl_hours": 0},
        {"quota_fail_mode": "maybe"},
        {"environment": "prod"},
        {"stripe": {"timeout_seconds": 0}},
        {"paypal": {"max_retries": 11}},
    ],
)
def test_field_constraints(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        BillingConfig(**kwargs)


# --- per-environment validation -----------------------------------------------

STRIPE_LIVE = {
    "enabled": True,
    "api_key": "sk_live_x",
    "webhook_secret": "whsec_x",
    "sandbox": False,
}
PAYPAL_LIVE = {
    "enabled": True,
    "client_id": "cid",
    "client_secret": "csecret",
    "webhook_secret": "WH-123",
    "sandbox": False,
}
PROD_DATABASE_URL = "postgresql+asyncpg://billing@db.internal:5432/billing"
PROD = {
    "environment": "production",
    "database_url": PROD_DATABASE_URL,
    "encryption_enabled": True,
    "encryption_key": ENCRYPTION_KEY,
}
# PROD but for the database URL, to be given by another source (or not at all).
PROD_NO_DATABASE = {k: v for k, v in PROD.items() if k != "database_url"}

REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    (
        "prod-stripe-sk-test",
        {**PROD, "stripe": {**STRIPE_LIVE, "api_key": "sk_test_x"}},
        "test key",
    ),
    (
        "prod-stripe-rk-test",
        {**PROD, "stripe": {**STRIPE_LIVE, "api_key": "rk_test_x"}},
        "test key",
    ),
    (
        "prod-stripe-unknown-key",
        {**PROD, "stripe": {**STRIPE_LIVE, "api_key": "oops"}},
        "not a live key",
    ),
    (
        "prod-stripe-no-key",
        {**PROD, "stripe": {**STRIPE_LIVE, "api_key": None}},
        "stripe.api_key",
    ),
    (
        "prod-stripe-empty-key",
        {**PROD, "stripe": {**STRIPE_LIVE, "api_key": ""}},
        "stripe.api_key",
    ),
    (
        "prod-stripe-no-webhook",
        {**PROD, "stripe": {**STRIPE_LIVE, "webhook_secret": None}},
        "stripe.webhook_secret",
    ),
    (
        "prod-stripe-sandbox",
        {**PROD, "stripe": {**STRIPE_LIVE, "sandbox": True}},
        "stripe.sandbox",
    ),
    (
        "prod-paypal-sandbox",
        {**PROD, "paypal": {**PAYPAL_LIVE, "sandbox": True}},
        "paypal.sandbox",
    ),
    (
        "prod-paypal-no-webhook-id",
        {**PROD, "paypal": {**PAYPAL_LIVE, "webhook_secret": None}},
        "paypal.webhook_secret",
    ),
    (
        "prod-paypal-no-client-id",
        {**PROD, "paypal": {**PAYPAL_LIVE, "client_id": None}},
        "paypal.client_id",
    ),
    (
        "prod-paypal-no-client-secret",
        {**PROD, "paypal": {**PAYPAL_LIVE, "client_secret": None}},
        "paypal.client_secret",
    ),
    (
        "prod-stripe-api-base-elsewhere",  # the live key would go to that host
        {**PROD, "stripe": {**STRIPE_LIVE, "api_base": "http://127.0.0.1:12111"}},
        "stripe.api_base",
    ),
    (
        "prod-paypal-api-base-sandbox",  # production on sandbox credentials
        {**PROD, "paypal": {**PAYPAL_LIVE, "api_base": "https://api-m.sandbox.paypal.com"}},
        "paypal.api_base",
    ),
    ("prod-no-encryption", {**PROD, "encryption_enabled": False}, "encryption_enabled"),
    ("prod-no-encryption-key", {**PROD, "encryption_key": None}, "encryption_key"),
    ("prod-empty-encryption-key", {**PROD, "encryption_key": " "}, "encryption_key"),
    (
        "prod-private-webhook-targets",
        {**PROD, "notifications_allow_private_targets": True},
        "notifications_allow_private_targets",
    ),
    *[
        (
            f"{env}-encryption-without-key",
            {"environment": env, "encryption_enabled": True},
            "encryption_key",
        )
        for env in ("development", "test", "staging")
    ],
    ("bad-encryption-key", {"encryption_key": "not-a-fernet-key"}, "Fernet key"),
    ("prod-short-admin-key", {**PROD, "admin_key": "admin"}, "admin_key must be at least 32"),
    ("prod-default-database-url", PROD_NO_DATABASE, "database_url must be set in production"),
    ("prod-blank-database-url", {**PROD, "database_url": " "}, "database_url must be set"),
    ("dev-live-key-while-disabled", {"stripe": {"api_key": "sk_live_x"}}, "live key"),
    *[
        (
            f"{env}-stripe-{key[:7]}",
            {"environment": env, "stripe": {"enabled": True, "api_key": key}},
            "live key",
        )
        for env in ("development", "test", "staging")
        for key in ("sk_live_x", "rk_live_x")
    ],
    *[
        (
            f"{env}-{provider}-not-sandbox",
            {"environment": env, provider: {"enabled": True, "sandbox": False}},
            f"{provider}.sandbox",
        )
        for env in ("development", "test", "staging")
        for provider in ("stripe", "paypal")
    ],
]


@pytest.mark.parametrize(("kwargs", "message"), [pytest.param(k, m, id=i) for i, k, m in REFUSALS])
def test_refusals(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        BillingConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({**PROD, "stripe": STRIPE_LIVE, "paypal": PAYPAL_LIVE}, id="prod-both-live"),
        pytest.param(
            {
                **PROD,
                "stripe": {**STRIPE_LIVE, "api_base": "https://api.stripe.com/"},
                "paypal": {**PAYPAL_LIVE, "api_base": "https://api-m.paypal.com"},
            },
            id="prod-api-base-the-live-hosts",
        ),
        pytest.param(
            {**PROD, "stripe": {"api_key": "sk_test_x"}, "paypal": {"sandbox": True}},
            id="prod-disabled-not-checked",
        ),
        # An operator may knowingly run one process on a SQLite file: only the default is refused.
        pytest.param(
            {**PROD, "database_url": "sqlite+aiosqlite:////var/lib/aihub/billing.db"},
            id="prod-explicit-sqlite",
        ),
        pytest.param(
            {"environment": "test", "stripe": {"enabled": True, "api_key": "sk_fake"}},
            id="test-fake-key",
        ),
        pytest.param(
            {
                "environment": "staging",
                "stripe": {"enabled": True, "api_key": "rk_test_x"},
            },
            id="staging-restricted-test-key",
        ),
    ],
)
def test_accepted(kwargs: dict[str, Any]) -> None:
    BillingConfig(**kwargs)


def test_encryption_and_private_webhook_targets_from_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = BillingConfig()
    assert not config.encryption_enabled and config.encryption_key is None
    assert config.notifications_allow_private_targets is False
    assert config.secret_box() is None
    monkeypatch.setenv("AIHUB_BILLING_ENCRYPTION_ENABLED", "true")
    monkeypatch.setenv("AIHUB_BILLING_ENCRYPTION_KEY", ENCRYPTION_KEY)
    monkeypatch.setenv("AIHUB_BILLING_NOTIFICATIONS_ALLOW_PRIVATE_TARGETS", "true")
    config = BillingConfig(environment="test")
    assert config.encryption_enabled and config.notifications_allow_private_targets
    box = config.secret_box()
    assert box is not None and box.open(box.seal("whsec_x")) == "whsec_x"


def test_the_encryption_key_is_hidden() -> None:
    config = BillingConfig(encryption_enabled=True, encryption_key=ENCRYPTION_KEY)
    for text in (repr(config), str(config), config.model_dump_json(), repr(config.secret_box())):
        assert ENCRYPTION_KEY[:12] not in text
    with pytest.raises(ValidationError) as excinfo:
        BillingConfig(encryption_key=ENCRYPTION_KEY[:-4] + "!!!!")
    assert ENCRYPTION_KEY[:12] not in str(excinfo.value)


# --- sources ------------------------------------------------------------------


def test_env_vars_override_including_nested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIHUB_BILLING_ENVIRONMENT", "test")
    monkeypatch.setenv("AIHUB_BILLING_STRIPE__ENABLED", "true")
    monkeypatch.setenv("AIHUB_BILLING_STRIPE__API_KEY", "sk_test_env")
    monkeypatch.setenv("AIHUB_BILLING_PRICING__TAX_RATE", "0.2")
    monkeypatch.setenv("AIHUB_BILLING_PRICING__CURRENCY", "eur")
    monkeypatch.setenv("AIHUB_BILLING_ADMIN_KEY", "adm")
    config = BillingConfig()
    assert config.environment == "test"
    assert config.stripe.enabled
    assert config.stripe.api_key is not None
    assert config.stripe.api_key.get_secret_value() == "sk_test_env"
    assert config.pricing.tax_rate == Decimal("0.2")
    assert config.pricing.currency == "EUR"
    assert config.admin_key is not None and config.admin_key.get_secret_value() == "adm"


def test_dotenv_file(isolated_env: Path) -> None:
    (isolated_env / ".env").write_text(
        "AIHUB_BILLING_LOG_LEVEL=warning\n"
        "AIHUB_BILLING_PAYPAL__CLIENT_ID=pp-client\n"
        "UNRELATED_VARIABLE=1\n"
    )
    config = BillingConfig()
    assert config.log_level == "WARNING"
    assert config.paypal.client_id == "pp-client"


def test_toml_file_from_env_var(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = isolated_env / "etc" / "billing.toml"
    path.parent.mkdir()
    path.write_text(
        'redis_url = "redis://localhost:6379/0"\n'
        "[stripe]\n"
        "enabled = true\n"
        'api_key = "sk_test_toml"\n'
        "[pricing]\n"
        'currency = "gbp"\n'
        "tax_rate = 0.07\n"
    )
    monkeypatch.setenv("AIHUB_BILLING_CONFIG_FILE", str(path))
    config = BillingConfig()
    assert config.redis_url == "redis://localhost:6379/0"
    assert config.stripe.enabled
    assert config.stripe.api_key is not None
    assert config.stripe.api_key.get_secret_value() == "sk_test_toml"
    assert config.pricing.currency == "GBP"
    assert config.pricing.tax_rate == Decimal("0.07")


@pytest.mark.parametrize("source", ["env", "dotenv", "toml", "toml-from-env-var"])
def test_production_database_url_counts_from_every_source(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    line = f"AIHUB_BILLING_DATABASE_URL={PROD_DATABASE_URL}\n"
    toml = f'database_url = "{PROD_DATABASE_URL}"\n'
    if source == "env":
        monkeypatch.setenv("AIHUB_BILLING_DATABASE_URL", PROD_DATABASE_URL)
    elif source == "dotenv":
        (isolated_env / ".env").write_text(line)
    elif source == "toml":
        (isolated_env / "aihub-billing.toml").write_text(toml)
    else:
        (isolated_env / "billing.toml").write_text(toml)
        monkeypatch.setenv("AIHUB_BILLING_CONFIG_FILE", str(isolated_env / "billing.toml"))
    assert BillingConfig(**PROD_NO_DATABASE).database_url == PROD_DATABASE_URL


def test_default_toml_file_in_working_directory(isolated_env: Path) -> None:
    (isolated_env / "aihub-billing.toml").write_text('log_level = "ERROR"\n')
    assert BillingConfig().log_level == "ERROR"


def test_explicit_missing_toml_file_is_an_error(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIHUB_BILLING_CONFIG_FILE", str(isolated_env / "nope.toml"))
    with pytest.raises(FileNotFoundError, match="AIHUB_BILLING_CONFIG_FILE"):
        BillingConfig()


def test_precedence_init_env_dotenv_toml(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (isolated_env / "aihub-billing.toml").write_text(
        "jobs_max_attempts = 4\n"
        "idempotency_ttl_hours = 4\n"
        "jobs_poll_interval_seconds = 4.0\n"
        'log_level = "DEBUG"\n'
        "[stripe]\n"
        "max_retries = 4\n"
        "timeout_seconds = 4.0\n"
    )
    (isolated_env / ".env").write_text(
        "AIHUB_BILLING_JOBS_MAX_ATTEMPTS=3\n"
        "AIHUB_BILLING_IDEMPOTENCY_TTL_HOURS=3\n"
        "AIHUB_BILLING_JOBS_POLL_INTERVAL_SECONDS=3.0\n"
        "AIHUB_BILLING_STRIPE__MAX_RETRIES=3\n"
    )
    monkeypatch.setenv("AIHUB_BILLING_JOBS_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("AIHUB_BILLING_IDEMPOTENCY_TTL_HOURS", "2")
    config = BillingConfig(jobs_max_attempts=1)
    assert config.jobs_max_attempts == 1  # init beats env, .env, toml
    assert config.idempotency_ttl_hours == 2  # env beats .env, toml
    assert config.jobs_poll_interval_seconds == 3.0  # .env beats toml
    assert config.log_level == "DEBUG"  # toml beats defaults
    # nested tables merge field by field across sources
    assert config.stripe.max_retries == 3
    assert config.stripe.timeout_seconds == 4.0


# --- pricing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.08, "0.08"),
        (0.1, "0.1"),
        (0.07, "0.07"),
        (0.0725, "0.0725"),
        ("0.19", "0.19"),
        (0, "0"),
        (Decimal("0.2"), "0.2"),
    ],
)
def test_tax_rate_is_exact_decimal(value: Any, expected: str) -> None:
    rate = PricingConfig(tax_rate=value).tax_rate
    assert isinstance(rate, Decimal)
    assert rate == Decimal(expected)
    assert str(rate) == expected


@pytest.mark.parametrize("value", [1, 1.5, -0.01, True, float("nan"), "abc"])
def test_tax_rate_out_of_range_refused(value: Any) -> None:
    with pytest.raises(ValidationError, match="tax_rate"):
        PricingConfig(tax_rate=value)


def test_currency_is_upper_cased() -> None:
    assert PricingConfig(currency="jpy").currency == "JPY"


@pytest.mark.parametrize("value", ["", "US", "dollars", "ZZZ"])
def test_bad_currency_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="currency"):
        PricingConfig(currency=value)


# --- secrets --------------------------------------------------------------------


def _config_full_of_secrets() -> BillingConfig:
    return BillingConfig(
        environment="test",
        database_url=f"postgresql+asyncpg://billing:{SECRET}@db.internal:5432/billing",
        database_replica_url=f"postgresql+asyncpg://reader:{SECRET}@replica:5432/billing",
        redis_url=f"redis://:{SECRET}@cache:6379/0",
        admin_key=SECRET,
        stripe=PaymentProviderConfig(
            enabled=True, api_key=f"sk_test_{SECRET}", webhook_secret=f"whsec_{SECRET}"
        ),
        paypal=PaymentProviderConfig(
            enabled=True,
            client_id="client",
            client_secret=SECRET,
            webhook_secret=SECRET,
        ),
    )


def test_secrets_hidden_in_repr_and_str() -> None:
    config = _config_full_of_secrets()
    for text in (repr(config), str(config), repr(config.stripe), str(config.paypal)):
        _assert_hidden(text)
    assert "db.internal" in repr(config)  # redacted, not dropped
    # the real values stay usable by the code that needs them
    assert SECRET in config.database_url
    assert config.admin_key is not None and config.admin_key.get_secret_value() == SECRET


def test_secrets_hidden_in_json_dump() -> None:
    config = _config_full_of_secrets()
    dumped = config.model_dump_json()
    _assert_hidden(dumped)
    data = json.loads(dumped)
    assert data["database_url"] == "postgresql+asyncpg://billing:***@db.internal:5432/billing"
    assert data["redis_url"] == "redis://:***@cache:6379/0"


def _assert_hidden(text: str) -> None:
    # pydantic truncates long inputs, so look for the secret's prefix, not all of it
    assert SECRET[:6] not in text


@pytest.mark.parametrize(
    "build",
    [
        # Without hide_input_in_errors each of these echoes (part of) the secret.
        pytest.param(
            lambda: BillingConfig(
                admin_key=SECRET, environment="production", encryption_enabled=False
            ),
            id="model-validator-message",
        ),
        pytest.param(lambda: BillingConfig(stripe=f"sk_live_{SECRET}"), id="key-as-model"),
        pytest.param(lambda: PaymentProviderConfig.model_validate(SECRET), id="sub-model"),
        pytest.param(lambda: PaymentProviderConfig(client_secret=[SECRET]), id="sub-model-field"),
        pytest.param(lambda: BillingConfig(jobs_max_attempts=f"{SECRET}"), id="wrong-type"),
    ],
)
def test_secrets_hidden_in_validation_errors(build: Any) -> None:
    with pytest.raises(ValidationError) as excinfo:
        build()
    _assert_hidden(str(excinfo.value))
    _assert_hidden(repr(excinfo.value))


def test_secret_from_toml_hidden_in_validation_errors(isolated_env: Path) -> None:
    # a common slip: the key written where the [stripe] table belongs
    (isolated_env / "aihub-billing.toml").write_text(f'stripe = "sk_live_{SECRET}"\n')
    with pytest.raises(ValidationError) as excinfo:
        BillingConfig()
    assert "stripe" in str(excinfo.value)
    _assert_hidden(str(excinfo.value))


def test_secret_from_env_hidden_in_validation_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIHUB_BILLING_ADMIN_KEY", SECRET)
    monkeypatch.setenv("AIHUB_BILLING_STRIPE__API_KEY", f"sk_live_{SECRET}")
    monkeypatch.setenv("AIHUB_BILLING_STRIPE__ENABLED", "true")
    with pytest.raises(ValidationError) as excinfo:
        BillingConfig()
    assert "live key" in str(excinfo.value)
    _assert_hidden(str(excinfo.value))


# --- URL redaction --------------------------------------------------------------


def test_api_key_secrets_hidden_in_reprs() -> None:
    from aihub_billing.auth.keys import issue_secret
    from aihub_billing.service import Bootstrap

    issued = issue_secret()
    assert issued.secret not in repr(issued)
    started = Bootstrap(admin_key_id="key_x", admin_secret=issued.secret)
    assert issued.secret not in repr(started)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+asyncpg://u:pw@h:5432/db", "postgresql+asyncpg://u:***@h:5432/db"),
        ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        (
            "sqlite+aiosqlite:///./var/aihub_billing.db",
            "sqlite+aiosqlite:///./var/aihub_billing.db",
        ),
        ("not a url", "not a url"),
    ],
)
def test_redacted_database_url(url: str, expected: str) -> None:
    assert redacted_database_url(url) == expected


@pytest.mark.parametrize(
    ("redis_url", "expected"),
    [
        ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://user:pw@cache:6380/1", "rediss://user:***@cache:6380/1"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
    ],
)
def test_redis_password_redacted_in_repr(redis_url: str, expected: str) -> None:
    assert f"redis_url='{expected}'" in repr(BillingConfig(redis_url=redis_url))
