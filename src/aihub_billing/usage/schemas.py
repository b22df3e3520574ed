"""Usage events, batch results, statistics and model prices as the API reads and returns them."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, NotRequired, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)
from typing_extensions import TypedDict

from aihub_billing.kit.clock import TimeInRange
from aihub_billing.kit.money import JsonDecimal, normalize_currency
from aihub_billing.models.model_price import PRICE_SCALE

Token = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[\x21-\x7e]+$")]
# Below 10^13 per 1M tokens: the cost of an event's 2 x 10^12 tokens at most then fits the
# 20 integer digits of `usage_events.cost`, so a price accepted never fails the events.
PricePer1M = Annotated[
    JsonDecimal, Field(ge=0, max_digits=13 + PRICE_SCALE, decimal_places=PRICE_SCALE)
]
TokenCount = Annotated[int, Field(strict=True, ge=0, le=10**12)]


class UsageEventIn(BaseModel):
    """One usage event; an `event_id` is counted once per account, forever (safe retries)."""

    model_config = ConfigDict(extra="forbid")

    usage_type: Literal["api_call", "storage"] = "api_call"
    model: Token | None = None
    input_tokens: TokenCount = 0
    output_tokens: TokenCount = 0
    cached_input_tokens: TokenCount = Field(
        strict=True, default=0, description="Part of input_tokens served from the prompt cache"
    )
    status_code: int = Field(strict=True, default=200, ge=100, le=599)
    event_id: Token | None = None
    timestamp: TimeInRange | None = Field(default=None, description="Default: when received")
    user_id: str | None = Field(default=None, min_length=1, max_length=200)
    cost_center: str | None = Field(default=None, min_length=1, max_length=100)
    latency_ms: int | None = Field(strict=True, default=None, ge=0, le=86_400_000)
    storage_gb: Annotated[Decimal, Field(ge=0, max_digits=20, decimal_places=6)] | None = None
    metadata: Annotated[dict[str, Any], Field(max_length=50)] | None = None
    reservation_id: Token | None = Field(
        default=None, description="Quota reservation this call settles"
    )

    @model_validator(mode="after")
    def _by_type(self) -> UsageEventIn:
        problem = event_problem(self.__dict__)
        if problem is not None:
            raise ValueError(problem)
        return self


def event_problem(event: dict[str, Any]) -> str | None:
    """What is wrong across the fields of a field-valid event (a UsageEventIn's values)."""
    if event["usage_type"] == "api_call":
        if event["model"] is None:
            return "api_call events need a model"
        if event["storage_gb"] is not None:
            return "storage_gb belongs to storage events"
        if event["cached_input_tokens"] > event["input_tokens"]:
            return "cached_input_tokens cannot exceed input_tokens"
    elif event["storage_gb"] is None:
        return "storage events need storage_gb (a snapshot of the GB stored)"
    return None


# UsageEventIn's fields as a dict (its defaults filled in, the cross-field rules left to
# event_problem): what the batch path validates, with no model instance per event.
UsageEventFields: Any = cast(Any, TypedDict)(
    "UsageEventFields",
    {n: NotRequired[Annotated[f.annotation, f]] for n, f in UsageEventIn.model_fields.items()},
)
UsageEventFields.__pydantic_config__ = ConfigDict(extra="forbid")


class UsageBatchIn(BaseModel):
    """Up to 1,000 events; each is validated on its own, so one bad event rejects only itself."""

    # Items stay raw here and are validated one by one in the service; the schema still
    # documents them as UsageEventIn.
    events: list[Any] = Field(
        min_length=1,
        max_length=1000,
        json_schema_extra={"items": {"$ref": "#/components/schemas/UsageEventIn"}},
    )


class UsageBatchEvents(BaseModel):
    """The same body with every event valid: one pydantic-core call checks a clean batch."""

    events: list[UsageEventFields] = Field(min_length=1, max_length=1000)


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class EventResult(BaseModel):
    index: int
    status: Literal["accepted", "duplicate", "rejected"]
    event_id: str | None = None
    cost: JsonDecimal | None = None
    currency: str | None = None
    code: str | None = Field(default=None, description="Problem code of a rejected event")
    detail: str | None = None
    errors: list[FieldError] | None = None


class UsageBatchResult(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[EventResult]


class _EventResultJSON(TypedDict):
    index: int
    status: str
    event_id: NotRequired[str | None]
    cost: NotRequired[str]  # exact plain decimal text already (ScaledPrices.cost_text)
    currency: NotRequired[str]
    code: NotRequired[str]
    detail: NotRequired[str]
    errors: NotRequired[list[dict[str, Any]]]


class _BatchResultJSON(TypedDict):
    accepted: int
    duplicates: int
    rejected: int
    results: list[_EventResultJSON]


# UsageBatchResult's JSON straight from the tracker's dicts, without building a model per
# event (the tracker fills every field).
BATCH_RESULT_JSON: TypeAdapter[_BatchResultJSON] = TypeAdapter(_BatchResultJSON)


class UsageRecorded(BaseModel):
    """The answer to /usage/track; `duplicate` means the event id was already counted."""

    event_id: str
    status: Literal["accepted", "duplicate"]
    cost: JsonDecimal | None = None
    currency: str | None = None


GroupBy = Literal["day", "model", "user", "cost_center"]


class StatsRow(BaseModel):
    group: str | None
    currency: str | None
    requests: int
    successful_requests: int
    success_rate: JsonDecimal | None = Field(description="successful / requests, 4 places")
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost: JsonDecimal
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None


class UsageStats(BaseModel):
    account_id: str
    start: date = Field(description="First UTC day (inclusive)")
    end: date = Field(description="Last UTC day (exclusive)")
    group_by: GroupBy
    rows: list[StatsRow]


class ModelPriceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Token
    currency: str = Field(description="ISO 4217 code")
    input_per_1m: PricePer1M
    output_per_1m: PricePer1M
    cached_input_per_1m: PricePer1M | None = None
    effective_from: TimeInRange | None = Field(
        default=None,
        description="Default: now for a model's first price; for a priced model, the first "
        "whole second after the 5 minutes ahead that events may be stamped",
    )

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        return normalize_currency(value)


class ModelPrice(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    model: str
    currency: str
    input_per_1m: JsonDecimal
    output_per_1m: JsonDecimal
    cached_input_per_1m: JsonDecimal | None
    effective_from: datetime
    effective_to: datetime | None
    created_at: datetime
