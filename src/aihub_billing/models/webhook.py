"""Inbound provider webhook events, stored once per (provider, event id) with their outcome."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from aihub_billing.models.base import Base, id_column


class WebhookEvent(Base):
    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("provider", "event_id"),)

    id: Mapped[str] = id_column()
    provider: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(100))
    body: Mapped[str] = mapped_column(Text)  # the raw signed body, as received
    event_created_at: Mapped[datetime | None]
    received_at: Mapped[datetime]
    # pending -> processed | ignored | failed (retried) | dead
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[str | None] = mapped_column(String(500))  # what processing did
    error: Mapped[str | None] = mapped_column(Text)  # the last failure, when there was one
    processed_at: Mapped[datetime | None]
