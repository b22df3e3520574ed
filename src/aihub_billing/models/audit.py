"""Append-only audit log: who changed what, from what to what, in which request."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from aihub_billing.models.base import Base, id_column


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_object", "object_type", "object_id"),)

    id: Mapped[str] = id_column()
    at: Mapped[datetime] = mapped_column(index=True)
    # The key that acted; NULL for the system itself (CLI, scheduler, jobs).
    actor_key_id: Mapped[str | None] = mapped_column(String(40))
    actor_role: Mapped[str] = mapped_column(String(16))
    # The account the change belongs to, so an account's history is one indexed query.
    account_id: Mapped[str | None] = mapped_column(String(40), index=True)
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None]
    after: Mapped[dict[str, Any] | None]
    request_id: Mapped[str | None] = mapped_column(String(64))
