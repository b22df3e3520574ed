"""Who is acting, when, and in which request: passed to every service call that changes state."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from aihub_billing.kit.clock import Clock, SystemClock


class Role(StrEnum):
    ADMIN = "admin"  # the operator: every account
    OWNER = "owner"  # an account's owner: everything of that account, keys included
    BILLING = "billing"  # subscriptions, invoices and payments of the account
    MEMBER = "member"  # uses the API: usage and quota of the account
    SYSTEM = "system"  # the CLI, scheduler and jobs; never held by an API key


KEY_ROLES = (Role.ADMIN, Role.OWNER, Role.BILLING, Role.MEMBER)


@dataclass(frozen=True, slots=True)
class Actor:
    role: Role
    account_id: str | None = None
    key_id: str | None = None
    member_id: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.role in (Role.ADMIN, Role.SYSTEM)

    def can_access(self, account_id: str) -> bool:
        return self.is_operator or self.account_id == account_id


SYSTEM = Actor(role=Role.SYSTEM)


@dataclass(frozen=True, slots=True)
class Context:
    actor: Actor = SYSTEM
    clock: Clock = field(default_factory=SystemClock)
    request_id: str | None = None
