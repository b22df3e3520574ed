"""The quota engine on Redis: every operation is one EVALSHA of one Lua script.

Keys of an account share the hash tag `{account_id}` (one Redis Cluster slot):
  <prefix>q:{A}:p:<period>   hash: calls, tokens, loaded marker, mc:<member>, mt:<member>
  <prefix>q:{A}:w:<minute>   hash: c (admitted calls), t (tokens) of one fixed minute window
  <prefix>q:{A}:rx           zset: reservation id -> expiry (ms), swept at every operation
  <prefix>q:{A}:rd           hash: reservation id -> "period|minute|tokens|member"
  <prefix>q:{A}:sd           hash: settled reservation id -> "kind|period|tokens|member"
  <prefix>q:{A}:sx           zset: settled reservation id -> when it is forgotten (ms)
Period hashes expire a day after the period ends, windows after two minutes. Time comes from
the caller (the injected clock), so every process must keep its clock in sync (NTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from datetime import datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aihub_billing.quota.engine import (
    MARKER_TTL_MS,
    UNLIMITED,
    WINDOW_MS,
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
local U, W, RX, RD, SD, SX = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]

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

-- Every expired reservation, batch after batch: for a status or a rebuild, which must not
-- count what an outage left behind (checks sweep one batch each, off their hot path).
local function sweep_all(now)
  while sweep(now) == __SWEEP__ do end
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

-- The checks of one account issued together, each checked on its own, in order, exactly as
-- if each were its own script. ARGV[5]: the requests joined with ';', each
-- "<now>|<reservation id>|<estimated tokens>|<ttl ms>|<member #>|<limits #>"; ARGV[6]: when
-- the period's keys expire (ms since the epoch); ARGV[7]: the distinct limits, joined with
-- ';'; ARGV[8..]: the distinct members (member # 0 = none). Members travel as arguments of
-- their own since they may hold any character. The replies are joined with ';'.
--
-- Few redis.call()s: each costs more than the Lua around it. The counters are read once and
-- written back once at the end (the script runs alone, so nothing moves in between); new
-- reservations are added together at the end too, or before a sweep that must see them.
local function checks()
  local out = {}
  local u = redis.call('HMGET', U, 'loaded', 'calls', 'tokens')
  if not u[1] then
    sweep(now)
    for _ in string.gmatch(ARGV[5], '[^;]+') do out[#out + 1] = '1' end
    return table.concat(out, ';')
  end
  local expire_at = tonumber(ARGV[6])
  local c, t = tonumber(u[2]) or 0, tonumber(u[3]) or 0
  local w = redis.call('HMGET', W, 'c', 't')
  local wc, wt = tonumber(w[1]) or 0, tonumber(w[2]) or 0
  local new_window = wc == 0 and wt == 0
  local written, admitted = false, false  -- U to write back; W too
  local members = {}  -- member -> {calls, tokens, changed}, read at first use
  local function member(mem)
    local m = members[mem]
    if not m then
      local v = redis.call('HMGET', U, 'mc:' .. mem, 'mt:' .. mem)
      m = {tonumber(v[1]) or 0, tonumber(v[2]) or 0, false}
      members[mem] = m
    end
    return m
  end
  local limits = {}
  for v in string.gmatch(ARGV[7], '[^;]+') do
    local L = {}
    for x in string.gmatch(v, '[^|]+') do L[#L + 1] = x end
    limits[#limits + 1] = {tonumber(L[1]), L[2], tonumber(L[3]), L[4], tonumber(L[5]),
                           tonumber(L[6]), tonumber(L[7]), tonumber(L[8]), tonumber(L[9])}
  end
  -- Reservations in RX (live or expired but not swept), the earliest expiry among them and
  -- the new ones, and the new ones not written yet.
  local stored = redis.call('ZCARD', RX)
  local first = redis.call('ZRANGE', RX, 0, 0, 'WITHSCORES')
  local earliest = first[2] and tonumber(first[2]) or math.huge
  local adds, datas, adds_expire = {}, {}, nil

  local function write_adds()
    if #adds == 0 then return end
    redis.call('ZADD', RX, unpack(adds))
    redis.call('HSET', RD, unpack(datas))
    -- New reservation keys live as long as the period's counters (load renews it).
    if stored == 0 then
      redis.call('PEXPIRE', RX, adds_expire)
      redis.call('PEXPIRE', RD, adds_expire)
    end
    stored = stored + #adds / 2
    adds, datas, adds_expire = {}, {}, nil
  end

  -- sweep() on the counters held here; true when it stopped at its batch size.
  local function sweep_here(at)
    write_adds()
    local expired = redis.call('ZRANGEBYSCORE', RX, '-inf', at, 'LIMIT', 0, __SWEEP__)
    for _, rid in ipairs(expired) do
      local data = redis.call('HGET', RD, rid)
      if data then
        local p, _, tk, mem = parse(data)
        if p == period and tk > 0 then
          t = t - tk
          written = true
          if mem ~= '' then
            local m = member(mem)
            m[2], m[3] = m[2] - tk, true
          end
        end
        redis.call('HDEL', RD, rid)
      end
      redis.call('ZREM', RX, rid)
    end
    stored = stored - #expired
    local head = redis.call('ZRANGE', RX, 0, 0, 'WITHSCORES')
    earliest = head[2] and tonumber(head[2]) or math.huge
    return #expired == __SWEEP__
  end

  for request in string.gmatch(ARGV[5], '[^;]+') do
    local at, rid, est, ttl, mi, li = string.match(
      request, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
    at, est, ttl, mi = tonumber(at), tonumber(est), tonumber(ttl), tonumber(mi)
    local L = limits[tonumber(li)]
    local cl, cp, tl, tp, mcl, mtl, rpm, tpm, conc =
      L[1], L[2], L[3], L[4], L[5], L[6], L[7], L[8], L[9]
    local mem, m, mc, mt = '', nil, 0, 0
    if mi > 0 then
      mem = ARGV[7 + mi]
      m = member(mem)
    end
    local reset = (tonumber(minute) + 1) * __WINDOW_MS__ - at
    local full = false
    if earliest <= at then full = sweep_here(at) end
    if m then mc, mt = m[1], m[2] end
    local live = stored + #adds / 2
    if full then
      write_adds()
      live = redis.call('ZCOUNT', RX, '(' .. at, '+inf')
    end
    -- A check needs at least one token of room: the model call will use some.
    local need = est
    if need < 1 then need = 1 end
    local r
    if cl >= 0 and cp == 'block' and c + 1 > cl then
      r = refuse('calls', cl, c + 1, 0, c, t, wc, wt, live, reset)
    elseif tl >= 0 and tp == 'block' and t + need > tl then
      r = refuse('tokens', tl, t + est, 0, c, t, wc, wt, live, reset)
    elseif m and mcl >= 0 and mc + 1 > mcl then
      r = refuse('member_calls', mcl, mc + 1, 0, c, t, wc, wt, live, reset)
    elseif m and mtl >= 0 and mt + need > mtl then
      r = refuse('member_tokens', mtl, mt + est, 0, c, t, wc, wt, live, reset)
    elseif rpm >= 0 and wc + 1 > rpm then
      r = refuse('rpm', rpm, wc + 1, reset, c, t, wc, wt, live, reset)
    elseif tpm >= 0 and wt + need > tpm then
      r = refuse('tpm', tpm, wt + est, reset, c, t, wc, wt, live, reset)
    elseif conc >= 0 and live + 1 > conc then
      r = refuse('concurrency', conc, live + 1, 1000, c, t, wc, wt, live, reset)
    else
      c, t, wc, wt = c + 1, t + est, wc + 1, wt + est
      written, admitted = true, true
      if m then m[1], m[2], m[3] = mc + 1, mt + est, true end
      local expires = at + ttl
      adds[#adds + 1] = expires
      adds[#adds + 1] = rid
      datas[#datas + 1] = rid
      datas[#datas + 1] = period .. '|' .. minute .. '|' .. int(est) .. '|' .. mem
      if adds_expire == nil then
        adds_expire = expire_at - at
        if adds_expire < 1 then adds_expire = 1 end
      end
      if expires < earliest then earliest = expires end
      local oc, ot = 0, 0
      if cl >= 0 and c > cl then oc = 1 end
      if tl >= 0 and t > tl then ot = 1 end
      -- One format for the whole reply: a call per number cost a third of the script.
      r = string.format('0,%d,%d,%d,%d,%d,%d,%d,%d', c, t, oc, ot, wc, wt, live + 1, reset)
    end
    out[#out + 1] = r
  end
  write_adds()
  if written then
    local fields = {'calls', int(c), 'tokens', int(t)}
    for mem, m in pairs(members) do
      if m[3] then
        fields[#fields + 1] = 'mc:' .. mem
        fields[#fields + 1] = int(m[1])
        fields[#fields + 1] = 'mt:' .. mem
        fields[#fields + 1] = int(m[2])
      end
    end
    redis.call('HSET', U, unpack(fields))
  end
  if admitted then
    redis.call('HSET', W, 'c', int(wc), 't', int(wt))
    if new_window then redis.call('PEXPIRE', W, __WINDOW_TTL__) end
  end
  return table.concat(out, ';')
end

if op == 'checks' then
  return checks()
end

-- A settled reservation is remembered for a while (kind c: committed, r: released, e: usage
-- named it), so usage naming it afterwards is told from usage naming an expired one.
local function mark(rid, kind, p, t, mem)
  redis.call('HSET', SD, rid, kind .. '|' .. p .. '|' .. int(t) .. '|' .. mem)
  redis.call('ZADD', SX, now + __MARKER_TTL__, rid)
  redis.call('PEXPIRE', SD, __MARKER_TTL__ + __WINDOW_TTL__)
  redis.call('PEXPIRE', SX, __MARKER_TTL__ + __WINDOW_TTL__)
  local old = redis.call('ZRANGEBYSCORE', SX, '-inf', now, 'LIMIT', 0, 10)
  if #old > 0 then
    redis.call('HDEL', SD, unpack(old))
    redis.call('ZREM', SX, unpack(old))
  end
end

-- Usage naming a reservation settled already: after a commit it is that call (its tokens
-- become the usage's); after a release or earlier usage it is another call, counted whole.
local function after_settled(rid, marker, actual)
  local kind, p, t, mem = string.match(marker, '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
  t = tonumber(t)
  local committed = kind == 'c'
  local calls, diff = 1, actual
  if committed then calls, diff = 0, actual - t end
  local used = -1
  if (p == period or not committed) and redis.call('EXISTS', U) == 1 then
    if calls > 0 then
      redis.call('HINCRBY', U, 'calls', calls)
      if mem ~= '' then redis.call('HINCRBY', U, 'mc:' .. mem, calls) end
    end
    if diff ~= 0 then
      redis.call('HINCRBY', U, 'tokens', diff)
      if mem ~= '' then redis.call('HINCRBY', U, 'mt:' .. mem, diff) end
    end
    used = tonumber(redis.call('HGET', U, 'tokens')) or 0
  end
  if diff > 0 then
    redis.call('HINCRBY', W, 't', diff)
    redis.call('PEXPIRE', W, __WINDOW_TTL__)
  end
  mark(rid, 'e', p, actual, mem)
  local reserved = 0
  if committed then reserved = t end
  return string.format('1,%d,%d,%d', reserved, diff, used)
end

-- commit: the client's; settle: stored usage naming the reservation; release.
if op == 'commit' or op == 'release' or op == 'settle' then
  sweep(now)
  local rid = ARGV[5]
  local data = redis.call('HGET', RD, rid)
  -- Replies as one string: far cheaper for the client to parse than an array.
  if not data then
    if op ~= 'settle' then return '0' end
    local marker = redis.call('HGET', SD, rid)
    if not marker or (tonumber(redis.call('ZSCORE', SX, rid)) or 0) <= now then return '0' end
    return after_settled(rid, marker, tonumber(ARGV[6]))
  end
  local p, m, t, mem = parse(data)
  local diff
  if op == 'release' then diff = -t else diff = tonumber(ARGV[6]) - t end
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
  if op == 'release' then
    mark(rid, 'r', p, 0, mem)
    diff = 0
  elseif op == 'commit' then
    mark(rid, 'c', p, t + diff, mem)
  else
    mark(rid, 'e', p, t + diff, mem)
  end
  return string.format('1,%d,%d,%d', t, diff, used)
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
  return string.format('%d,%d', c, t)
end

if op == 'status' then
  sweep_all(now)
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
  sweep_all(now)
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

if op == 'unload' then
  return redis.call('HDEL', U, 'loaded')
end
return redis.error_reply('unknown op ' .. op)
"""
for _name, _value in (
    ("__SWEEP__", SWEEP_BATCH),
    ("__WINDOW_TTL__", WINDOW_KEY_TTL_MS),
    ("__MARKER_TTL__", MARKER_TTL_MS),
    ("__WINDOW_MS__", WINDOW_MS),
):
    SCRIPT = SCRIPT.replace(_name, str(_value))

SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


def _translate(exc: RedisError) -> Exception:
    """Connection trouble becomes EngineUnavailable (the fail mode applies); the rest stays."""
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return EngineUnavailable(f"redis: {type(exc).__name__}")
    if "LOADING" in str(exc) or "MASTERDOWN" in str(exc):
        return EngineUnavailable(f"redis: {exc}")
    return exc


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _limit(value: int | None) -> int:
    return UNLIMITED if value is None else value


class _Batch:
    """Checks of one account, period and minute that go out as one `checks` call."""

    __slots__ = (
        "end_ms",
        "futures",
        "keys",
        "limits",
        "members",
        "minute",
        "now_ms",
        "period",
        "requests",
    )

    def __init__(self, keys: list[str], now_ms: int, minute: int, period: str, end_ms: int) -> None:
        self.keys = keys
        self.now_ms = now_ms
        self.minute = minute
        self.period = period
        self.end_ms = end_ms  # when the period's keys expire (ms since the epoch)
        self.requests: list[str] = []
        self.futures: list[asyncio.Future[bytes]] = []
        self.limits: dict[str, int] = {}  # packed limits -> number (from 1)
        self.members: dict[str, int] = {}  # member -> number (from 1; 0 = none)

    def args(self) -> list[Any]:
        return [
            "checks",
            self.now_ms,
            self.minute,
            self.period,
            ";".join(self.requests),
            self.end_ms,
            ";".join(self.limits),
            *self.members,
        ]


