"""Durable jobs (transactional outbox): written with the change that causes them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from aihub_billing.models.base import Base, id_column


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_claim", "status", "run_at"),)

    id: Mapped[str] = id_column()
    name: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]]
    # pending -> running -> succeeded | pending (retry) | dead
    status: Mapped[str] = mapped_column(String(16), default="pending")
    run_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # NULL = the worker's configured default (AIHUB_BILLING_JOBS_MAX_ATTEMPTS).
    max_attempts: Mapped[int | None] = mapped_column(Integer)
    # Set for jobs that must exist once (periodic slots, one notification per period).
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    locked_by: Mapped[str | None] = mapped_column(String(100))
    locked_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    # Set for jobs of an account on a test clock: only advancing that clock runs them.
    test_clock_id: Mapped[str | None] = mapped_column(String(40), index=True)


class JobDedupeKey(Base):
    """A dedupe key held past its job: `jobs.prune` deletes succeeded jobs after a week, but
    some keys (a threshold notification's, for its period) must keep refusing a second job
    until `expires_at`, when the key can no longer come back."""

    __tablename__ = "job_dedupe_keys"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
