"""At-rest encryption of short secrets stored in the database (Fernet: AES-128-CBC + HMAC).

A sealed value is `enc:v1:<Fernet token>`; a value without the prefix is plaintext written
before encryption was turned on, and opens as itself.
"""

from __future__ import annotations

import binascii

from cryptography.fernet import Fernet, InvalidToken

PREFIX = "enc:v1:"


class SecretBoxError(Exception):
    """A sealed value that this key cannot open (another key, or a damaged value)."""


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


def new_key() -> str:
    """A fresh key (`python -c "from aihub_billing.kit.secretbox import new_key; ..."`)."""
    return Fernet.generate_key().decode("ascii")


class SecretBox:
    """Seals and opens secrets with one Fernet key; the key is never shown."""

    __slots__ = ("_fernet",)

    def __init__(self, key: str) -> None:
        try:
            self._fernet = Fernet(key.encode("utf-8"))
        except (ValueError, binascii.Error, TypeError):
            # Never the key itself in the message: it ends up in logs.
            raise ValueError(
                "the encryption key must be a Fernet key (32 bytes, url-safe base64)"
            ) from None

    def seal(self, plaintext: str) -> str:
        return PREFIX + self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def open(self, stored: str) -> str:
        """The plaintext of a sealed value; a value without the prefix is returned as is."""
        if not is_sealed(stored):
            return stored
        try:
            return self._fernet.decrypt(stored.removeprefix(PREFIX).encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise SecretBoxError(
                "cannot decrypt with the configured encryption key (another key, or damaged)"
            ) from None

    def __repr__(self) -> str:
        return "SecretBox(key=**********)"
