"""Tests for kit.ids: prefixed ULIDs that sort by creation time, and random tokens."""

from __future__ import annotations

import os
import random
import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aihub_billing.kit.ids import _Monotonic, id_prefix, is_valid_id, new_id, new_token

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ID_RE = re.compile(r"inv_[0-7][0-9A-HJKMNP-TV-Z]{25}")
T0 = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)


def decode_ms(value: str) -> int:
    body = value.partition("_")[2]
    ms = 0
    for char in body[:10]:
        ms = ms * 32 + CROCKFORD.index(char)
    return ms


def test_format() -> None:
    value = new_id("inv", T0)
    assert ID_RE.fullmatch(value)
    assert len(value) == len("inv_") + 26
    assert is_valid_id(value, "inv")
    assert id_prefix(value) == "inv"


def test_defaults_to_system_clock() -> None:
    assert is_valid_id(new_id("sub"), "sub")


def test_timestamp_is_encoded_in_milliseconds() -> None:
    at = datetime(2025, 1, 31, 12, 0, 0, 123999, tzinfo=UTC)
    expected = (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert decode_ms(new_id("evt", at)) == expected
    assert new_id("evt", datetime(1970, 1, 1, tzinfo=UTC))[4:14] == "0000000000"


@pytest.mark.parametrize("prefix", ["ab", "inv", "sub2", "abcdefghijkl", "a1"])
def test_valid_prefixes(prefix: str) -> None:
    assert new_id(prefix, T0).startswith(prefix + "_")


@pytest.mark.parametrize(
    "prefix",
    ["", "a", "A", "Inv", "1ab", "in_v", "inv-", "abcdefghijklm", "ínv", "inv ", "inv\n", "_inv"],
)
def test_invalid_prefixes(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        new_id(prefix, T0)


def test_refuses_naive_and_out_of_range_times() -> None:
    with pytest.raises(ValueError, match="naive"):
        new_id("inv", datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="range"):
        new_id("inv", datetime(1969, 12, 31, tzinfo=UTC))


def test_unique_within_one_millisecond() -> None:
    assert len({new_id("inv", T0) for _ in range(2000)}) == 2000


def test_sorted_by_time() -> None:
    times = [T0 + timedelta(milliseconds=ms) for ms in range(0, 5000, 7)]
    shuffled = times[:]
    random.Random(7).shuffle(shuffled)
    ids = {new_id("inv", at): at for at in shuffled}
    assert [ids[value] for value in sorted(ids)] == times


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
    ),
    st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
    ),
)
def test_order_follows_milliseconds(a: datetime, b: datetime) -> None:
    ms = timedelta(milliseconds=1)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    ms_a, ms_b = (a - epoch) // ms, (b - epoch) // ms
    id_a, id_b = new_id("inv", a), new_id("inv", b)
    if ms_a < ms_b:
        assert id_a < id_b
    elif ms_a > ms_b:
        assert id_a > id_b


@pytest.mark.parametrize(
    "value",
    [
        "sub_01JJ0000000000000000000000",  # wrong prefix
        "inv_01JJ000000000000000000000",  # 25 chars
        "inv_01JJ00000000000000000000000",  # 27 chars
        "inv_01jj0000000000000000000000",  # lower case
        "inv_01JJ000000000000000000000I",  # I is not Crockford
        "inv_01JJ000000000000000000000L",
        "inv_01JJ000000000000000000000O",
        "inv_01JJ000000000000000000000U",
        "inv_81JJ0000000000000000000000",  # overflows 128 bits
        "inv01JJ0000000000000000000000",
        "inv_01JJ000000000000000000000_",
        "",
    ],
)
def test_is_valid_id_refuses(value: str) -> None:
    assert not is_valid_id(value, "inv")


def test_is_valid_id_accepts_max() -> None:
    assert is_valid_id("inv_7" + "Z" * 25, "inv")


@pytest.mark.parametrize(
    "value", ["", "inv", "inv_", "Inv_01JJ0000000000000000000000", "inv_xyz", "_01JJ00"]
)
def test_id_prefix_refuses(value: str) -> None:
    with pytest.raises(ValueError, match="well-formed"):
        id_prefix(value)


def test_id_prefix() -> None:
    assert id_prefix(new_id("cus", T0)) == "cus"
    assert id_prefix(new_id("abcdefghijkl", T0)) == "abcdefghijkl"


def test_new_token() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    for token in tokens:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    assert len(new_token(48)) == 64


def test_new_token_short_suffix() -> None:
    # Short tokens are for non-secret suffixes (worker ids); secrets keep the default.
    assert re.fullmatch(r"[A-Za-z0-9_-]{6}", new_token(4))


@pytest.mark.parametrize("nbytes", [0, -1, True])
def test_new_token_refuses_non_positive(nbytes: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        new_token(nbytes)


def test_ids_made_in_the_same_millisecond_sort_in_creation_order() -> None:
    at = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
    ids = [new_id("aud", at) for _ in range(500)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 500


def _reference_body(value: int) -> str:
    # The ULID body by the book: 26 Crockford digits, most significant first.
    digits = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        digits.append(CROCKFORD[digit])
    return "".join(reversed(digits))


@given(st.integers(min_value=0, max_value=253_402_300_799_999))  # up to year 9999
def test_body_encodes_the_millisecond_like_the_reference(ms: int) -> None:
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    body = new_id("tst", at).partition("_")[2]
    # The first 10 digits are the time; the random 80 bits follow.
    assert body[:10] == _reference_body(ms << 80)[:10]
    assert _reference_body(int(body.translate(_FROM_CROCKFORD), 32)) == body


_FROM_CROCKFORD = str.maketrans(CROCKFORD, "0123456789abcdefghijklmnopqrstuv")


def test_a_forked_child_draws_its_own_random_bits() -> None:
    # Random bits are read from the OS in chunks; a child must not reuse the parent's.
    at = datetime(2026, 1, 31, 12, 0, 1, tzinfo=UTC)
    new_id("aud", at - timedelta(seconds=1))  # the parent holds unread random bytes
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, new_id("aud", at).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    assert child != new_id("aud", at)


def test_a_frozen_millisecond_keeps_its_sequence_while_the_wall_clock_moves_on() -> None:
    # A frozen test clock's millisecond, seen first, stays in use while ids on the wall clock
    # fill the kept window: it must not be the one dropped (its ids would lose their order).
    ids = _Monotonic()
    frozen = 1_000
    last = ids.next(frozen)
    for ms in range(2_000, 2_000 + 2 * _Monotonic._KEEP):
        ids.next(ms)
        following = ids.next(frozen)
        assert following == last + 1
        last = following
