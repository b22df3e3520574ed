"""/usage (track, batch, stats) and /model-prices (the operator's model price table)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Coroutine
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BeforeValidator, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.accounts.errors import AccountNotFound
from aihub_billing.api.deps import (
    ActorDep,
    AdminContext,
    BillingDep,
    ContextDep,
    Idempotent,
    SessionDep,
    lean_context,
)
from aihub_billing.api.routing import TransactionalRoute
from aihub_billing.errors import AccountRequired, Forbidden, responses
from aihub_billing.kit.context import Context
from aihub_billing.service import BillingService
from aihub_billing.usage import schemas
from aihub_billing.usage.errors import (
    InvalidStatsRange,
    ModelPriceBackdated,
    ModelPriceCurrencyMismatch,
    ModelPriceExists,
    TimestampInFuture,
    UnknownModel,
    UsageNeedsAccountKey,
)
from aihub_billing.usage.service import model_prices, parse_batch, parse_event, usage

router = APIRouter(prefix="/usage", tags=["usage"], route_class=TransactionalRoute)
prices_router = APIRouter(
    prefix="/model-prices", tags=["model-prices"], route_class=TransactionalRoute
)

CSV_TYPE = "text/csv"
# Items documented as UsageEventIn, in the components already (/usage/track takes it).
_BATCH_IN_SCHEMA = {
    **schemas.UsageBatchEvents.model_json_schema(),
    "title": "UsageBatchIn",
    "description": schemas.UsageBatchIn.__doc__,
}
_BATCH_IN_SCHEMA.pop("$defs", None)
_BATCH_IN_SCHEMA["properties"]["events"]["items"] = {"$ref": "#/components/schemas/UsageEventIn"}


class LeanTrackRoute(TransactionalRoute):
    """/usage/track without FastAPI's per-request dependency solving and response pass
    (they cost about as much CPU as recording the event) and without a transaction of its
    own: the event is written in a group commit with those of concurrent requests
    (usage/grouped.py). Same parsing, auth, errors and response. Requests with an
    Idempotency-Key take the regular path, which stores and replays the response in the
    event's own transaction."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        regular = super().get_route_handler()

        async def handler(request: Request) -> Response:
            if "idempotency-key" in request.headers:
                return await regular(request)
            billing: BillingService = request.app.state.billing
            # The key first, as on every route. A session only when auth misses its cache,
            # closed before the event waits for its group: a waiting request holds no
            # connection (and on SQLite no lock).
            ctx = await lean_context(request, billing.db.sessions)
            body = await request.body()
            try:
                event = parse_event(body)
            except ValidationError as exc:
                errors = exc.errors(include_url=False)
                raise RequestValidationError(
                    [{**e, "loc": ("body", *e["loc"])} for e in errors], body=body
                ) from exc
            recorded = await billing.tracks.track(ctx, event)
            return Response(
                recorded.model_dump_json(),
                status_code=(
                    status.HTTP_200_OK
                    if recorded.status == "duplicate"
                    else status.HTTP_201_CREATED
                ),
                media_type="application/json",
            )

        return handler


class LeanBatchRoute(TransactionalRoute):
    """/usage/batch without FastAPI's per-request dependency solving (as LeanTrackRoute):
    same parsing, auth, transaction, errors and response. Requests with an Idempotency-Key
    take the regular path, which stores and replays the response."""

    def endpoint_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        regular = super().endpoint_handler()

        async def handler(request: Request) -> Response:
            if "idempotency-key" in request.headers:
                return await regular(request)
            session: AsyncSession = request.state.session  # TransactionalRoute's
            ctx = await lean_context(request, session)
            return await _record_batch(request, session, ctx, request.app.state.billing)

        return handler


async def _record_batch(
    request: Request, session: AsyncSession, ctx: Context, billing: BillingService
) -> Response:
    try:
        batch = parse_batch(await request.body())
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None
    outcome = await usage.record_parsed(session, ctx, batch, billing.quota)
    # Serialized once from plain dicts; returning a Response skips FastAPI's own pass.
    return Response(
        schemas.BATCH_RESULT_JSON.dump_json(outcome.as_dict()),  # type: ignore[arg-type]
        media_type="application/json",
    )


async def track_usage(
    event: schemas.UsageEventIn,
    session: SessionDep,
    ctx: ContextDep,
    billing: BillingDep,
    response: Response,
) -> schemas.UsageRecorded:
    """Record one event for the key's account; an event id already counted answers 200.

    A `reservation_id` from `/quota/check` settles that reservation with the real tokens.
    """
    recorded = await usage.track(session, ctx, event, billing.quota)
    if recorded.status == "duplicate":
        response.status_code = status.HTTP_200_OK
    return recorded