class _Single:
    """One command of another operation, sent in the next flush's pipeline."""

    __slots__ = ("arguments", "futures", "keys")

    def __init__(self, keys: list[str], arguments: list[Any], future: asyncio.Future[Any]) -> None:
        self.keys = keys
        self.arguments = arguments
        self.futures = [future]

    def args(self) -> list[Any]:
        return self.arguments


def _expire_at(period_end: datetime, now: datetime) -> int:
    # Relative to the caller's clock (a test clock may be far from Redis's own time).
    delta = period_end + PERIOD_GRACE - now  # integer ms, without a timedelta division
    return max((delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000, 1)


class RedisQuotaEngine:
    """Counters in Redis; atomic across processes and machines (one script call per operation,
    or per batch of checks, each check still atomic on its own)."""

    def __init__(
        self, client: aioredis.Redis, *, prefix: str = "", owns_client: bool = False
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the key prefix must not contain braces (they are the hash tag)")
        self.client = client
        self.prefix = prefix
        self.owns_client = owns_client
        self._packed_limits: dict[Limits, str] = {}
        self._last_limits: tuple[Limits | None, str] = (None, "")
        self._period_ends: dict[datetime, int] = {}
        # Checks waiting for the next flush, per (account, period, minute): their keys.
        self._pending: dict[tuple[str, str, int], _Batch] = {}
        # Commands ready to go at the next flush, in order: full batches, single commands.
        self._ready: list[_Batch | _Single] = []
        self._flush_scheduled = False
        self._flushes: set[asyncio.Task[None]] = set()

    def keys(self, account_id: str, period_key: str, minute: int) -> list[str]:
        base = f"{self.prefix}q:{{{account_id}}}:"
        return [
            f"{base}p:{period_key}",
            f"{base}w:{minute}",
            f"{base}rx",
            f"{base}rd",
            f"{base}sd",
            f"{base}sx",
        ]

    async def _run(self, keys: list[str], args: list[Any]) -> Any:
        try:
            try:
                return await self.client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
            except NoScriptError:
                # After a restart or SCRIPT FLUSH the cache is empty: load once and go on.
                await self.client.script_load(SCRIPT)
                return await self.client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
        except RedisError as exc:
            raise _translate(exc) from exc
        except OSError as exc:
            raise EngineUnavailable(f"redis: {type(exc).__name__}") from exc

    def _open(self, key: tuple[str, str, int], request: CheckRequest, now_ms: int) -> _Batch:
        full = self._pending.get(key)
        if full is not None:  # MAX_BATCH reached: it goes as a command of its own
            self._ready.append(full)
        account_id, period_key, minute = key
        end_ms = self._period_ends.get(request.period_end)
        if end_ms is None:
            if len(self._period_ends) > 10_000:
                self._period_ends.clear()
            end_ms = window_of(request.period_end + PERIOD_GRACE)[0]
            self._period_ends[request.period_end] = end_ms
        batch = self._pending[key] = _Batch(
            self.keys(account_id, period_key, minute), now_ms, minute, period_key, end_ms
        )
        self._schedule()
        return batch

    def _schedule(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._start_flush)

    async def _queued(self, keys: list[str], args: list[Any]) -> Any:
        """Runs one command with whatever else this loop turn sends (one pipeline): the
        settlements of /usage/track then share the client work, like checks do."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ready.append(_Single(keys, args, future))
        self._schedule()
        return await future

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        batches = [*self._ready, *self._pending.values()]
        self._ready, self._pending = [], {}
        task = asyncio.ensure_future(self._flush(batches))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, batches: list[_Batch | _Single]) -> None:
        """Checks issued in the same event-loop turn go out together: those of one account as
        ONE `checks` call (each still checked on its own inside the script), the calls of
        several accounts and other queued commands in one pipeline. The batch only saves the
        per-command client work (connection checkout, argument encoding, write, wake-up),
        which under load costs more than the script itself. A lone check goes out at the
        next loop turn."""
        commands = [(b.keys, b.args(), b.futures) for b in batches]
        try:
            if len(commands) == 1:
                results: list[Any] = [await self._run(commands[0][0], commands[0][1])]
            else:
                pipe = self.client.pipeline(transaction=False)
                for keys, args, _ in commands:
                    pipe.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
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
            elif args[0] != "checks":
                if not futures[0].done():
                    futures[0].set_result(result)
            else:
                for n, (future, part) in enumerate(zip(futures, result.split(b";"), strict=True)):
                    if not future.done():
                        future.set_result(part)
                    elif part.startswith(b"0,"):
                        # Its caller was cancelled meanwhile and never learns the reservation:
                        # give back its call, tokens and slot rather than hold them to expiry.
                        self._release_orphan(keys, args, n)

    def _release_orphan(self, keys: list[str], args: list[Any], n: int) -> None:
        """Releases the reservation of the n-th check of a `checks` command (rare: off the
        hot path). When the store cannot be reached, the reservation expires instead."""
        _, now_ms, minute, period, requests, *_ = args
        rid = requests.split(";")[n].split("|")[1]
        release = ["release", now_ms, minute, period, rid, 0]
        task = asyncio.ensure_future(self._release_quietly(keys, release))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _release_quietly(self, keys: list[str], args: list[Any]) -> None:
        with contextlib.suppress(EngineUnavailable, RedisError):
            await self._queued(keys, args)

    def _pack(self, limits: Limits) -> str:
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
            )
        # The same Limits object comes back check after check (cached per account): spare
        # hashing its nine fields. Holding it keeps its id from being reused.
        self._last_limits = (limits, packed)
        return packed

    async def check(self, request: CheckRequest, limits: Limits) -> CheckOutcome:
        now_ms, minute, _ = window_of(request.now)
        key = (request.account_id, request.period_key, minute)
        batch = self._pending.get(key)
        if batch is None or len(batch.futures) >= MAX_BATCH:
            batch = self._open(key, request, now_ms)
        last = self._last_limits
        packed = last[1] if last[0] is limits else self._pack(limits)
        limits_no = batch.limits.get(packed)
        if limits_no is None:
            limits_no = batch.limits[packed] = len(batch.limits) + 1
        member_no = 0
        if request.member:
            member_no = batch.members.get(request.member, 0)
            if not member_no:
                member_no = batch.members[request.member] = len(batch.members) + 1
        batch.requests.append(
            f"{now_ms}|{request.reservation_id}|{request.estimated_tokens}|"
            f"{request.ttl_seconds * 1000}|{member_no}|{limits_no}"
        )
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        batch.futures.append(future)
        result = (await future).split(b",")
        verdict = result[0]
        if verdict == b"0":
            _, c, t, oc, ot, wc, wt, live, reset = result
            # Positional: the hot path's one outcome per check.
            return CheckOutcome(
                Verdict.ADMITTED,
                None,
                None,
                None,
                0,
                int(c),
                int(t),
                oc == b"1",
                ot == b"1",
                int(wc),
                int(wt),
                int(live),
                int(reset),
            )
        if verdict == b"1":
            return CheckOutcome(Verdict.NOT_LOADED)
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
        result = await self._queued(
            self.keys(account_id, period_key, minute),
            [op, now_ms, minute, period_key, reservation_id, actual],
        )
        if result == b"0":
            return Settlement(found=False)
        _, reserved, difference, used = (int(v) for v in result.split(b","))
        return Settlement(
            found=True,
            reserved_tokens=reserved,
            difference=difference,
            tokens_used=None if used < 0 else used,
        )

    async def commit(
        self,
        account_id: str,
        period_key: str,
        reservation_id: str,
        actual_tokens: int,
        now: datetime,
        *,
        by_event: bool = False,
    ) -> Settlement:
        op = "settle" if by_event else "commit"
        return await self._settle(op, account_id, period_key, reservation_id, now, actual_tokens)

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
        reply = await self._queued(
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
        calls_used, tokens_used = reply.split(b",")
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

    async def unload(self, account_id: str, period_key: str) -> None:
        await self._run(self.keys(account_id, period_key, 0), ["unload", 0, 0, period_key])

    async def close(self) -> None:
        if self.owns_client:
            await self.client.aclose()
