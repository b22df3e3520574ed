"""A subscription's history as invoice generation asks it, in memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from aihub_billing.invoices.history import Event, History, UsageInvoice
from aihub_billing.models import InvoiceItem

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def _item(item_id: str, hours: float, invoice_id: str | None = None) -> InvoiceItem:
    return InvoiceItem(
        id=item_id,
        account_id="acct",
        subscription_id="sub",
        kind="subscription_fee",
        description="fee",
        period_start=T0,
        period_end=T0,
        quantity=Decimal(1),
        unit_price=Decimal(1),
        amount=Decimal(1),
        amount_minor=100,
        currency="USD",
        invoice_id=invoice_id,
        created_at=_at(hours),
    )


def test_close_time_is_the_first_boundary_event_at_or_after_the_boundary() -> None:
    history = History(
        events=[
            Event(_at(5), "e3", "renewed", "p", "active"),
            Event(_at(1), "e1", "plan_changed", "p", "active"),  # not a boundary event
            Event(_at(3), "e2", "canceled", "p", "canceled"),
            Event(_at(-1), "e0", "created", "p", "active"),
        ]
    )
    assert history.close_time(_at(0)) == _at(3)
    assert history.close_time(_at(3)) == _at(3)  # at the boundary counts
    assert history.close_time(_at(6)) is None


def test_state_before_is_the_latest_earlier_event_ties_by_id() -> None:
    history = History(
        events=[
            Event(_at(0), "e1", "created", "basic", "active", "basic-m"),
            Event(_at(2), "e3", "plan_changed", "pro", "active", "pro-m"),
            Event(_at(2), "e2", "paused", "basic", "paused", "basic-m"),
            Event(_at(4), "e4", "renewed", "max", "active", "max-y"),
            Event(_at(6), "e5", "renewed", "max", "active"),  # recorded before prices were
        ]
    )
    assert history.state_before(_at(0)) is None  # strictly before
    assert history.state_before(_at(1)) == ("basic", "basic-m", "active")
    assert history.state_before(_at(3)) == ("pro", "pro-m", "active")  # same time: later id
    assert history.state_before(_at(5)) == ("max", "max-y", "active")
    assert history.state_before(_at(9)) == ("max", None, "active")


def test_previous_usage_invoice_ended_by_the_time_and_not_excluded() -> None:
    jan = UsageInvoice("inv_a", "paid", _at(-48), _at(-24))
    feb = UsageInvoice("inv_b", "open", _at(-24), _at(0))
    history = History(usage_invoices=[feb, jan])
    assert history.previous_usage_invoice(_at(0), "") == feb
    assert history.previous_usage_invoice(_at(-1), "") == jan
    assert history.previous_usage_invoice(_at(0), "inv_b") == jan
    assert history.previous_usage_invoice(_at(-30), "") is None


def test_pending_items_up_to_a_time_in_recording_order_without_claimed_ones() -> None:
    history = History(
        pending=[_item("b", 2), _item("a", 2), _item("c", 1), _item("d", 0, "inv_x"), _item("e", 5)]
    )
    assert [i.id for i in history.pending_items(_at(2))] == ["c", "a", "b"]
    assert history.pending_items(_at(0)) == []


def test_unpaused_spans_leave_out_the_paused_parts() -> None:
    history = History(
        events=[
            Event(_at(0), "e1", "created", "p", "active"),
            Event(_at(2), "e2", "paused", "p", "paused"),
            Event(_at(4), "e3", "resumed", "p", "active"),
            Event(_at(6), "e4", "renewed", "p", "active"),  # no status change
            Event(_at(8), "e5", "provider_updated", "p", "paused"),
        ]
    )
    assert history.unpaused(_at(0), _at(10)) == [(_at(0), _at(2)), (_at(4), _at(8))]
    assert history.unpaused(_at(1), _at(5)) == [(_at(1), _at(2)), (_at(4), _at(5))]
    assert history.unpaused(_at(2), _at(4)) == []  # paused from its very start
    assert history.unpaused(_at(3), _at(7)) == [(_at(4), _at(7))]
    assert history.unpaused(_at(9), _at(12)) == []
    assert History().unpaused(_at(0), _at(1)) == [(_at(0), _at(1))]  # no event: not paused
