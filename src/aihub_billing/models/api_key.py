"""API keys: only a SHA-256 of the secret is stored; the secret is shown once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from aihub_billing.models.base import Base, id_column


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = id_column()
    # NULL only for operator (admin) keys, which are not bound to an account.
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    member_id: Mapped[str | None] = mapped_column(ForeignKey("members.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(200))
    # First characters of the secret, so an operator can tell keys apart without the secret.
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
