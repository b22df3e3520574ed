"""Test clocks as the API reads and returns them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aihub_billing.kit.clock import TimeInRange, ensure_utc


class _Aware(BaseModel):
    @field_validator("frozen_time", check_fields=False)
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return ensure_utc(value)


class TestClockCreate(_Aware):
    __test__ = False
    model_config = ConfigDict(extra="forbid")

    frozen_time: TimeInRange = Field(description="Aware timestamp the clock starts at")
    name: str | None = Field(default=None, max_length=200)


class TestClockAdvance(_Aware):
    __test__ = False
    model_config = ConfigDict(extra="forbid")

    frozen_time: TimeInRange = Field(description="Target time; not before the clock's time")


class TestClockAttach(BaseModel):
    __test__ = False
    model_config = ConfigDict(extra="forbid")

    account_id: str = Field(max_length=40)


class TestClock(BaseModel):
    __test__ = False
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str | None
    frozen_time: datetime
    created_at: datetime


class TestClockListed(TestClock):
    __test__ = False
    account_ids: list[str] = Field(description="The accounts on the clock's time")


class JobRan(BaseModel):
    name: str
    run_at: datetime = Field(description="The clock's time of this attempt")
    payload: dict[str, object]
    status: Literal["succeeded", "retrying", "dead"] = "succeeded"
    error: str | None = Field(default=None, description="Why the attempt failed")


class TestClockAdvanced(TestClock):
    __test__ = False
    jobs_run: list[JobRan]


class Attachment(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    account_id: str
    test_clock_id: str
    attached_at: datetime
