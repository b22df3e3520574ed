"""Tests for kit.pagination: cursor round trips, garbage cursors, Page, limit clamping."""

from __future__ import annotations

import base64
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from aihub_billing.kit.pagination import (
    InvalidCursor,
    Page,
    clamp_limit,
    decode_cursor,
    encode_cursor,
    id_page,
)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["a"],
        [1],
        [0, -5],
        ["2025-01-31T12:00:00+00:00", "inv_01JJ0000000000000000000000"],
        ["ü€😀", 2**70],
        ["", '"quoted", [not json]', "\\"],
    ],
)
def test_round_trip(values: list[str | int]) -> None:
    cursor = encode_cursor(values)
    assert re.fullmatch(r"[A-Za-z0-9_-]*", cursor)
    assert decode_cursor(cursor, len(values)) == values


def test_accepts_tuples() -> None:
    assert decode_cursor(encode_cursor(("a", 1)), 2) == ["a", 1]


@pytest.mark.parametrize("values", [[True], [1.5], [None], [["nested"]], [{"a": 1}], [b"x"]])
def test_encode_refuses_other_types(values: list[object]) -> None:
    with pytest.raises(TypeError):
        encode_cursor(values)  # type: ignore[arg-type]


def test_encode_refuses_oversized() -> None:
    with pytest.raises(ValueError, match="longer"):
        encode_cursor(["x" * 400])


@pytest.mark.parametrize(
    ("cursor", "arity"),
    [
        ("", 1),
        ("!!!!", 1),
        ("a", 1),  # impossible base64 length
        ("WyJhIl0=", 1),  # padding is not part of the format
        ("WyJh Il0", 1),
        ("WyJhIl0\n", 1),
        ("WyJhIl0+", 1),  # standard, not URL-safe, alphabet
        (b64(b"not json"), 1),
        (b64(b"\xff\xfe\x00"), 1),  # not UTF-8
        (b64(b'{"a": 1}'), 1),
        (b64(b'"a"'), 1),
        (b64(b"1"), 1),
        (b64(b"null"), 1),
        (b64(b'["a"]'), 2),  # wrong arity
        (b64(b'["a","b"]'), 1),
        (b64(b"[]"), 1),
        (b64(b"[true]"), 1),
        (b64(b"[1.5]"), 1),
        (b64(b"[1e400]"), 1),
        (b64(b"[NaN]"), 1),
        (b64(b"[null]"), 1),
        (b64(b'[["a"]]'), 1),
        (b64(b'[{"a":1}]'), 1),
        (b64(b'["\\ud800"]'), 1),  # lone surrogate
        (b64(b"[" * 300 + b"]" * 300), 1),
        ("A" * 513, 1),
        (encode_cursor(["x" * 300]) + "A" * 120, 1),
    ],
)
def test_decode_refuses_garbage(cursor: str, arity: int) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor, arity)


@pytest.mark.parametrize("cursor", [None, 123, b"WyJhIl0", ["a"]])
def test_decode_refuses_non_str(cursor: object) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor, 1)  # type: ignore[arg-type]


def test_invalid_cursor_is_value_error() -> None:
    assert issubclass(InvalidCursor, ValueError)


cursor_values = st.lists(
    st.one_of(st.text(max_size=20), st.integers(min_value=-(10**30), max_value=10**30)),
    max_size=3,
)


@given(cursor_values)
def test_round_trip_property(values: list[str | int]) -> None:
    assert decode_cursor(encode_cursor(values), len(values)) == values


def _decode_or_invalid(cursor: str, arity: int) -> None:
    try:
        result = decode_cursor(cursor, arity)
    except InvalidCursor:
        return
    assert len(result) == arity
    assert all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in result)


@given(st.text(max_size=600), st.integers(min_value=0, max_value=4))
def test_any_text_decodes_or_raises_invalid_cursor(cursor: str, arity: int) -> None:
    _decode_or_invalid(cursor, arity)


@given(st.binary(max_size=400), st.integers(min_value=0, max_value=4))
def test_any_payload_decodes_or_raises_invalid_cursor(raw: bytes, arity: int) -> None:
    _decode_or_invalid(b64(raw), arity)


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=5), children, max_size=3)
        ),
        max_leaves=8,
    ),
    st.integers(min_value=0, max_value=4),
)
def test_any_json_decodes_or_raises_invalid_cursor(data: object, arity: int) -> None:
    _decode_or_invalid(b64(json.dumps(data).encode()), arity)


class TestPage:
    def test_defaults(self) -> None:
        page = Page[int](items=[1, 2, 3])
        assert page.items == [1, 2, 3]
        assert page.next_cursor is None

    def test_validates_items(self) -> None:
        with pytest.raises(ValidationError):
            Page[int](items=["not a number"])  # type: ignore[list-item]

    def test_json(self) -> None:
        page = Page[str](items=["a"], next_cursor=encode_cursor(["a", 1]))
        dumped = page.model_dump(mode="json")
        assert dumped == {"items": ["a"], "next_cursor": page.next_cursor}
        assert Page[str].model_validate_json(page.model_dump_json()) == page


@pytest.mark.parametrize(
    ("limit", "kwargs", "expected"),
    [
        (None, {}, 50),
        (10, {}, 10),
        (200, {}, 200),
        (201, {}, 200),
        (10_000, {}, 200),
        (0, {}, 1),
        (-5, {}, 1),
        (1, {}, 1),
        (None, {"default": 20}, 20),
        (None, {"default": 500, "maximum": 100}, 100),
        (150, {"maximum": 100}, 100),
    ],
)
def test_clamp_limit(limit: int | None, kwargs: dict[str, int], expected: int) -> None:
    assert clamp_limit(limit, **kwargs) == expected


async def test_id_page_walks_rows_in_pages_and_stops_on_the_last() -> None:
    class Row:
        def __init__(self, id: str) -> None:
            self.id = id

    rows = [Row(f"r{i:02d}") for i in range(5)]
    asked: list[tuple[str | None, int]] = []

    async def fetch(after: str | None, n: int) -> list[Row]:
        asked.append((after, n))
        return [r for r in rows if after is None or r.id > after][:n]

    first, cursor = await id_page(None, 2, fetch)
    second, cursor2 = await id_page(cursor, 2, fetch)
    last, end = await id_page(cursor2, 2, fetch)
    assert [[r.id for r in page] for page in (first, second, last)] == [
        ["r00", "r01"],
        ["r02", "r03"],
        ["r04"],
    ]
    assert end is None
    assert asked == [(None, 3), ("r01", 3), ("r03", 3)]  # one more than the page, to know
    with pytest.raises(InvalidCursor):
        await id_page("not a cursor!", 2, fetch)
