"""The quota engine on Redis: every operation is one EVALSHA of one Lua script.

Keys of an account share the hash tag `{account_id}` (one Redis Cluster slot):
  <prefix>q:{A}:p:<period>   hash: calls, tokens, loaded marker, mc:<member>, mt:<member>
  <prefix>q:{A}:w:<minute>   hash: c (admitted calls), t (tokens) of one fixed minute window
  <prefix>q:{A}:rx           zset: reservation id -> expiry (ms), swept at every operation
  <prefix>q:{A}:rd           hash: reservation id -> "period|minute|tokens|member"
Period hashes expire a day after the period ends, windows after two minutes. Time comes from
the caller (the injected clock), so every process must keep its clock in sync (NTP).
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aihub_billing.quota.engine import (
    UNLIMITED,
    CheckOutcome,
    CheckRequest,
    EngineUnavailable,
    Limits,
    Settlement,
    Status,
    Verdict,
    window_of,
)

# Keep the period's counters a day past its end: late commits and status reads still see them.
PERIOD_GRACE = timedelta(days=1)
WINDOW_KEY_TTL_MS = 120_000
SWEEP_BATCH = 100
MAX_BATCH = 256  # checks per pipeline
LIMIT_NAMES = ("calls", "tokens", "member_calls", "member_tokens", "rpm", "tpm", "concurrency")

SCRIPT = """
local op = ARGV[1]
local now = tonumber(ARGV[2])
local minute = ARGV[3]
local period = ARGV[4]
local U, W, RX, RD = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

