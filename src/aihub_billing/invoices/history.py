"""What invoice generation reads of a subscription's past, loaded once (for one subscription or
a whole period-close batch) and asked in memory: when a period boundary was processed, the
plan and status in force at a time, when it was not paused, the previous usage invoice, the
items not invoiced yet."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aihub_billing.models import InvoiceItem

# Subscription history events that close or open a billed period (their time is the moment
# the period's items were recorded, so it bounds what an invoice collects).
BOUNDARY_EVENTS = ("created", "trial_ended", "renewed", "canceled")


@dataclass(frozen=True, slots=True)
class Event:
    at: datetime
    id: str
    type: str
    to_plan_id: str
    to_status: str
    to_price_id: str | None = None  # None: an event recorded before prices were


@dataclass(frozen=True, slots=True)
class UsageInvoice:
    """A cycle or final invoice (not void): what late usage is adjusted against."""

    id: str
    status: str
    period_start: datetime
    period_end: datetime


# The fields of a quota override that change what an invoice bills.
OVERRIDE_FIELDS = (
    "plan_code",
    "included_api_calls",
    "included_tokens",
    "calls_policy",
    "tokens_policy",
)


@dataclass(slots=True)
class History:
    events: list[Event] = field(default_factory=list)
    usage_invoices: list[UsageInvoice] = field(default_factory=list)
    pending: list[InvoiceItem] = field(default_factory=list)
    # The account's quota override: as it is, and each recorded change as (when, after),
    # oldest first, from the audit log (overrides keep no history of their own).
    override_now: dict[str, Any] | None = None
    override_changes: list[tuple[datetime, dict[str, Any] | None]] = field(default_factory=list)

    def override_at(self, moment: datetime) -> dict[str, Any] | None:
        """The override in force just before `moment`: a closed period is billed, and later
        recomputed for late usage, under the override it had, not under today's."""
        if not self.override_changes:
            return self.override_now  # no change recorded: as it is
        before = [after for at, after in self.override_changes if at < moment]
        return before[-1] if before else None  # set only after `moment`: none then

    def close_time(self, boundary: datetime) -> datetime | None:
        """When the boundary was processed: the first renewal/creation/cancellation event at
        or after it."""
        times = [e.at for e in self.events if e.at >= boundary and e.type in BOUNDARY_EVENTS]
        return min(times, default=None)

    def state_before(self, at: datetime) -> tuple[str, str | None, str] | None:
        """(plan id, price id, status) just before `at`: the latest earlier event's."""
        earlier = [e for e in self.events if e.at < at]
        if not earlier:
            return None
        last = max(earlier, key=lambda e: (e.at, e.id))
        return last.to_plan_id, last.to_price_id, last.to_status

    def unpaused(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """The parts of [start, end) in which the subscription was not paused, in order (a
        status holds from its event's time on; usage made while paused is not billed)."""
        ordered = sorted(self.events, key=lambda e: (e.at, e.id))
        paused = False  # no event yet: nothing says it was paused
        for event in ordered:
            if event.at > start:
                break
            paused = event.to_status == "paused"
        spans: list[tuple[datetime, datetime]] = []
        since = None if paused else start
        for event in ordered:
            if event.at <= start:
                continue
            if event.at >= end:
                break
            if event.to_status == "paused":
                if since is not None and since < event.at:
                    spans.append((since, event.at))
                since = None
            elif since is None:
                since = event.at
        if since is not None and since < end:
            spans.append((since, end))
        return spans

    def previous_usage_invoice(self, before: datetime, exclude_id: str) -> UsageInvoice | None:
        """The latest usage invoice whose period ended by `before`."""
        found = [x for x in self.usage_invoices if x.period_end <= before and x.id != exclude_id]
        return max(found, key=lambda x: (x.period_end, x.id), default=None)

    def pending_items(self, until: datetime) -> list[InvoiceItem]:
        """Items not on an invoice yet, recorded up to `until`, in recording order."""
        due = [i for i in self.pending if i.invoice_id is None and i.created_at <= until]
        return sorted(due, key=lambda i: (i.created_at, i.id))
