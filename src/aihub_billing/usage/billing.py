"""Usage as period close bills it: API calls, tokens and tokens per model of many (account,
period) pairs at once. Whole UTC days come from the daily rollups, the partial days at the
edges from the raw events, as in the statistics.

On PostgreSQL a whole batch is two statements (rollups, edges); SQLite, the embedded
single-node store, asks per period.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.kit.periods import day_split
from aihub_billing.usage.repository import UsageRepository
from aihub_billing.usage.service import usage

PeriodKey = tuple[str, datetime, datetime]  # (account id, start, end): [start, end)


@dataclass(slots=True)
class BilledUsage:
    """API calls and tokens (input + output; cached ones are input) of a period."""

    calls: int = 0
    tokens: int = 0
    tokens_by_model: dict[str, int] = field(default_factory=dict)

    def add(self, model: str, calls: int, tokens: int) -> None:
        self.calls += calls
        self.tokens += tokens
        self.tokens_by_model[model] = self.tokens_by_model.get(model, 0) + tokens


# Whole days: the rollups, and the events past the rollup watermark (see
# UsageRepository.rollup_groups), in one statement so both come from one snapshot.
_ROLLUPS = """
    WITH v AS (
        SELECT * FROM unnest(CAST(:k AS int[]), CAST(:account AS text[]),
                             CAST(:first AS date[]), CAST(:last AS date[]))
          AS v(k, account_id, first_day, last_day)
    )
    SELECT v.k, d.model, sum(d.requests), sum(d.input_tokens + d.output_tokens)
    FROM v JOIN usage_daily AS d
      ON d.account_id = v.account_id AND d.day >= v.first_day AND d.day < v.last_day
    GROUP BY v.k, d.model
    UNION ALL
    SELECT v.k, coalesce(e.model, ''), count(*), sum(e.input_tokens + e.output_tokens)
    FROM v JOIN usage_events AS e
      ON e.account_id = v.account_id
     AND e.occurred_at >= v.first_day::timestamp AT TIME ZONE 'UTC'
     AND e.occurred_at < v.last_day::timestamp AT TIME ZONE 'UTC'
    WHERE e.usage_type = 'api_call' AND e.xact >= {watermark}
      AND e.xact >= coalesce((SELECT rolled_through FROM usage_rollup_state WHERE id = 1), 0)
    GROUP BY v.k, coalesce(e.model, '')
"""

_EDGES = text(
    """
    SELECT v.k, coalesce(e.model, ''), count(*), sum(e.input_tokens + e.output_tokens)
    FROM unnest(CAST(:k AS int[]), CAST(:account AS text[]), CAST(:start AS timestamptz[]),
                CAST(:end AS timestamptz[])) AS v(k, account_id, start_at, end_at)
    JOIN usage_events AS e
      ON e.account_id = v.account_id AND e.occurred_at >= v.start_at AND e.occurred_at < v.end_at
     AND e.usage_type = 'api_call'
    GROUP BY v.k, coalesce(e.model, '')
    """
)


async def billed_usage(
    session: AsyncSession, keys: Sequence[PeriodKey]
) -> dict[PeriodKey, BilledUsage]:
    """Calls and tokens (in total and per model) of each (account, start, end)."""
    out = {key: BilledUsage() for key in keys}
    if not out:
        return out
    bind = session.bind
    if bind is None or bind.dialect.name != "postgresql":
        await _one_by_one(session, out)
        return out
    ordered = list(out)
    days: dict[str, list[object]] = {"k": [], "account": [], "first": [], "last": []}
    edges: dict[str, list[object]] = {"k": [], "account": [], "start": [], "end": []}
    for k, (account_id, start, end) in enumerate(ordered):
        first_day, last_day, partial = day_split(start, end)
        if first_day < last_day:
            for name, value in zip(days, (k, account_id, first_day, last_day), strict=True):
                days[name].append(value)
        for edge_start, edge_end in partial:
            for name, value in zip(edges, (k, account_id, edge_start, edge_end), strict=True):
                edges[name].append(value)
    # The watermark as a literal shows the planner how few events are past it.
    watermark = await UsageRepository(session).watermark()
    rollups = text(_ROLLUPS.format(watermark=int(watermark)))
    for statement, params in ((rollups, days), (_EDGES, edges)):
        if not params["k"]:
            continue
        for k, model, calls, tokens in await session.execute(statement, params):
            out[ordered[k]].add(model, int(calls), int(tokens or 0))
    return out


async def _one_by_one(session: AsyncSession, out: dict[PeriodKey, BilledUsage]) -> None:
    for (account_id, start, end), billed in out.items():
        for row in await usage.usage_by_model(session, account_id, start, end):
            billed.add(row.model, row.calls, row.input_tokens + row.output_tokens)
