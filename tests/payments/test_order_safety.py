"""Order safety of payment statuses, whatever order the provider's events arrive in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from aihub_billing.payments.payment_types import PaymentStatus
from aihub_billing.payments.service import next_status

T0 = datetime(2026, 1, 1, tzinfo=UTC)
events = st.lists(
    st.tuples(
        st.sampled_from([PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.PROCESSING]),
        st.integers(min_value=0, max_value=1000),
    ),
    min_size=1,
    max_size=12,
)


def replay(sequence: list[tuple[PaymentStatus, int]]) -> tuple[str, datetime | None]:
    status: str = PaymentStatus.REQUIRES_CONFIRMATION
    status_at: datetime | None = None
    for new, seconds in sequence:
        status, status_at = next_status(status, status_at, new, T0 + timedelta(seconds=seconds))
    return status, status_at


@given(events, st.randoms())
def test_a_success_is_never_undone_in_any_delivery_order(
    sequence: list[tuple[PaymentStatus, int]], random: st.SearchStrategy[object]
) -> None:
    shuffled = list(sequence)
    random.shuffle(shuffled)  # type: ignore[attr-defined]
    final, _ = replay(shuffled)
    assert (final == PaymentStatus.SUCCEEDED) == any(
        s == PaymentStatus.SUCCEEDED for s, _ in sequence
    )


@given(events)
def test_without_success_the_newest_event_decides(
    sequence: list[tuple[PaymentStatus, int]],
) -> None:
    failures = [(s, t) for s, t in sequence if s != PaymentStatus.SUCCEEDED]
    if not failures:
        return
    final, at = replay(failures)
    newest = max(t for _, t in failures)
    assert at == T0 + timedelta(seconds=newest)
    assert final in {s for s, t in failures if t == newest}


def test_our_own_calls_change_the_status_but_not_the_event_clock() -> None:
    retried = next_status(PaymentStatus.FAILED, T0, PaymentStatus.REQUIRES_ACTION, None)
    assert retried == (PaymentStatus.REQUIRES_ACTION, T0)
    paid = (PaymentStatus.SUCCEEDED, None)
    assert next_status(*paid, PaymentStatus.FAILED, None) == paid
    canceled = (PaymentStatus.CANCELED, T0)
    assert next_status(*canceled, PaymentStatus.SUCCEEDED, T0) == canceled


def test_our_own_call_is_never_stale_and_makes_older_events_stale() -> None:
    sent = T0 + timedelta(seconds=60)
    # Even behind an event time seen before (clocks differ), our call's answer is applied.
    ours = next_status(PaymentStatus.FAILED, sent, PaymentStatus.REQUIRES_ACTION, T0, ours=True)
    assert ours == (PaymentStatus.REQUIRES_ACTION, sent)
    ours = next_status(PaymentStatus.FAILED, T0, PaymentStatus.REQUIRES_ACTION, sent, ours=True)
    assert ours == (PaymentStatus.REQUIRES_ACTION, sent)
    assert next_status(*ours, PaymentStatus.FAILED, T0) == ours
    assert next_status(*ours, PaymentStatus.SUCCEEDED, T0) == (PaymentStatus.SUCCEEDED, sent)
