"""Tests for kit.secretbox: at-rest encryption of short secrets, readable old plaintext."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from aihub_billing.kit.secretbox import PREFIX, SecretBox, SecretBoxError, is_sealed, new_key

KEY = Fernet.generate_key().decode()
SECRET = "whsec_" + "x" * 43


def test_sealed_values_are_prefixed_and_open_again() -> None:
    box = SecretBox(KEY)
    sealed = box.seal(SECRET)
    assert sealed.startswith(PREFIX) and is_sealed(sealed)
    assert SECRET not in sealed
    assert box.seal(SECRET) != sealed  # a fresh IV each time
    assert box.open(sealed) == SECRET


def test_plaintext_written_before_encryption_opens_as_is() -> None:
    assert not is_sealed(SECRET)
    assert SecretBox(KEY).open(SECRET) == SECRET


def test_a_sealed_value_fits_the_column() -> None:
    """quota_notification_targets.webhook_secret is String(200)."""
    assert len(SecretBox(KEY).seal("whsec_" + "x" * 64)) <= 200


def test_another_key_cannot_open_and_says_so_without_the_value() -> None:
    sealed = SecretBox(KEY).seal(SECRET)
    with pytest.raises(SecretBoxError) as excinfo:
        SecretBox(new_key()).open(sealed)
    assert sealed not in str(excinfo.value) and KEY not in str(excinfo.value)


@pytest.mark.parametrize("key", ["", "short", "x" * 44])
def test_bad_keys_are_refused_without_echoing_them(key: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        SecretBox(key)
    assert not key or key not in str(excinfo.value)


def test_the_key_is_not_in_the_repr() -> None:
    box = SecretBox(KEY)
    assert KEY not in repr(box) and KEY not in str(box)
