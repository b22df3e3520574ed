"""Request rate limit per API key, checked on every authenticated request.

GCRA (a token bucket kept as one timestamp per key, its "theoretical arrival time"): a key
may send `per_minute` requests a minute on average and up to `burst` at once. In Redis when
configured (one script call per key and event-loop turn, every key of the turn in one
pipeline: the limit holds across processes), in process otherwise (per process).

Time is the service clock's, in microseconds, so tests and every process agree on it. When
Redis cannot be reached the request is let through (logged): the quota check has its own
fail mode; this limit only guards against a runaway client.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from typing import Any, Protocol

import redis.asyncio as aioredis
import structlog
from redis.exceptions import NoScriptError, RedisError

from aihub_billing.errors import RateLimited
from aihub_billing.kit.context import Actor, Role

log = structlog.get_logger("aihub_billing.auth")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TRACKED = 100_000  # in-process entries before the idle ones are dropped

# KEYS[1]: the key's arrival time. ARGV: now, interval, tolerance (us), hits (this turn's).
# Admits hits in order while the bucket allows; answers "admitted,retry_after_us".
SCRIPT = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local hits = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local admitted = 0
while admitted < hits and tat - tolerance <= now do
  tat = tat + interval
  admitted = admitted + 1
end
if admitted > 0 then
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.floor((tat - now) / 1000) + 1)
end
local retry = 0
if admitted < hits then retry = tat - tolerance - now end
return string.format('%d,%d', admitted, retry)
"""
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


def micros(at: datetime) -> int:
    """Microseconds since the epoch, in integers (no float rounding)."""
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class Bucket(Protocol):
    async def hit(self, key_id: str, now: int) -> int:
        """Counts one request of the key at `now` (us); 0 when admitted, else the wait (us)
        until the next one would be."""
        ...

    async def close(self) -> None: ...


class MemoryBucket:
    def __init__(self, interval: int, tolerance: int) -> None:
        self.interval = interval
        self.tolerance = tolerance
        self._arrival: dict[str, int] = {}

    async def hit(self, key_id: str, now: int) -> int:
        tat = self._arrival.get(key_id, now)
        if tat < now:
            tat = now
        elif tat - self.tolerance > now:
            return tat - self.tolerance - now
        if len(self._arrival) >= MAX_TRACKED and key_id not in self._arrival:
            # Keys whose bucket is full again carry no state worth keeping.
            self._arrival = {k: t for k, t in self._arrival.items() if t > now}
        self._arrival[key_id] = tat + self.interval
        return 0

    async def close(self) -> None:
        self._arrival.clear()


class RedisBucket:
    def __init__(
        self, client: aioredis.Redis, interval: int, tolerance: int, *, prefix: str = ""
    ) -> None:
        self.client = client
        self.interval = interval
        self.tolerance = tolerance
        self.prefix = prefix
        # Hits of this event-loop turn, per key, waiting for the flush; and its latest time.
        self._pending: dict[str, list[asyncio.Future[int]]] = {}
        self._now = 0
        self._flushes: set[asyncio.Task[None]] = set()

    async def hit(self, key_id: str, now: int) -> int:
        loop = asyncio.get_running_loop()
        if not self._pending:
            loop.call_soon(self._start_flush)
        future: asyncio.Future[int] = loop.create_future()
        self._pending.setdefault(key_id, []).append(future)
        self._now = max(self._now, now)
        return await future

    def _start_flush(self) -> None:
        pending, now = self._pending, self._now
        self._pending, self._now = {}, 0
        task = asyncio.ensure_future(self._flush(pending, now))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    def _args(self, key_id: str, now: int, hits: int) -> list[Any]:
        # The hash tag keeps each key's state in one Redis Cluster slot.
        key = f"{self.prefix}rl:{{{key_id}}}"
        return [SCRIPT_SHA, 1, key, now, self.interval, self.tolerance, hits]

    async def _flush(self, pending: dict[str, list[asyncio.Future[int]]], now: int) -> None:
        commands = [self._args(key_id, now, len(futures)) for key_id, futures in pending.items()]
        try:
            try:
                results = await self._send(commands)
            except NoScriptError:
                await self.client.script_load(SCRIPT)
                results = await self._send(commands)
        except (RedisError, OSError) as exc:
            log.warning("ratelimit.backend_unavailable", error=f"{type(exc).__name__}: {exc}")
            results = [f"{len(f)},0".encode() for f in pending.values()]  # let them through
        for futures, result in zip(pending.values(), results, strict=True):
            admitted, retry = (int(part) for part in result.split(b","))
            for n, future in enumerate(futures):
                if not future.done():  # the caller may have been cancelled meanwhile
                    future.set_result(0 if n < admitted else max(retry, 1))

    async def _send(self, commands: list[list[Any]]) -> list[bytes]:
        if len(commands) == 1:
            return [await self.client.evalsha(*commands[0])]
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.evalsha(*command)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    async def close(self) -> None:
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)


class KeyRateLimit:
    """The limit of account keys, and the one of operator keys (whose gateway may send every
    account's traffic with one key; unlimited by default)."""

    def __init__(
        self,
        *,
        per_minute: int,
        burst: int,
        operator_per_minute: int,
        redis: aioredis.Redis | None = None,
        prefix: str = "",
    ) -> None:
        self._kinds = {
            False: self._kind(per_minute, burst, redis, prefix),
            True: self._kind(operator_per_minute, burst, redis, prefix),
        }

    @staticmethod
    def _kind(
        per_minute: int, burst: int, redis: aioredis.Redis | None, prefix: str
    ) -> tuple[Bucket, int, int] | None:
        if per_minute <= 0:
            return None
        burst = burst or per_minute
        interval = max(60_000_000 // per_minute, 1)
        tolerance = interval * (burst - 1)
        bucket: Bucket = (
            RedisBucket(redis, interval, tolerance, prefix=prefix)
            if redis is not None
            else MemoryBucket(interval, tolerance)
        )
        return bucket, per_minute, burst

    async def check(self, actor: Actor, now: datetime) -> None:
        """Counts the request; raises RateLimited (429, Retry-After) past the limit."""
        kind = self._kinds[actor.role is Role.ADMIN]
        if kind is None or actor.key_id is None:
            return
        bucket, per_minute, burst = kind
        wait = await bucket.hit(actor.key_id, micros(now))
        if wait:
            raise RateLimited.retry_after(
                f"this API key is over its rate limit of {per_minute} requests a minute "
                f"({burst} at once)",
                limit=burst,
                remaining=0,
                seconds=-(-wait // 1_000_000),
                extra={"limit": "api_key_requests", "limit_value": per_minute},
            )

    async def close(self) -> None:
        for kind in self._kinds.values():
            if kind is not None:
                await kind[0].close()
