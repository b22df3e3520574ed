"""Job handlers and periodic jobs, registered by each domain's tasks module."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.kit.context import Context

_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


@dataclass(frozen=True, slots=True)
class JobRun:
    """What a handler gets besides the session: the job's payload, attempt and a context."""

    job_id: str
    name: str
    payload: dict[str, Any]
    attempt: int
    ctx: Context
    settings: dict[str, Any] = field(default_factory=dict)
    test_clock_id: str | None = None  # the clock whose advance runs it (None: a worker)


Handler = Callable[[AsyncSession, JobRun], Awaitable[None]]


class PermanentJobError(Exception):
    """Raised by a handler when trying again cannot help (the other side refused the request
    itself): the job is dead at once instead of being retried until its attempts run out."""


def gives_up(exc: Exception, attempts: int, max_attempts: int) -> bool:
    """Whether a job that failed with `exc` on attempt `attempts` is dead (else retried)."""
    return isinstance(exc, PermanentJobError) or attempts >= max_attempts


@dataclass(frozen=True, slots=True)
class Periodic:
    name: str
    every: timedelta
    payload: dict[str, Any]


class JobRegistry:
    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.periodic: dict[str, Periodic] = {}

    def job(self, name: str) -> Callable[[Handler], Handler]:
        """Registers a handler under `domain.action`; one handler per name."""
        if not _NAME.match(name):
            raise ValueError(f"job names are 'domain.action': {name!r}")

        def register(fn: Handler) -> Handler:
            if name in self.handlers and self.handlers[name] is not fn:
                raise ValueError(f"job {name!r} is registered twice")
            self.handlers[name] = fn
            return fn

        return register

    def every(
        self, every: timedelta, name: str, payload: dict[str, Any] | None = None
    ) -> Callable[[Handler], Handler]:
        """Registers a handler that the scheduler enqueues once per `every` slot."""
        if every < timedelta(seconds=1):
            raise ValueError("periodic jobs run at most once a second")

        def register(fn: Handler) -> Handler:
            self.job(name)(fn)
            self.periodic[name] = Periodic(name, every, payload or {})
            return fn

        return register


registry = JobRegistry()
