"""Keyset pagination: opaque cursors, a generic Page model, and limit clamping."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

from pydantic import BaseModel

__all__ = [
    "InvalidCursor",
    "Page",
    "clamp_limit",
    "decode_cursor",
    "encode_cursor",
    "id_page",
]

T = TypeVar("T")

MAX_CURSOR_LENGTH = 512
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")


class InvalidCursor(ValueError):
    """The cursor was not produced by encode_cursor (or has been tampered with)."""


def _is_cursor_value(value: object) -> bool:
    # bool is an int subclass, but JSON true/false is never a key value we emit.
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def encode_cursor(values: Sequence[str | int]) -> str:
    """Encode key values as base64url of compact JSON, without padding."""
    items = list(values)
    if not all(_is_cursor_value(v) for v in items):
        raise TypeError("cursor values must be str or int")
    raw = json.dumps(items, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    cursor = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    if len(cursor) > MAX_CURSOR_LENGTH:
        # decode_cursor would refuse it; fail where the bug is.
        raise ValueError(f"cursor longer than {MAX_CURSOR_LENGTH} characters")
    return cursor


def decode_cursor(cursor: str, arity: int) -> list[str | int]:
    """Decode a cursor holding exactly `arity` str/int values; InvalidCursor for anything else."""
    if not isinstance(cursor, str) or len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor("invalid cursor")
    # The stdlib decoder silently drops unknown characters, so check the alphabet first.
    if not _B64URL_RE.fullmatch(cursor) or len(cursor) % 4 == 1:
        raise InvalidCursor("invalid cursor")
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        raw = base64.b64decode(padded, altchars=b"-_", validate=True)
        data = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, RecursionError):
        raise InvalidCursor("invalid cursor") from None
    if not isinstance(data, list) or len(data) != arity:
        raise InvalidCursor("invalid cursor")
    values: list[str | int] = []
    for value in data:
        if not _is_cursor_value(value):
            raise InvalidCursor("invalid cursor")
        if isinstance(value, str):
            try:
                # JSON can smuggle lone surrogates that would fail later in the database driver.
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidCursor("invalid cursor") from None
        values.append(value)
    return values


class Page(BaseModel, Generic[T]):
    """One page of results; `next_cursor` is None on the last page."""

    items: list[T]
    next_cursor: str | None = None


def clamp_limit(limit: int | None, default: int = 50, maximum: int = 200) -> int:
    """The page size to use: `default` when absent, otherwise clamped to [1, maximum]."""
    if limit is None:
        return min(default, maximum)
    return max(1, min(limit, maximum))


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


R = TypeVar("R", bound=_HasId)


async def id_page(
    cursor: str | None,
    limit: int | None,
    fetch: Callable[[str | None, int], Awaitable[Sequence[R]]],
) -> tuple[list[R], str | None]:
    """One page keyed by id: `fetch(boundary_id, n)` returns up to n rows past the boundary
    (in its own order, ascending or descending); the next cursor is there when more remain."""
    size = clamp_limit(limit)
    boundary = str(decode_cursor(cursor, 1)[0]) if cursor else None
    rows = list(await fetch(boundary, size + 1))
    next_cursor = encode_cursor([rows[size - 1].id]) if len(rows) > size else None
    return rows[:size], next_cursor
