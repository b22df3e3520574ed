"""Accounts, members and API keys as the API reads and returns them.

The rules on an account's fields (name, email, currency, tax rate, exemption) are the types
below; AccountCreate and AccountUpdate (and the CLI, through AccountCreate) share them.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Literal, Self

from babel.core import get_global
from babel.numbers import get_currency_name
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict

from aihub_billing.kit.money import JsonDecimal, normalize_currency


@lru_cache(maxsize=1)
def _tender_currencies() -> frozenset[str]:
    """Codes that some territory has as legal tender with no end date, in Babel's CLDR data:
    what money is in use today. Leaves out what ISO 4217 lists but nobody pays in (XXX no
    currency, XTS testing, XAU/XAG/XPT/XPD metals, XDR/XSU/XUA units of account, USN/CHE/…
    fund codes) and currencies that were replaced (VEF, HRK, DEM, ZWL, …)."""
    return frozenset(
        code
        for rows in get_global("territory_currencies").values()
        for code, _start, end, tender in rows
        if tender and end is None
    )


def tender_currency(code: str) -> str:
    """The upper-cased ISO 4217 code if it is current legal tender (see _tender_currencies):
    an account's invoices, payments and balance are all in it, for as long as it exists."""
    upper = normalize_currency(code)  # malformed or unknown: its own message
    if upper not in _tender_currencies():
        name = get_currency_name(upper, locale="en")
        raise ValueError(f"{upper} ({name}) is not legal tender in use: choose a current currency")
    return upper


def _blank_refused(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise ValueError("must not be blank")
    return stripped


def canonical_rate(value: Decimal | None) -> Decimal | None:
    """One spelling per rate: no trailing zeros (0.190000 is 0.19, as PostgreSQL's NUMERIC(9, 6)
    gives it back), and every zero is 0 (not -0, 0E+3 or 0.000000)."""
    if value is None:
        return None
    if value == 0:
        return Decimal(0)
    return value.normalize()


# Blanks around the name are dropped; a name of blanks only is refused. The length is that of
# what was sent (the column's 200), as before.
AccountName = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_blank_refused)]
Email = Annotated[str, Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]
TenderCurrency = Annotated[str, AfterValidator(tender_currency)]
# [0, 1) with at most 6 places (NUMERIC(9, 6)); None = the configured default rate.
TaxRate = Annotated[
    JsonDecimal, Field(ge=0, lt=1, decimal_places=6), AfterValidator(canonical_rate)
]


def _exempt_without_rate(tax_exempt: bool | None, tax_rate: Decimal | None) -> None:
    """An exempt account pays no tax whatever its rate: a rate sent with the exemption says
    two things at once, so it is refused rather than stored unused."""
    if tax_exempt and tax_rate is not None:
        raise ValueError(
            "tax_exempt true with a tax_rate: an exempt account has no rate (send tax_rate null)"
        )


class AccountCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: AccountName
    email: Email | None = None
    currency: TenderCurrency | None = Field(
        default=None, description="ISO 4217, current legal tender; default from config"
    )
    tax_rate: TaxRate | None = Field(default=None, description="None = default rate")
    tax_exempt: StrictBool = False  # 0 and 1 are not booleans

    @model_validator(mode="after")
    def _tax(self) -> Self:
        _exempt_without_rate(self.tax_exempt, self.tax_rate)
        return self


def _not_nullable(schema: JsonDict) -> None:
    """The OpenAPI of a field that may be left out but not sent as null."""
    branches = schema.pop("anyOf", [])
    assert isinstance(branches, list)
    [branch] = [b for b in branches if isinstance(b, dict) and b.get("type") != "null"]
    schema.update(branch)
    schema.pop("default", None)


class AccountUpdate(BaseModel):
    """Only the fields sent change; `email` and `tax_rate` may be set to null (no email, the
    default rate). The currency is not here: amounts already recorded are in it."""

    model_config = ConfigDict(extra="forbid")

    name: AccountName | None = Field(default=None, json_schema_extra=_not_nullable)
    email: Email | None = None
    tax_rate: TaxRate | None = Field(default=None, description="None = default rate")
    tax_exempt: StrictBool | None = Field(default=None, json_schema_extra=_not_nullable)

    @model_validator(mode="before")
    @classmethod
    def _currency_stays(cls, data: object) -> object:
        if isinstance(data, dict) and "currency" in data:
            raise ValueError(
                "currency cannot change: the account's invoices, payments and balance are in"
                " it (a new account takes another currency)"
            )
        return data

    @field_validator("name", "tax_exempt", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:  # only when sent: defaults are not validated
            raise ValueError("may be left out but not null")
        return value

    @model_validator(mode="after")
    def _tax(self) -> Self:
        _exempt_without_rate(self.tax_exempt, self.tax_rate)
        return self

    def changes(self) -> dict[str, object]:
        """The fields sent, by name."""
        return self.model_dump(exclude_unset=True)


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

    @field_validator("tax_rate")
    @classmethod
    def _rate(cls, value: Decimal | None) -> Decimal | None:
        return canonical_rate(value)


class MemberCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
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
