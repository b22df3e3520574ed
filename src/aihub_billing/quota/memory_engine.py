"""The in-process quota engine: the Redis script's semantics under one asyncio lock.

Atomic within ONE process and event loop only; several workers need the Redis engine (each
process would otherwise count on its own). Counters are lost on restart and rebuilt.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

from aihub_billing.quota.engine import (
    MARKER_TTL_MS,
    WINDOW_MS,
    CheckOutcome,
    CheckRequest,
    Limits,
    Settlement,
    Status,
    Verdict,
    window_of,
)


@dataclass
class _Usage:
    calls: int = 0
    tokens: int = 0
    member_calls: dict[str, int] = field(default_factory=dict)
    member_tokens: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Reservation:
    period: str
    minute: int
    tokens: int
    member: str
    expires_ms: int


@dataclass(frozen=True, slots=True)
class _Marker:
    """A reservation settled lately: `kind` c (committed), r (released), e (usage named it)."""

    kind: str
    period: str
    tokens: int
    member: str
    expires_ms: int


@dataclass
class _Account:
    periods: dict[str, _Usage] = field(default_factory=dict)  # present = loaded
    windows: dict[int, list[int]] = field(default_factory=dict)  # minute -> [calls, tokens]
    reservations: dict[str, _Reservation] = field(default_factory=dict)
    settled: dict[str, _Marker] = field(default_factory=dict)

    def mark(self, rid: str, kind: str, period: str, tokens: int, member: str, now_ms: int) -> None:
        # Insertion order is expiry order (one TTL): the oldest go first.
        self.settled.pop(rid, None)
        self.settled[rid] = _Marker(kind, period, tokens, member, now_ms + MARKER_TTL_MS)
        for old in list(self.settled)[:10]:
            if self.settled[old].expires_ms > now_ms:
                break
            del self.settled[old]

    def window(self, minute: int) -> list[int]:
        if minute not in self.windows:
            # Only the current window is ever read: drop the older ones.
            self.windows = {minute: [0, 0]}
        return self.windows[minute]

    def sweep(self, now_ms: int) -> None:
        expired = [rid for rid, r in self.reservations.items() if r.expires_ms <= now_ms]
        for rid in expired:
            r = self.reservations.pop(rid)
            usage = self.periods.get(r.period)
            if usage is not None and r.tokens > 0:
                usage.tokens -= r.tokens
                if r.member:
                    _add(usage.member_tokens, r.member, -r.tokens)

    def live(self, now_ms: int) -> int:
        return sum(1 for r in self.reservations.values() if r.expires_ms > now_ms)


def _add(counter: dict[str, int], key: str, delta: int) -> None:
    counter[key] = counter.get(key, 0) + delta


class MemoryQuotaEngine:
    """Counters in this process's memory (the embedded default)."""

    def __init__(self) -> None:
        self._accounts: dict[str, _Account] = {}
        self._lock = asyncio.Lock()

    def _account(self, account_id: str) -> _Account:
        account = self._accounts.get(account_id)
        if account is None:
            account = self._accounts[account_id] = _Account()
        return account

    async def check(self, request: CheckRequest, limits: Limits) -> CheckOutcome:
        now_ms, minute, reset = window_of(request.now)
        async with self._lock:
            account = self._account(request.account_id)
            usage = account.periods.get(request.period_key)
            if usage is None:
                return CheckOutcome(Verdict.NOT_LOADED)
            account.sweep(now_ms)
            est, mem = request.estimated_tokens, request.member or ""
            c, t = usage.calls, usage.tokens
            mc, mt = usage.member_calls.get(mem, 0), usage.member_tokens.get(mem, 0)
            window = account.window(minute)
            wc, wt = window
            live = account.live(now_ms)
            need = max(est, 1)

            def refuse(name: str, limit: int, attempted: int, retry: int) -> CheckOutcome:
                return CheckOutcome(
                    Verdict.REFUSED,
                    limit_name=name,
                    limit_value=limit,
                    attempted=attempted,
                    retry_after_ms=retry,
                    calls_used=c,
                    tokens_used=t,
                    rpm_used=wc,
                    tpm_used=wt,
                    concurrent=live,
                    window_reset_ms=reset,
                )

            if limits.calls is not None and limits.calls_policy == "block" and c + 1 > limits.calls:
                return refuse("calls", limits.calls, c + 1, 0)
            if (
                limits.tokens is not None
                and limits.tokens_policy == "block"
                and t + need > limits.tokens
            ):
                return refuse("tokens", limits.tokens, t + est, 0)
            if mem:
                if limits.member_calls is not None and mc + 1 > limits.member_calls:
                    return refuse("member_calls", limits.member_calls, mc + 1, 0)
                if limits.member_tokens is not None and mt + need > limits.member_tokens:
                    return refuse("member_tokens", limits.member_tokens, mt + est, 0)
            if limits.rpm is not None and wc + 1 > limits.rpm:
                return refuse("rpm", limits.rpm, wc + 1, reset)
            if limits.tpm is not None and wt + need > limits.tpm:
                return refuse("tpm", limits.tpm, wt + est, reset)
            if limits.concurrency is not None and live + 1 > limits.concurrency:
                return refuse("concurrency", limits.concurrency, live + 1, 1000)
            usage.calls += 1
            usage.tokens += est
            if mem:
                _add(usage.member_calls, mem, 1)
                _add(usage.member_tokens, mem, est)
            window[0] += 1
            window[1] += est
            account.reservations[request.reservation_id] = _Reservation(
                request.period_key, minute, est, mem, now_ms + request.ttl_seconds * 1000
            )
            return CheckOutcome(
                Verdict.ADMITTED,
                calls_used=c + 1,
                tokens_used=t + est,
                calls_overage=limits.calls is not None and c + 1 > limits.calls,
                tokens_overage=limits.tokens is not None and t + est > limits.tokens,
                rpm_used=wc + 1,
                tpm_used=wt + est,
                concurrent=live + 1,
                window_reset_ms=reset,
            )

    async def _settle(
        self,
        account_id: str,
        period_key: str,
        rid: str,
        now: datetime,
        actual: int | None,
        by_event: bool = False,
    ) -> Settlement:
        now_ms, minute, _ = window_of(now)
        async with self._lock:
            account = self._account(account_id)
            account.sweep(now_ms)
            r = account.reservations.pop(rid, None)
            if r is None:
                marker = account.settled.get(rid) if by_event else None
                if marker is None or marker.expires_ms <= now_ms or actual is None:
                    return Settlement(found=False)
                return self._after_settled(account, rid, marker, period_key, now_ms, actual)
            release = actual is None
            kind = "r" if release else "e" if by_event else "c"
            account.mark(rid, kind, r.period, actual or 0, r.member, now_ms)
            diff = -r.tokens if actual is None else actual - r.tokens
            usage = account.periods.get(period_key)
            used = None
            if r.period == period_key and usage is not None:
                usage.tokens += diff
                if r.member:
                    _add(usage.member_tokens, r.member, diff)
                if release:
                    usage.calls -= 1
                    if r.member:
                        _add(usage.member_calls, r.member, -1)
                used = usage.tokens
            window = account.window(minute)
            if r.minute == minute:
                window[1] += diff
                if release:
                    window[0] -= 1
            elif diff > 0:
                window[1] += diff
            return Settlement(
                found=True,
                reserved_tokens=r.tokens,
                difference=0 if release else diff,
                tokens_used=used,
            )

    @staticmethod
    def _after_settled(
        account: _Account, rid: str, marker: _Marker, period_key: str, now_ms: int, actual: int
    ) -> Settlement:
        """Usage naming a reservation settled already: after a commit it is that call (its
        tokens move to the usage's); otherwise it is another call, counted whole."""
        committed = marker.kind == "c"
        calls, diff = (0, actual - marker.tokens) if committed else (1, actual)
        usage = account.periods.get(period_key)
        used = None
        if usage is not None and (marker.period == period_key or not committed):
            usage.calls += calls
            usage.tokens += diff
            if marker.member:
                _add(usage.member_calls, marker.member, calls)
                _add(usage.member_tokens, marker.member, diff)
            used = usage.tokens
        if diff > 0:
            account.window(now_ms // WINDOW_MS)[1] += diff
        account.mark(rid, "e", marker.period, actual, marker.member, now_ms)
        return Settlement(
            found=True,
            reserved_tokens=marker.tokens if committed else 0,
            difference=diff,
            tokens_used=used,
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
        return await self._settle(
            account_id, period_key, reservation_id, now, actual_tokens, by_event
        )

    async def release(
        self, account_id: str, period_key: str, reservation_id: str, now: datetime
    ) -> Settlement:
        return await self._settle(account_id, period_key, reservation_id, now, None)

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
        _, minute, _ = window_of(now)
        async with self._lock:
            account = self._account(account_id)
            # Like HINCRBY on a missing hash: counts, but the period stays "not loaded".
            usage = account.periods.get(period_key)
            if usage is not None:
                usage.calls += calls
                usage.tokens += tokens
                if member:
                    _add(usage.member_calls, member, calls)
                    _add(usage.member_tokens, member, tokens)
            account.window(minute)[1] += tokens
            return (usage.calls, usage.tokens) if usage is not None else (calls, tokens)

    async def status(
        self, account_id: str, period_key: str, now: datetime, member: str | None = None
    ) -> Status:
        now_ms, minute, reset = window_of(now)
        async with self._lock:
            account = self._account(account_id)
            account.sweep(now_ms)
            usage = account.periods.get(period_key)
            window = account.window(minute)
            mem = member or ""
            return Status(
                loaded=usage is not None,
                calls_used=usage.calls if usage else 0,
                tokens_used=usage.tokens if usage else 0,
                rpm_used=window[0],
                tpm_used=window[1],
                concurrent=account.live(now_ms),
                window_reset_ms=reset,
                member_calls_used=usage.member_calls.get(mem, 0) if usage else 0,
                member_tokens_used=usage.member_tokens.get(mem, 0) if usage else 0,
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
        now_ms, _, _ = window_of(now)
        async with self._lock:
            account = self._account(account_id)
            if not force and period_key in account.periods:
                return False
            account.sweep(now_ms)
            usage = _Usage(calls=calls, tokens=tokens)
            for member, (member_calls, member_tokens) in (members or {}).items():
                usage.member_calls[member] = member_calls
                usage.member_tokens[member] = member_tokens
            for r in account.reservations.values():
                if r.period == period_key:
                    usage.calls += 1
                    usage.tokens += r.tokens
                    if r.member:
                        _add(usage.member_calls, r.member, 1)
                        _add(usage.member_tokens, r.member, r.tokens)
            # Older periods are over: keep only the one being loaded.
            account.periods = {period_key: usage}
            return True

    async def is_loaded(self, account_id: str, period_key: str) -> bool:
        account = self._accounts.get(account_id)
        return account is not None and period_key in account.periods

    async def unload(self, account_id: str, period_key: str) -> None:
        async with self._lock:
            account = self._accounts.get(account_id)
            if account is not None:
                account.periods.pop(period_key, None)

    def forget(self) -> None:
        """Drops every counter, as a Redis flush would (tests of the rebuild use it)."""
        self._accounts.clear()

    async def close(self) -> None:
        return None
