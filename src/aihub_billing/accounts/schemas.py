"""Accounts, members and API keys as the API reads and returns them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from aihub_billing.kit.money import JsonDecimal, normalize_currency


class AccountCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    currency: str | None = Field(default=None, description="ISO 4217; default from config")
    # Stored as NUMERIC(9, 6): more places would be refused by the column, not here.
    tax_rate: JsonDecimal | None = Field(
        default=None, ge=0, lt=1, decimal_places=6, description="None = default rate"
    )
    tax_exempt: StrictBool = False  # 0 and 1 are not booleans

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str | None) -> str | None:
        return None if value is None else normalize_currency(value)


class Account(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    email: str | None
    currency: str
    tax_rate: JsonDecimal | None
    tax_exempt: bool
    status: str
    created_at: datetime


class MemberCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    name: str | None = Field(default=None, max_length=200)


class Member(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    account_id: str
    email: str
    name: str | None
    created_at: datetime


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["owner", "billing", "member"] = "member"
    name: str | None = Field(default=None, max_length=200)
    member_id: str | None = Field(default=None, description="Bind the key to a member")


class ApiKey(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    account_id: str | None
    member_id: str | None
    role: str
    name: str | None
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyIssued(ApiKey):
    secret: str = Field(description="Shown once; only a hash is stored")
