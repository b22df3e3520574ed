"""Quota: per-account overrides of plan limits, recorded violations, notification targets."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from aihub_billing.models.base import Base, JSONType, id_column


class QuotaOverride(Base):
    """Per-account limits that replace the plan's; NULL = take the plan's value."""

    __tablename__ = "quota_overrides"
    __table_args__ = (
        CheckConstraint("calls_policy IN ('block', 'bill')", name="calls_policy"),
        CheckConstraint("tokens_policy IN ('block', 'bill')", name="tokens_policy"),
    )

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    # Until subscriptions land, the plan an account is on (NULL = the free plan).
    plan_code: Mapped[str | None] = mapped_column(String(64))
    included_api_calls: Mapped[int | None] = mapped_column(BigInteger)
    included_tokens: Mapped[int | None] = mapped_column(BigInteger)
    rpm_limit: Mapped[int | None] = mapped_column(Integer)
    tpm_limit: Mapped[int | None] = mapped_column(BigInteger)
    concurrency_limit: Mapped[int | None] = mapped_column(Integer)
    calls_policy: Mapped[str | None] = mapped_column(String(8))
    tokens_policy: Mapped[str | None] = mapped_column(String(8))
    allowed_models: Mapped[list[str] | None] = mapped_column(JSONType)
    # Default cap of every member / API key of the account, and caps of named ones.
    member_calls_limit: Mapped[int | None] = mapped_column(BigInteger)
    member_tokens_limit: Mapped[int | None] = mapped_column(BigInteger)
    member_caps: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # Percentages of a monthly limit that notify (NULL = the configured default).
    thresholds: Mapped[list[int] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class QuotaViolation(Base):
    """A check refused (`blocked`) or admitted past a `bill` limit (`billed`)."""

    __tablename__ = "quota_violations"
    __table_args__ = (
        CheckConstraint("action IN ('blocked', 'billed')", name="action"),
        Index("ix_quota_violations_account_at", "account_id", "at"),
    )

    id: Mapped[str] = id_column()
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    member_id: Mapped[str | None] = mapped_column(String(40))
    api_key_id: Mapped[str | None] = mapped_column(String(40))
    limit_name: Mapped[str] = mapped_column(String(32))
    limit_value: Mapped[int] = mapped_column(BigInteger)
    attempted: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(8))
    model: Mapped[str | None] = mapped_column(String(200))
    at: Mapped[datetime]


class QuotaNotificationTarget(Base):
    """Where an account's threshold notifications go: a signed webhook and/or an email."""

    __tablename__ = "quota_notification_targets"

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    # Signs every delivery (HMAC-SHA256); shown once, when set. With encryption on it is
    # stored as `enc:v1:<Fernet token>` (kit.secretbox, ~170 characters); older rows are
    # plaintext until next set.
    webhook_secret: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
