"""Prefixed, time-sortable identifiers (`inv_01J...`, a ULID body) and random secret tokens."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
from datetime import UTC, datetime, timedelta

from aihub_billing.kit.clock import SystemClock, ensure_utc

__all__ = ["derived_id", "id_prefix", "is_valid_id", "new_id", "new_token"]

# Crockford base32: no I, L, O, U, so ids survive being read aloud or retyped.
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PREFIX_RE = re.compile(r"[a-z][a-z0-9]{1,11}")
# 26 chars carry 130 bits for 128 used ones, so the first char is at most 7.
_BODY_RE = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
_BODY_LEN = 26
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_MS = (1 << 48) - 1
# Two digits per 10 bits: the 130-bit body is 13 table lookups, not 26 divmods.
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_SHIFTS = tuple(range(120, -1, -10))
_MS = timedelta(milliseconds=1)


def _check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"id prefix must match ^[a-z][a-z0-9]{{1,11}}$, got {prefix!r}")
    return prefix


class _Monotonic:
    """Monotonic ULIDs within a process: in the same millisecond the next id is the last one
    plus one, so ids made in sequence sort in sequence (bursts, frozen test clocks). The last
    id is kept per millisecond, so callers on different clocks don't disturb each other."""

    _KEEP = 1024

    _RANDOM_CHUNK = 4096  # bytes of OS randomness read at once: 409 ids per read

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[int, int] = {}
        self._random = b""
        self._used = 0

    def _random80(self) -> int:
        # 80 bits from the OS's CSPRNG (as secrets.randbits), read in chunks: one read
        # per id was a system call on every quota check. Called under the lock.
        if self._used + 10 > len(self._random):
            self._random, self._used = secrets.token_bytes(self._RANDOM_CHUNK), 0
        start = self._used
        self._used = start + 10
        return int.from_bytes(self._random[start : start + 10], "big")

    def next(self, ms: int) -> int:
        with self._lock:
            last = self._last.get(ms)
            if last is not None and (last + 1) >> 80 == ms:
                value = last + 1
            else:
                value = (ms << 80) | self._random80()
            # Re-inserted, so the dict's order is of last use: a frozen clock's millisecond,
            # first seen long ago but still in use, is not the one dropped.
            self._last.pop(ms, None)
            self._last[ms] = value
            if len(self._last) > self._KEEP:
                # dicts keep insertion order: drop the millisecond least recently used.
                del self._last[next(iter(self._last))]
            return value

    def forget_random(self) -> None:
        """A forked child must not reuse its parent's unread random bytes."""
        self._random, self._used = b"", 0


_monotonic = _Monotonic()
os.register_at_fork(after_in_child=_monotonic.forget_random)


def _ulid(at: datetime) -> str:
    # Integer arithmetic on the timedelta avoids float rounding of the milliseconds.
    ms = ((at if at.tzinfo is UTC else ensure_utc(at)) - _EPOCH) // _MS
    if not 0 <= ms <= _MAX_MS:
        raise ValueError(f"timestamp out of ULID range: {at.isoformat()}")
    value = _monotonic.next(ms)
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


def new_id(prefix: str, at: datetime | None = None) -> str:
    """A new `{prefix}_{ULID}` id; ids sort by time, and in creation order within a process.

    Pass `at` (the injected clock's time) so ids agree with the rest of the record.
    """
    _check_prefix(prefix)
    return f"{prefix}_{_ulid(at if at is not None else SystemClock().now())}"


def derived_id(prefix: str, at: datetime, seed: str) -> str:
    """The same `{prefix}_{ULID}` for the same (at, seed): time part from `at`, the 80 random
    bits from SHA-256 of `seed`. For a row that a retried transaction must recreate under the
    same id (its id travels to a provider inside an idempotent request)."""
    _check_prefix(prefix)
    ms = (ensure_utc(at) - _EPOCH) // timedelta(milliseconds=1)
    if not 0 <= ms <= _MAX_MS:
        raise ValueError(f"timestamp out of ULID range: {at.isoformat()}")
    value = (ms << 80) | int.from_bytes(hashlib.sha256(seed.encode()).digest()[:10], "big")
    chars = []
    for _ in range(_BODY_LEN):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return f"{prefix}_{''.join(reversed(chars))}"


def new_token(nbytes: int = 32) -> str:
    """A URL-safe random string of `nbytes` random bytes; keep the default 32 for secrets."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 1:
        raise ValueError(f"nbytes must be a positive int, got {nbytes!r}")
    return secrets.token_urlsafe(nbytes)


def is_valid_id(value: str, prefix: str) -> bool:
    """True if `value` is `{prefix}_` followed by a 26-character Crockford ULID body."""
    head, sep, body = value.partition("_")
    return bool(sep) and head == prefix and _BODY_RE.fullmatch(body) is not None


def id_prefix(value: str) -> str:
    """The prefix of a well-formed id (`inv_01J...` -> "inv"); ValueError otherwise."""
    head = value.partition("_")[0] if isinstance(value, str) else ""
    if not _PREFIX_RE.fullmatch(head) or not is_valid_id(value, head):
        raise ValueError(f"not a well-formed id: {value!r}")
    return head
