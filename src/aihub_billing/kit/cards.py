"""Recognises card numbers (PANs) in free text, so they can be refused before being stored."""

from __future__ import annotations

import re

__all__ = ["contains_card_number", "luhn_valid"]

# 13 to 19 digits, optionally grouped by single spaces or dashes.
_CANDIDATE = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char)
        if i % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def contains_card_number(text: str) -> bool:
    """True if `text` holds a digit run of card length that passes the Luhn check."""
    for match in _CANDIDATE.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        # Any Luhn-valid window of 13-19 digits inside a longer run counts too.
        for size in range(13, min(len(digits), 19) + 1):
            for start in range(len(digits) - size + 1):
                if luhn_valid(digits[start : start + size]):
                    return True
    return False
