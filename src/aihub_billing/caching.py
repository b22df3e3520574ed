"""Which cached reads each kind of stored change invalidates (see kit/cache.py), and the
read-through helper the façade uses.

The seed's caches and their TTLs: plans 24 h, an account's subscription 1 h, usage
statistics 15 min; quota limits are the QuotaManager's own (in process, 5 min, dropped on a
plan or override change in every process). ORM writes are found at flush; writes made in
SQL mark their scopes themselves (the usage tracker, test clock advances).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from sqlalchemy import event
from sqlalchemy.orm import Session

from aihub_billing.kit.cache import PLANS_SCOPE, Cache, account_scope, touch
from aihub_billing.models import (
    Account,
    Plan,
    PlanPrice,
    QuotaOverride,
    Subscription,
    TestClockAccount,
)

log = structlog.get_logger("aihub_billing.cache")

PLANS_TTL = 24 * 3600.0
SUBSCRIPTION_TTL = 3600.0
USAGE_STATS_TTL = 15 * 60.0


def _scope_of(instance: object) -> str | None:
    match instance:
        case Plan() | PlanPrice():
            return PLANS_SCOPE
        case Account():
            return account_scope(instance.id)
        case Subscription() | QuotaOverride() | TestClockAccount():
            return account_scope(instance.account_id)
    return None


@event.listens_for(Session, "before_flush")
def _changed_scopes(session: Session, _context: Any, _instances: Any) -> None:
    scopes = {
        scope
        for instance in (*session.new, *session.dirty, *session.deleted)
        if (scope := _scope_of(instance)) is not None
    }
    if scopes:
        touch(session, *scopes)


async def read_through(
    cache: Cache,
    scope: str,
    name: str,
    ttl: float,
    load: Callable[[], Awaitable[tuple[Any, float | None]]],
) -> Any:
    """The JSON value cached under (scope, name), else `load()`'s, stored for `ttl` seconds
    (or less: load returns (value, seconds it stays true) with None for "until changed").
    A cache that cannot be reached is a miss."""
    try:
        generation, value = await cache.lookup(scope, name)
    except Exception:
        log.warning("cache.unreachable", scope=scope, exc_info=True)
        value, _ = await load()
        return value
    if value is not None:
        return value
    value, valid_for = await load()
    if valid_for is not None:
        ttl = min(ttl, valid_for)
    if ttl > 0:
        try:
            await cache.put(scope, name, value, ttl, generation)
        except Exception:
            log.warning("cache.unreachable", scope=scope, exc_info=True)
    return value
