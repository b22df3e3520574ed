"""Card numbers are recognised in free text (Luhn), other long numbers are not."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aihub_billing.kit.cards import contains_card_number, luhn_valid


def test_known_test_cards_are_recognised_with_or_without_separators() -> None:
    for text in (
        "4242424242424242",
        "paid with 4242 4242 4242 4242 today",
        "4000-0025-0000-3155",
        "amex 378282246310005",
    ):
        assert contains_card_number(text), text


def test_other_numbers_are_not_card_numbers() -> None:
    for text in ("Invoice 2026-0001", "order 1234567890123", "4242 4242", "pay_01KG9YS7G0T7"):
        assert not contains_card_number(text), text


def _with_check_digit(body: str) -> str:
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable: one check digit always fits")


@given(st.text(alphabet="0123456789", min_size=12, max_size=18), st.text(max_size=20))
def test_any_luhn_valid_number_in_text_is_found(body: str, prefix: str) -> None:
    pan = _with_check_digit(body)
    assert contains_card_number(f"{prefix} {pan} end")


@given(st.text(alphabet="0123456789", min_size=13, max_size=19))
def test_exactly_one_check_digit_makes_a_number_luhn_valid(digits: str) -> None:
    valid = [c for c in "0123456789" if luhn_valid(digits[:-1] + c)]
    assert len(valid) == 1
