"""API key secrets: generated once, stored only as a SHA-256 digest.

Keys are 256-bit random tokens, so a fast digest is safe here (no dictionary to attack);
it keeps authentication to one indexed lookup on the hot path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from aihub_billing.kit.ids import new_token

KEY_PREFIX = "ahb_"
DISPLAY_CHARS = 12


@dataclass(frozen=True, slots=True)
class IssuedSecret:
    secret: str = field(repr=False)
    prefix: str
    digest: str


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_secret(secret: str | None = None) -> IssuedSecret:
    """A new key secret, or the operator's own (bootstrap admin key) when one is given."""
    value = secret if secret is not None else KEY_PREFIX + new_token(32)
    return IssuedSecret(secret=value, prefix=value[:DISPLAY_CHARS], digest=digest(value))