router.add_api_route(
    "/track",
    track_usage,
    methods=["POST"],
    status_code=status.HTTP_201_CREATED,
    dependencies=[Idempotent],
    responses={
        200: {
            "model": schemas.UsageRecorded,
            "description": "The event id was already counted (`status: duplicate`): nothing is "
            "counted again",
        },
        **responses(UsageNeedsAccountKey, UnknownModel, TimestampInFuture),
    },
    route_class_override=LeanTrackRoute,
)


async def track_usage_batch(
    request: Request, session: SessionDep, ctx: ContextDep, billing: BillingDep
) -> Response:
    """Record up to 1,000 events; each is accepted, a duplicate, or rejected on its own.

    The answer comes after the commit: every `accepted` event is durable.
    """
    return await _record_batch(request, session, ctx, billing)


router.add_api_route(
    "/batch",
    track_usage_batch,
    methods=["POST"],
    dependencies=[Idempotent],
    response_model=schemas.UsageBatchResult,
    responses=responses(UsageNeedsAccountKey),
    # The body is read raw (one pydantic-core call validates it); documented here instead.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _BATCH_IN_SCHEMA}},
        }
    },
    route_class_override=LeanBatchRoute,
)


def _day_only(value: Any) -> Any:
    # Lax parsing takes a datetime at midnight as its date, dropping its offset: another
    # window than the one asked for.
    if isinstance(value, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("a day, YYYY-MM-DD (UTC)")
    return value


UtcDay = Annotated[date, BeforeValidator(_day_only)]


@router.get(
    "/stats",
    responses={
        **responses(AccountRequired, AccountNotFound, InvalidStatsRange),
        200: {"content": {CSV_TYPE: {}}, "description": "JSON, or CSV with Accept: text/csv"},
    },
)
async def usage_stats(
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    billing: BillingDep,
    start: Annotated[UtcDay | None, Query(alias="from", description="First UTC day")] = None,
    end: Annotated[UtcDay | None, Query(alias="to", description="UTC day after the last")] = None,
    group_by: schemas.GroupBy = "day",
    account_id: Annotated[str | None, Query(description="Operator only")] = None,
    format: Annotated[str | None, Query(pattern="^(json|csv)$")] = None,
) -> schemas.UsageStats:
    """Requests, success rate, tokens, cost and latency percentiles per group, from rollups."""
    stats = await billing.usage_stats(
        session, ctx, account_id=account_id, start=start, end=end, group_by=group_by
    )
    wants_csv = format == "csv" or (
        format is None and CSV_TYPE in request.headers.get("accept", "")
    )
    if wants_csv:
        return Response(  # type: ignore[return-value]
            _csv(stats),
            media_type=CSV_TYPE,
            headers={"Content-Disposition": 'attachment; filename="usage-stats.csv"'},
        )
    return stats


@prices_router.get("")
async def list_model_prices(
    session: SessionDep, _actor: ActorDep, model: str | None = None
) -> list[schemas.ModelPrice]:
    """Every price of every model (or of one), oldest first: the current one has no end."""
    return [schemas.ModelPrice.model_validate(p) for p in await model_prices.prices(session, model)]


@prices_router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Idempotent],
    responses=responses(
        Forbidden, ModelPriceExists, ModelPriceBackdated, ModelPriceCurrencyMismatch
    ),
)
async def create_model_price(
    data: schemas.ModelPriceCreate, session: SessionDep, ctx: AdminContext
) -> schemas.ModelPrice:
    """Set a model's price from `effective_from` (operator only); the previous one ends there."""
    return schemas.ModelPrice.model_validate(await model_prices.set_price(session, ctx, data))


_CSV_FIELDS = list(schemas.StatsRow.model_fields)


def _csv(stats: schemas.UsageStats) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["group_by", *_CSV_FIELDS], lineterminator="\n")
    writer.writeheader()
    for row in stats.rows:
        values = row.model_dump(mode="json")
        values["group"] = _inert(values["group"])
        writer.writerow({"group_by": stats.group_by, **{k: values[k] for k in _CSV_FIELDS}})
    return out.getvalue()


def _inert(cell: Any) -> Any:
    """A group (a user id, a cost center: any client's text) that a spreadsheet would run as a
    formula gets a leading apostrophe (OWASP's CSV injection advice)."""
    if isinstance(cell, str) and cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + cell
    return cell