local function parse(data)
  local p, m, t, mem = string.match(data, '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
  return p, m, tonumber(t), mem
end

-- Expired reservations give back their tokens (the call stays counted) and their slot.
local function sweep(now)
  local expired = redis.call('ZRANGEBYSCORE', RX, '-inf', now, 'LIMIT', 0, __SWEEP__)
  if #expired == 0 then return 0 end
  for _, rid in ipairs(expired) do
    local data = redis.call('HGET', RD, rid)
    if data then
      local p, m, t, mem = parse(data)
      if p == period and t > 0 and redis.call('EXISTS', U) == 1 then
        redis.call('HINCRBY', U, 'tokens', -t)
        if mem ~= '' then redis.call('HINCRBY', U, 'mt:' .. mem, -t) end
      end
      redis.call('HDEL', RD, rid)
    end
    redis.call('ZREM', RX, rid)
  end
  return #expired
end

-- Integers as digits: tostring() would print 1e+14 from 10^14 on.
local function int(x)
  return string.format('%d', x)
end

-- Replies are one comma-separated string: far cheaper for the client to parse than an array.
local function reply(list)
  for i, v in ipairs(list) do
    if type(v) == 'number' then list[i] = int(v) end
  end
  return table.concat(list, ',')
end

local function refuse(name, limit, attempted, retry, c, t, wc, wt, live, reset)
  return reply({2, name, limit, attempted, retry, c, t, wc, wt, live, reset})
end

-- One check; `now` is the check's own time (a batch carries one per check).
local function check(now, request, limits)
  -- Few redis.call()s: each costs more than the Lua around it. Values are read once and
  -- written back with HSET (the script runs alone, so nothing moves in between).
  local swept = sweep(now)
  -- The request and the limits travel as two packed arguments (the limits cached per
  -- account): each argument costs the client more to encode than the server to split.
  local rid, est, ttl, reset, expire, mem = string.match(
    request, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  est, ttl, reset = tonumber(est), tonumber(ttl), tonumber(reset)
  local u = redis.call('HMGET', U, 'loaded', 'calls', 'tokens', 'mc:' .. mem, 'mt:' .. mem)
  if not u[1] then return '1' end
  local L = {}
  for v in string.gmatch(limits, '[^|]+') do L[#L + 1] = v end
  local cl, cp, tl, tp = tonumber(L[1]), L[2], tonumber(L[3]), L[4]
  local mcl, mtl = tonumber(L[5]), tonumber(L[6])
  local rpm, tpm, conc = tonumber(L[7]), tonumber(L[8]), tonumber(L[9])
  local c, t = tonumber(u[2]) or 0, tonumber(u[3]) or 0
  local mc, mt = tonumber(u[4]) or 0, tonumber(u[5]) or 0
  local w = redis.call('HMGET', W, 'c', 't')
  local wc, wt = tonumber(w[1]) or 0, tonumber(w[2]) or 0
  local held = redis.call('ZCARD', RX)
  local live = held
  if swept == __SWEEP__ then live = redis.call('ZCOUNT', RX, '(' .. now, '+inf') end
  -- A check needs at least one token of room: the model call will use some.
  local need = est
  if need < 1 then need = 1 end
  if cl >= 0 and cp == 'block' and c + 1 > cl then
    return refuse('calls', cl, c + 1, 0, c, t, wc, wt, live, reset)
  end
  if tl >= 0 and tp == 'block' and t + need > tl then
    return refuse('tokens', tl, t + est, 0, c, t, wc, wt, live, reset)
  end
  if mem ~= '' then
    if mcl >= 0 and mc + 1 > mcl then
      return refuse('member_calls', mcl, mc + 1, 0, c, t, wc, wt, live, reset)
    end
    if mtl >= 0 and mt + need > mtl then
      return refuse('member_tokens', mtl, mt + est, 0, c, t, wc, wt, live, reset)
    end
  end
  if rpm >= 0 and wc + 1 > rpm then
    return refuse('rpm', rpm, wc + 1, reset, c, t, wc, wt, live, reset)
  end
  if tpm >= 0 and wt + need > tpm then
    return refuse('tpm', tpm, wt + est, reset, c, t, wc, wt, live, reset)
  end
  if conc >= 0 and live + 1 > conc then
    return refuse('concurrency', conc, live + 1, 1000, c, t, wc, wt, live, reset)
  end
  if mem ~= '' then
    redis.call('HSET', U, 'calls', int(c + 1), 'tokens', int(t + est),
               'mc:' .. mem, int(mc + 1), 'mt:' .. mem, int(mt + est))
  else
    redis.call('HSET', U, 'calls', int(c + 1), 'tokens', int(t + est))
  end
  redis.call('HSET', W, 'c', int(wc + 1), 't', int(wt + est))
  if wc == 0 and wt == 0 then redis.call('PEXPIRE', W, __WINDOW_TTL__) end
  redis.call('ZADD', RX, now + ttl, rid)
  redis.call('HSET', RD, rid, period .. '|' .. minute .. '|' .. int(est) .. '|' .. mem)
  -- New reservation keys live as long as the period's counters (load renews it).
  if held == 0 then
    redis.call('PEXPIRE', RX, expire)
    redis.call('PEXPIRE', RD, expire)
  end
  local oc, ot = 0, 0
  if cl >= 0 and c + 1 > cl then oc = 1 end
  if tl >= 0 and t + est > tl then ot = 1 end
  return reply({0, c + 1, t + est, oc, ot, wc + 1, wt + est, live + 1, reset})
end

if op == 'check' then
  return check(now, ARGV[5], ARGV[6])
end

-- Checks of one account issued together: ARGV[5..] = ("<now>|<request>", limits) pairs,
-- each checked on its own, in order; the replies are joined with ';'.
if op == 'checks' then
  local out = {}
  for i = 5, #ARGV, 2 do
    local at, request = string.match(ARGV[i], '^([^|]*)|(.*)$')
    out[#out + 1] = check(tonumber(at), request, ARGV[i + 1])
  end
  return table.concat(out, ';')
end

if op == 'commit' or op == 'release' then
  sweep(now)
  local rid = ARGV[5]
  local data = redis.call('HGET', RD, rid)
  if not data then return {0} end
  local p, m, t, mem = parse(data)
  local diff
  if op == 'commit' then diff = tonumber(ARGV[6]) - t else diff = -t end
  local used = -1
  if p == period and redis.call('EXISTS', U) == 1 then
    if diff ~= 0 then
      redis.call('HINCRBY', U, 'tokens', diff)
      if mem ~= '' then redis.call('HINCRBY', U, 'mt:' .. mem, diff) end
    end
    if op == 'release' then
      redis.call('HINCRBY', U, 'calls', -1)
      if mem ~= '' then redis.call('HINCRBY', U, 'mc:' .. mem, -1) end
    end
    used = tonumber(redis.call('HGET', U, 'tokens')) or 0
  end
  -- The rate window: settle in the reservation's window while it is current; an excess
  -- found later counts in the current window.
  if m == minute then
    if diff ~= 0 then redis.call('HINCRBY', W, 't', diff) end
    if op == 'release' then redis.call('HINCRBY', W, 'c', -1) end
  elseif diff > 0 then
    redis.call('HINCRBY', W, 't', diff)
    redis.call('PEXPIRE', W, __WINDOW_TTL__)
  end
  redis.call('HDEL', RD, rid)
  redis.call('ZREM', RX, rid)
  if op == 'release' then diff = 0 end
  return {1, t, diff, used}
end

if op == 'record' then
  local calls, tokens, mem, expire_at = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[8]
  local c = redis.call('HINCRBY', U, 'calls', calls)
  local t = redis.call('HINCRBY', U, 'tokens', tokens)
  if mem ~= '' then
    redis.call('HINCRBY', U, 'mc:' .. mem, calls)
    redis.call('HINCRBY', U, 'mt:' .. mem, tokens)
  end
  redis.call('PEXPIRE', U, expire_at)
  redis.call('HINCRBY', W, 't', tokens)
  redis.call('PEXPIRE', W, __WINDOW_TTL__)
  return {c, t}
end

if op == 'status' then
  sweep(now)
  local mem = ARGV[5]
  local u = redis.call('HMGET', U, 'loaded', 'calls', 'tokens', 'mc:' .. mem, 'mt:' .. mem)
  local w = redis.call('HMGET', W, 'c', 't')
  local live = redis.call('ZCOUNT', RX, '(' .. now, '+inf')
  return {u[1] and 1 or 0, tonumber(u[2]) or 0, tonumber(u[3]) or 0,
          tonumber(w[1]) or 0, tonumber(w[2]) or 0, live,
          tonumber(u[4]) or 0, tonumber(u[5]) or 0}
end

if op == 'load' then
  local calls, tokens, expire_at, force = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[8]
  if force == '0' and redis.call('HEXISTS', U, 'loaded') == 1 then return 0 end
  sweep(now)
  local fields = {}
  local mc, mt = {}, {}
  for i = 9, #ARGV, 3 do
    mc[ARGV[i]] = tonumber(ARGV[i + 1])
    mt[ARGV[i]] = tonumber(ARGV[i + 2])
  end
  -- Live reservations are not in the database yet: keep them counted.
  local rd = redis.call('HGETALL', RD)
  for i = 1, #rd, 2 do
    local p, m, t, mem = parse(rd[i + 1])
    if p == period then
      calls = calls + 1
      tokens = tokens + t
      if mem ~= '' then
        mc[mem] = (mc[mem] or 0) + 1
        mt[mem] = (mt[mem] or 0) + t
      end
    end
  end
  redis.call('DEL', U)
  redis.call('HSET', U, 'loaded', 1, 'calls', int(calls), 'tokens', int(tokens))
  for mem, v in pairs(mc) do redis.call('HSET', U, 'mc:' .. mem, int(v)) end
  for mem, v in pairs(mt) do redis.call('HSET', U, 'mt:' .. mem, int(v)) end
  redis.call('PEXPIRE', U, expire_at)
  if #rd > 0 then
    redis.call('PEXPIRE', RX, expire_at)
    redis.call('PEXPIRE', RD, expire_at)
  end
  return 1
end

if op == 'loaded' then
  return redis.call('HEXISTS', U, 'loaded')
end
return redis.error_reply('unknown op ' .. op)
""".replace("__SWEEP__", str(SWEEP_BATCH)).replace("__WINDOW_TTL__", str(WINDOW_KEY_TTL_MS))

SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


def _translate(exc: RedisError) -> Exception:
    """Connection trouble becomes EngineUnavailable (the fail mode applies); the rest stays."""
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return EngineUnavailable(f"redis: {type(exc).__name__}")
    if "LOADING" in str(exc) or "MASTERDOWN" in str(exc):
        return EngineUnavailable(f"redis: {exc}")
    return exc


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # the caller may have been cancelled meanwhile
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _limit(value: int | None) -> int:
    return UNLIMITED if value is None else value


def _expire_at(period_end: datetime, now: datetime) -> int:
    # Relative to the caller's clock (a test clock may be far from Redis's own time).
    delta = period_end + PERIOD_GRACE - now  # integer ms, without a timedelta division
    return max((delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000, 1)


class RedisQuotaEngine:
    """Counters in Redis; atomic across processes and machines (one script per operation)."""

    def __init__(
        self, client: aioredis.Redis, *, prefix: str = "", owns_client: bool = False
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the key prefix must not contain braces (they are the hash tag)")
        self.client = client
        self.prefix = prefix
        self.owns_client = owns_client
        self._packed_limits: dict[Limits, bytes] = {}
        self._pending: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self._flush_scheduled = False
        self._flushes: set[asyncio.Task[None]] = set()

    def keys(self, account_id: str, period_key: str, minute: int) -> list[str]:
        base = f"{self.prefix}q:{{{account_id}}}:"
        return [f"{base}p:{period_key}", f"{base}w:{minute}", f"{base}rx", f"{base}rd"]

    async def _run(self, keys: list[str], args: list[Any]) -> Any:
        try:
            try:
                return await self.client.evalsha(SCRIPT_SHA, 4, *keys, *args)
            except NoScriptError:
                # After a restart or SCRIPT FLUSH the cache is empty: load once and go on.
                await self.client.script_load(SCRIPT)
                return await self.client.evalsha(SCRIPT_SHA, 4, *keys, *args)
        except RedisError as exc:
            raise _translate(exc) from exc
        except OSError as exc:
            raise EngineUnavailable(f"redis: {type(exc).__name__}") from exc

    async def _run_batched(self, keys: list[str], args: list[Any]) -> Any:
        """Like `_run`, but checks issued in the same event-loop turn share one pipeline.

        Each check stays its own EVALSHA (atomic on its own); the batch only saves the
        per-command client work (connection checkout, write, wake-up), which under load
        costs more than the script itself. A lone check goes out at the next loop turn.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((keys, args, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._start_flush)
        return await future

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        for start in range(0, len(batch), MAX_BATCH):
            task = asyncio.ensure_future(self._flush(batch[start : start + MAX_BATCH]))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]]) -> None:
        # Checks of one account (same keys) go as ONE `checks` call, each still checked on
        # its own inside the script; the calls of several accounts share a pipeline.
        groups: dict[tuple[str, ...], list[tuple[list[Any], asyncio.Future[Any]]]] = {}
        for batch_keys, batch_args, future in batch:
            groups.setdefault(tuple(batch_keys), []).append((batch_args, future))
        commands: list[tuple[list[str], list[Any], list[asyncio.Future[Any]]]] = []
        for group_keys, items in groups.items():
            if len(items) == 1:
                commands.append((list(group_keys), items[0][0], [items[0][1]]))
                continue
            first = items[0][0]
            packed: list[Any] = ["checks", first[1], first[2], first[3]]
            for item_args, _ in items:
                packed += [f"{item_args[1]}|{item_args[4]}", item_args[5]]
            commands.append((list(group_keys), packed, [future for _, future in items]))
        try:
            if len(commands) == 1:
                results: list[Any] = [await self._run(commands[0][0], commands[0][1])]
            else:
                pipe = self.client.pipeline(transaction=False)
                for keys, args, _ in commands:
                    pipe.evalsha(SCRIPT_SHA, 4, *keys, *args)
                results = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            error: BaseException = exc
            if isinstance(exc, RedisError):
                error = _translate(exc)
            elif isinstance(exc, OSError):
                error = EngineUnavailable(f"redis: {type(exc).__name__}")
            for _, _, futures in commands:
                for future in futures:
                    _fail(future, error)
            return
        for (keys, args, futures), result in zip(commands, results, strict=True):
            if isinstance(result, NoScriptError):
                try:
                    result = await self._run(keys, args)  # loads the script, then runs
                except Exception as exc:
                    result = exc
            if isinstance(result, Exception):
                error = _translate(result) if isinstance(result, RedisError) else result
                for future in futures:
                    _fail(future, error)
            elif args[0] == "checks":
                for future, part in zip(futures, result.split(b";"), strict=True):
                    _settle(future, part)
            else:
                _settle(futures[0], result)

    def _packed(self, limits: Limits) -> bytes:
        packed = self._packed_limits.get(limits)
        if packed is None:
            if len(self._packed_limits) > 10_000:
                self._packed_limits.clear()
            packed = self._packed_limits[limits] = "|".join(
                str(v)
                for v in (
                    _limit(limits.calls),
                    limits.calls_policy,
                    _limit(limits.tokens),
                    limits.tokens_policy,
                    _limit(limits.member_calls),
                    _limit(limits.member_tokens),
                    _limit(limits.rpm),
                    _limit(limits.tpm),
                    _limit(limits.concurrency),
                )
            ).encode()
        return packed

    async def check(self, request: CheckRequest, limits: Limits) -> CheckOutcome:
        now_ms, minute, reset_ms = window_of(request.now)
        reply = await self._run_batched(
            self.keys(request.account_id, request.period_key, minute),
            [
                "check",
                now_ms,
                minute,
                request.period_key,
                f"{request.reservation_id}|{request.estimated_tokens}|"
                f"{request.ttl_seconds * 1000}|{reset_ms}|"
                f"{_expire_at(request.period_end, request.now)}|{request.member or ''}",
                self._packed(limits),
            ],
        )
        result = reply.split(b",")
        verdict = int(result[0])
        if verdict == Verdict.NOT_LOADED:
            return CheckOutcome(Verdict.NOT_LOADED)
        if verdict == Verdict.REFUSED:
            _, name, limit, attempted, retry, c, t, wc, wt, live, reset = result
            return CheckOutcome(
                Verdict.REFUSED,
                limit_name=name.decode(),
                limit_value=int(limit),
                attempted=int(attempted),
                retry_after_ms=int(retry),
                calls_used=int(c),
                tokens_used=int(t),
                rpm_used=int(wc),
                tpm_used=int(wt),
                concurrent=int(live),
                window_reset_ms=int(reset),
            )
        _, c, t, oc, ot, wc, wt, live, reset = result
        return CheckOutcome(
            Verdict.ADMITTED,
            calls_used=int(c),
            tokens_used=int(t),
            calls_overage=oc == b"1",
            tokens_overage=ot == b"1",
            rpm_used=int(wc),
            tpm_used=int(wt),
            concurrent=int(live),
            window_reset_ms=int(reset),
        )

    async def _settle(
        self,
        op: str,
        account_id: str,
        period_key: str,
        reservation_id: str,
        now: datetime,
        actual: int,
    ) -> Settlement:
        now_ms, minute, _ = window_of(now)
        result = await self._run(
            self.keys(account_id, period_key, minute),
            [op, now_ms, minute, period_key, reservation_id, actual],
        )
        if int(result[0]) == 0:
            return Settlement(found=False)
        used = int(result[3])
        return Settlement(
            found=True,
            reserved_tokens=int(result[1]),
            difference=int(result[2]),
            tokens_used=None if used < 0 else used,
        )

    async def commit(
        self,
        account_id: str,
        period_key: str,
        reservation_id: str,
        actual_tokens: int,
        now: datetime,
    ) -> Settlement:
        return await self._settle(
            "commit", account_id, period_key, reservation_id, now, actual_tokens
        )

    async def release(
        self, account_id: str, period_key: str, reservation_id: str, now: datetime
    ) -> Settlement:
        return await self._settle("release", account_id, period_key, reservation_id, now, 0)

    async def record(
        self,
        account_id: str,
        period_key: str,
        period_end: datetime,
        now: datetime,
        *,
        calls: int,
        tokens: int,
        member: str | None = None,
    ) -> tuple[int, int]:
        now_ms, minute, _ = window_of(now)
        calls_used, tokens_used = await self._run(
            self.keys(account_id, period_key, minute),
            [
                "record",
                now_ms,
                minute,
                period_key,
                calls,
                tokens,
                member or "",
                _expire_at(period_end, now),
            ],
        )
        return int(calls_used), int(tokens_used)

    async def status(
        self, account_id: str, period_key: str, now: datetime, member: str | None = None
    ) -> Status:
        now_ms, minute, reset_ms = window_of(now)
        r = await self._run(
            self.keys(account_id, period_key, minute),
            ["status", now_ms, minute, period_key, member or ""],
        )
        return Status(
            loaded=bool(int(r[0])),
            calls_used=int(r[1]),
            tokens_used=int(r[2]),
            rpm_used=int(r[3]),
            tpm_used=int(r[4]),
            concurrent=int(r[5]),
            window_reset_ms=reset_ms,
            member_calls_used=int(r[6]),
            member_tokens_used=int(r[7]),
        )

    async def load(
        self,
        account_id: str,
        period_key: str,
        period_end: datetime,
        now: datetime,
        *,
        calls: int,
        tokens: int,
        members: dict[str, tuple[int, int]] | None = None,
        force: bool = False,
    ) -> bool:
        now_ms, minute, _ = window_of(now)
        args: list[Any] = [
            "load",
            now_ms,
            minute,
            period_key,
            calls,
            tokens,
            _expire_at(period_end, now),
            "1" if force else "0",
        ]
        for member, (member_calls, member_tokens) in (members or {}).items():
            args += [member, member_calls, member_tokens]
        return bool(await self._run(self.keys(account_id, period_key, minute), args))

    async def is_loaded(self, account_id: str, period_key: str) -> bool:
        return bool(
            await self._run(self.keys(account_id, period_key, 0), ["loaded", 0, 0, period_key])
        )

    async def close(self) -> None:
        if self.owns_client:
            await self.client.aclose()
