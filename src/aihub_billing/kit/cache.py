"""Read caches with TTLs (Redis when configured, in-process otherwise), invalidated by scope.

Every cached value belongs to a scope (an account, or the plan catalog) whose generation is
part of its key. A write records the scopes it changed on its session (`touch`); once the
session commits, their generations move on (one INCR each), so the next read of any of
them misses. A reader that loaded before the commit stored its value under the old
generation, where nobody looks any more: nothing stale is served after a write returned,
however reads and writes interleave across processes.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Protocol

import redis.asyncio as aioredis

from aihub_billing.kit.clock import monotonic

__all__ = [
    "Cache",
    "MemoryCache",
    "RedisCache",
    "account_scope",
    "PLANS_SCOPE",
    "touch",
    "touched",
]

PLANS_SCOPE = "plans"
_TOUCHED = "cache.touched"


def account_scope(account_id: str) -> str:
    return f"acct:{account_id}"


class _HasInfo(Protocol):
    @property
    def info(self) -> dict[Any, Any]: ...


def touch(session: _HasInfo, *scopes: str) -> None:
    """Marks scopes whose cached reads the session's writes change; their generations move
    on when it commits (nothing happens on rollback)."""
    session.info.setdefault(_TOUCHED, set()).update(scopes)


def touched(session: _HasInfo) -> set[str]:
    """The scopes marked so far, taken off the session."""
    scopes: set[str] = session.info.pop(_TOUCHED, set())
    return scopes


class Cache(Protocol):
    async def lookup(self, scope: str, name: str) -> tuple[int, Any | None]:
        """The scope's current generation, and the JSON value stored under `name` in it."""
        ...

    async def put(self, scope: str, name: str, value: Any, ttl: float, generation: int) -> None:
        """Stores a JSON value read while the scope was at `generation` (see lookup)."""
        ...

    async def invalidate(self, scopes: Iterable[str]) -> None:
        """Moves the scopes' generations on: what was cached for them is not read again."""
        ...


class MemoryCache:
    """One process's cache: a bounded LRU of (expiry, value) and the scopes' generations."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._values: OrderedDict[tuple[str, int, str], tuple[float, Any]] = OrderedDict()
        self._generations: dict[str, int] = {}

    async def lookup(self, scope: str, name: str) -> tuple[int, Any | None]:
        generation = self._generations.get(scope, 0)
        key = (scope, generation, name)
        entry = self._values.get(key)
        if entry is None:
            return generation, None
        if entry[0] <= monotonic():
            del self._values[key]
            return generation, None
        self._values.move_to_end(key)
        # A copy: callers may change what they get (stored as JSON text for that reason).
        return generation, json.loads(entry[1])

    async def put(self, scope: str, name: str, value: Any, ttl: float, generation: int) -> None:
        if generation != self._generations.get(scope, 0):
            return  # the scope changed while this was being read
        self._values[(scope, generation, name)] = (monotonic() + ttl, json.dumps(value))
        self._values.move_to_end((scope, generation, name))
        while len(self._values) > self.max_entries:
            self._values.popitem(last=False)

    async def invalidate(self, scopes: Iterable[str]) -> None:
        for scope in scopes:
            self._generations[scope] = self._generations.get(scope, 0) + 1
            # Entries of older generations are unreachable; drop them now.
            for key in [k for k in self._values if k[0] == scope]:
                del self._values[key]


# Reads the scope's generation and the value stored under it in one round trip.
_GET = """
local generation = redis.call('GET', KEYS[1]) or '0'
return {generation, redis.call('GET', KEYS[1] .. ':' .. generation .. ':' .. ARGV[1])}
"""


class RedisCache:
    """Shared by every process: values under `<prefix>cache:{scope}:<generation>:<name>`
    (the scope in a hash tag, so one scope's keys stay on one Redis Cluster slot)."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "") -> None:
        self.redis = redis
        self.prefix = prefix
        self._get = redis.register_script(_GET)
        # Scopes whose invalidation failed (Redis unreachable at a write's commit): moved on
        # before this process uses Redis again, since Redis may come back with their values.
        self._pending: set[str] = set()

    def _scope_key(self, scope: str) -> str:
        return f"{self.prefix}cache:{{{scope}}}"

    async def lookup(self, scope: str, name: str) -> tuple[int, Any | None]:
        if self._pending:
            await self._incr(set())
        generation, value = await self._get(keys=[self._scope_key(scope)], args=[name])
        return int(generation), None if value is None else json.loads(value)

    async def put(self, scope: str, name: str, value: Any, ttl: float, generation: int) -> None:
        if self._pending:
            await self._incr(set())
        key = f"{self._scope_key(scope)}:{generation}:{name}"
        await self.redis.set(key, json.dumps(value), px=max(1, int(ttl * 1000)))

    async def invalidate(self, scopes: Iterable[str]) -> None:
        await self._incr(set(scopes))

    async def _incr(self, scopes: set[str]) -> None:
        ordered = sorted(scopes | self._pending)
        if not ordered:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for scope in ordered:
                    pipe.incr(self._scope_key(scope))
                await pipe.execute()
        except BaseException:
            self._pending.update(ordered)
            raise
        self._pending.difference_update(ordered)
