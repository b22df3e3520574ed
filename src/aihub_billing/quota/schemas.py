"""Quota checks, reservations, status, overrides, violations and notification targets."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

Policy = Literal["block", "bill"]
Id = Annotated[str, Field(min_length=1, max_length=40)]


class QuotaCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200)
    estimated_tokens: int = Field(strict=True, default=0, ge=0, le=10**9)
    member_id: Id | None = Field(default=None, description="whose sub-cap applies")
    user_id: Id | None = Field(default=None, description="alias of member_id (seed name)")
    account_id: Id | None = Field(default=None, description="operator keys only")


class RateLimitState(BaseModel):
    limit: int | None
    used: int
    remaining: int | None
    reset_seconds: float


class ConcurrencyState(BaseModel):
    limit: int | None
    in_flight: int


class RateLimits(BaseModel):
    window: Literal["fixed_minute"] = "fixed_minute"
    rpm: RateLimitState
    tpm: RateLimitState
    concurrency: ConcurrencyState


class QuotaCheckResult(BaseModel):
    reservation_id: str
    account_id: str
    admitted: bool = True
    overage: bool
    calls_overage: bool
    tokens_overage: bool
    reserved_tokens: int
    remaining_calls: int | None
    remaining_tokens: int | None
    reset_at: datetime
    expires_at: datetime
    # True when the counters were unreachable and quota_fail_mode=fail_open let it through.
    degraded: bool = False

    @classmethod
    def trusted(
        cls,
        reservation_id: str,
        account_id: str,
        calls_overage: bool,
        tokens_overage: bool,
        reserved_tokens: int,
        remaining_calls: int | None,
        remaining_tokens: int | None,
        reset_at: datetime,
        expires_at: datetime,
    ) -> QuotaCheckResult:
        """An admitted check's result from the values the service computed (typed): what
        model_construct makes, without its walk over every field's aliases and defaults,
        which cost more than the rest of a check's Python work (hot path)."""
        result = cls.__new__(cls)
        setattr_ = object.__setattr__
        setattr_(
            result,
            "__dict__",
            {
                "reservation_id": reservation_id,
                "account_id": account_id,
                "admitted": True,
                "overage": calls_overage or tokens_overage,
                "calls_overage": calls_overage,
                "tokens_overage": tokens_overage,
                "reserved_tokens": reserved_tokens,
                "remaining_calls": remaining_calls,
                "remaining_tokens": remaining_tokens,
                "reset_at": reset_at,
                "expires_at": expires_at,
                "degraded": False,
            },
        )
        setattr_(result, "__pydantic_fields_set__", set(_TRUSTED_FIELDS))
        setattr_(result, "__pydantic_extra__", None)
        setattr_(result, "__pydantic_private__", None)
        return result


# What model_construct would record as set: the fields passed, defaults excluded.
_TRUSTED_FIELDS = frozenset(QuotaCheckResult.model_fields) - {"admitted", "degraded"}


class ReservationCommit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actual_tokens: int = Field(strict=True, ge=0, le=10**9)
    account_id: Id | None = Field(default=None, description="operator keys only")


class ReservationRelease(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: Id | None = Field(default=None, description="operator keys only")


class Settlement(BaseModel):
    reservation_id: str
    reserved_tokens: int
    actual_tokens: int
    difference: int = Field(description="actual - reserved tokens; 0 on release")


class QuotaStatus(BaseModel):
    """The seed's quota_status, plus usage, limits and rate-limit state."""

    account_id: str
    plan_type: str
    remaining_calls: int | None
    remaining_tokens: int | None
    reset_at: datetime
    used_calls: int
    used_tokens: int
    limit_calls: int | None
    limit_tokens: int | None
    calls_policy: Policy
    tokens_policy: Policy
    rate_limits: RateLimits


class MemberCap(BaseModel):
    model_config = ConfigDict(extra="forbid")

    calls: int | None = Field(strict=True, default=None, ge=0, le=10**15)
    tokens: int | None = Field(strict=True, default=None, ge=0, le=10**18)


class QuotaOverrideUpdate(BaseModel):
    """Replaces the account's override; a null field takes the plan's value."""

    model_config = ConfigDict(extra="forbid")

    account_id: Id
    plan_code: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    included_api_calls: int | None = Field(strict=True, default=None, ge=0, le=10**15)
    included_tokens: int | None = Field(strict=True, default=None, ge=0, le=10**18)
    rpm_limit: int | None = Field(strict=True, default=None, ge=1, le=10**9)
    tpm_limit: int | None = Field(strict=True, default=None, ge=1, le=10**15)
    concurrency_limit: int | None = Field(strict=True, default=None, ge=1, le=10**6)
    calls_policy: Policy | None = None
    tokens_policy: Policy | None = None
    allowed_models: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=1000
    )
    member_calls_limit: int | None = Field(strict=True, default=None, ge=0, le=10**15)
    member_tokens_limit: int | None = Field(strict=True, default=None, ge=0, le=10**18)
    member_caps: dict[Id, MemberCap] | None = Field(
        default=None, max_length=10_000, description="caps per member id or API key id"
    )
    thresholds: list[Annotated[int, Field(strict=True, ge=1, le=1000)]] | None = Field(
        strict=True,
        default=None,
        max_length=10,
        description="percent of a monthly limit that notify",
    )

    @field_validator("thresholds")
    @classmethod
    def _sorted(cls, value: list[int] | None) -> list[int] | None:
        return sorted(set(value)) if value is not None else None


class QuotaOverride(QuotaOverrideUpdate):
    model_config = ConfigDict(from_attributes=True, extra="ignore")

    created_at: datetime
    updated_at: datetime


class Violation(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    account_id: str
    member_id: str | None
    api_key_id: str | None
    limit_name: str
    limit_value: int
    attempted: int
    action: Literal["blocked", "billed"]
    model: str | None
    at: datetime


class NotificationTargetUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    webhook_url: AnyHttpUrl | None = None
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")


class NotificationTarget(BaseModel):
    account_id: str
    webhook_url: str | None
    email: str | None
    has_webhook_secret: bool
    updated_at: datetime


class NotificationTargetSet(NotificationTarget):
    webhook_secret: str | None = Field(
        description="HMAC-SHA256 key of the AIHub-Signature header; shown only here"
    )
