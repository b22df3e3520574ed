"""Test clocks: a frozen time the operator advances; attached accounts live on it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from aihub_billing.models.base import Base, id_column


class TestClock(Base):
    __tablename__ = "test_clocks"
    __test__ = False  # not a pytest class

    id: Mapped[str] = id_column()
    name: Mapped[str | None] = mapped_column(String(200))
    frozen_time: Mapped[datetime]
    created_at: Mapped[datetime]


class TestClockAccount(Base):
    """An account attached to a test clock: its API calls and jobs use the clock's time."""

    __tablename__ = "test_clock_accounts"
    __test__ = False

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    test_clock_id: Mapped[str] = mapped_column(ForeignKey("test_clocks.id"), index=True)
    attached_at: Mapped[datetime]
