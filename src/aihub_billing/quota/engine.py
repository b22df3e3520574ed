"""The quota engine contract: one atomic check-and-consume, reservations, counters.

Rate windows are FIXED one-minute windows aligned to UTC minutes: RPM counts admitted checks
and TPM counts reserved + recorded tokens whose time falls in [hh:mm:00, hh:mm+1:00). Within
one such window neither is ever admitted beyond its limit; across a boundary a client may get
up to twice the limit within 60 seconds (the price of one counter per window instead of a
log of every request).

Monthly counters hold used calls and tokens of the period, reserved tokens included. Policy
`block` refuses a check that would pass the limit; `bill` admits it and flags the overage.
Member caps (per member or API key) always block. Concurrency counts live reservations.
Every admitted check holds a reservation (the call, its estimated tokens and a slot) until
commit, release or expiry; expiry returns the tokens and the slot (the call stays counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import NamedTuple, Protocol

__all__ = [
    "CheckOutcome",
    "CheckRequest",
    "EngineUnavailable",
    "Limits",
    "QuotaEngine",
    "Settlement",
    "Status",
    "Verdict",
]

UNLIMITED = -1
WINDOW_MS = 60_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class EngineUnavailable(Exception):
    """The counter store (Redis) could not be reached; the service applies quota_fail_mode."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Effective limits of one account; None = unlimited."""

    calls: int | None = None
    tokens: int | None = None
    calls_policy: str = "block"
    tokens_policy: str = "block"
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    member_calls: int | None = None
    member_tokens: int | None = None


# The check's request and outcome are NamedTuples, immutable like the frozen dataclasses
# elsewhere but built in a fifth of the time: one of each per quota check, the hot path.
class CheckRequest(NamedTuple):
    account_id: str
    period_key: str  # e.g. "2026-01": which monthly counters apply
    period_end: datetime  # reset time of the monthly counters; keys expire after it
    now: datetime
    reservation_id: str
    estimated_tokens: int = 0
    member: str | None = None  # member id or API key id the sub-cap applies to
    ttl_seconds: int = 300


class Verdict(IntEnum):
    ADMITTED = 0
    NOT_LOADED = 1  # counters of the period were lost (or never loaded): rebuild, then retry
    REFUSED = 2


class CheckOutcome(NamedTuple):
    verdict: Verdict
    # On refusal: which limit ("calls", "tokens", "member_calls", "member_tokens", "rpm",
    # "tpm", "concurrency"), its value, and what the check would have made it.
    limit_name: str | None = None
    limit_value: int | None = None
    attempted: int | None = None
    retry_after_ms: int = 0
    calls_used: int = 0  # after this check (before it, on refusal)
    tokens_used: int = 0
    calls_overage: bool = False
    tokens_overage: bool = False
    rpm_used: int = 0
    tpm_used: int = 0
    concurrent: int = 0
    window_reset_ms: int = 0  # milliseconds until the current rate window ends

    @property
    def admitted(self) -> bool:
        return self.verdict is Verdict.ADMITTED

    @property
    def overage(self) -> bool:
        return self.calls_overage or self.tokens_overage


# How long a settled reservation is remembered (usage naming it after a commit or a release).
MARKER_TTL_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class Settlement:
    """Result of commit/release: `difference` is actual - reserved tokens (0 on release)."""

    found: bool
    reserved_tokens: int = 0
    difference: int = 0
    tokens_used: int | None = None  # the period's tokens after settling (None: other period)


@dataclass(frozen=True, slots=True)
class Status:
    loaded: bool
    calls_used: int
    tokens_used: int
    rpm_used: int
    tpm_used: int
    concurrent: int
    window_reset_ms: int
    member_calls_used: int = 0
    member_tokens_used: int = 0


class QuotaEngine(Protocol):
    """Counters and reservations; both implementations pass tests/quota/test_engine.py."""

    async def check(self, request: CheckRequest, limits: Limits) -> CheckOutcome:
        """Atomically checks every limit and, when all pass, consumes and reserves."""
        ...

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
        """Settles a reservation with the real token count; the call stays counted.

        `period_key` is the current period; a reservation of an earlier period leaves that
        period's counters as they were (the usage table settles the bill). A settled
        reservation is remembered for MARKER_TTL_MS: with `by_event` (stored usage naming
        it), one committed already is that call (its tokens become the usage's), one
        released or named by earlier usage is another call (counted whole); found=False
        only for one expired or unknown.
        """
        ...

    async def release(
        self, account_id: str, period_key: str, reservation_id: str, now: datetime
    ) -> Settlement:
        """Cancels a reservation: returns its call, tokens and slot."""
        ...

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
        """Adds usage that came without a reservation (monthly counters and TPM).

        Returns the period's (calls, tokens) after it.
        """
        ...

    async def status(
        self, account_id: str, period_key: str, now: datetime, member: str | None = None
    ) -> Status:
        """Current counters, after sweeping expired reservations."""
        ...

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
        """Sets the period's counters from the database and marks them loaded.

        Without `force`, does nothing when already loaded (returns False). Tokens of live
        reservations are added on top, since the database does not know them yet.
        """
        ...

    async def is_loaded(self, account_id: str, period_key: str) -> bool:
        """Whether the period's counters exist (a flush or restart removes the marker)."""
        ...

    async def unload(self, account_id: str, period_key: str) -> None:
        """Removes the period's `loaded` marker: the counters count usage the database does
        not hold, and the next check in any process rebuilds them (live reservations kept)."""
        ...

    async def close(self) -> None: ...


def window_of(now: datetime) -> tuple[int, int, int]:
    """(now in ms since the epoch, index of the current minute window, ms until it ends)."""
    delta = now - _EPOCH  # integer ms (no float rounding), without a timedelta division
    now_ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    minute = now_ms // WINDOW_MS
    return now_ms, minute, (minute + 1) * WINDOW_MS - now_ms
