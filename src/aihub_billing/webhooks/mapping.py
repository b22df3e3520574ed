"""Maps provider webhook bodies to the internal event set. Lenient: older API versions and
missing fields give fewer references, never an exception; unknown types give None."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from aihub_billing.kit.clock import from_unix
from aihub_billing.kit.money import CurrencyError, normalize_currency, round_to_minor
from aihub_billing.payments.payment_types import REFUND_UNDONE_STATUSES, EventType, InternalEvent
from aihub_billing.payments.providers.amounts import from_stripe

_STRIPE_TYPES = {
    "payment_intent.succeeded": EventType.PAYMENT_SUCCEEDED,
    "charge.succeeded": EventType.PAYMENT_SUCCEEDED,
    "payment_intent.payment_failed": EventType.PAYMENT_FAILED,
    "charge.failed": EventType.PAYMENT_FAILED,
    "charge.refunded": EventType.REFUND_SUCCEEDED,
    "refund.created": EventType.REFUND_SUCCEEDED,
    "refund.updated": EventType.REFUND_SUCCEEDED,
    "charge.refund.updated": EventType.REFUND_SUCCEEDED,
    "charge.dispute.created": EventType.DISPUTE_OPENED,
    "charge.dispute.closed": EventType.DISPUTE_CLOSED,
    "customer.subscription.updated": EventType.SUBSCRIPTION_UPDATED,
    # The object's status says what happened (`paused`, `active`).
    "customer.subscription.paused": EventType.SUBSCRIPTION_UPDATED,
    "customer.subscription.resumed": EventType.SUBSCRIPTION_UPDATED,
    "customer.subscription.deleted": EventType.SUBSCRIPTION_CANCELED,
}

_PAYPAL_TYPES = {
    "PAYMENT.CAPTURE.COMPLETED": EventType.PAYMENT_SUCCEEDED,
    "PAYMENT.SALE.COMPLETED": EventType.PAYMENT_SUCCEEDED,
    "PAYMENT.CAPTURE.DENIED": EventType.PAYMENT_FAILED,
    "PAYMENT.CAPTURE.DECLINED": EventType.PAYMENT_FAILED,
    "PAYMENT.SALE.DENIED": EventType.PAYMENT_FAILED,
    "PAYMENT.CAPTURE.REFUNDED": EventType.REFUND_SUCCEEDED,
    "PAYMENT.SALE.REFUNDED": EventType.REFUND_SUCCEEDED,
    # PayPal took the money back (a refund-shaped resource linking to the capture): for us
    # it is refunded, as if by the seller.
    "PAYMENT.CAPTURE.REVERSED": EventType.REFUND_SUCCEEDED,
    "PAYMENT.SALE.REVERSED": EventType.REFUND_SUCCEEDED,
    "CUSTOMER.DISPUTE.CREATED": EventType.DISPUTE_OPENED,
    "RISK.DISPUTE.CREATED": EventType.DISPUTE_OPENED,
    "CUSTOMER.DISPUTE.RESOLVED": EventType.DISPUTE_CLOSED,
    "BILLING.SUBSCRIPTION.UPDATED": EventType.SUBSCRIPTION_UPDATED,
    "BILLING.SUBSCRIPTION.SUSPENDED": EventType.SUBSCRIPTION_UPDATED,
    "BILLING.SUBSCRIPTION.RE-ACTIVATED": EventType.SUBSCRIPTION_UPDATED,
    "BILLING.SUBSCRIPTION.ACTIVATED": EventType.SUBSCRIPTION_UPDATED,
    "BILLING.SUBSCRIPTION.CANCELLED": EventType.SUBSCRIPTION_CANCELED,
    # The billing cycles ran out: the subscription ended at PayPal (status EXPIRED).
    "BILLING.SUBSCRIPTION.EXPIRED": EventType.SUBSCRIPTION_CANCELED,
}


def map_event(provider: str, event_id: str, body: dict[str, Any]) -> InternalEvent | None:
    if provider == "stripe":
        return _stripe(event_id, body)
    if provider == "paypal":
        return _paypal(event_id, body)
    return None


def _s(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict):
        return _s(value.get("id"))
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _currency(value: Any) -> str | None:
    try:
        return normalize_currency(value) if isinstance(value, str) else None
    except CurrencyError:
        return None


def _stripe(event_id: str, body: dict[str, Any]) -> InternalEvent | None:
    kind = _STRIPE_TYPES.get(str(body.get("type")))
    if kind is None:
        return None
    data = body.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        return None
    occurred = from_unix(body.get("created"))
    object_type = obj.get("object")
    raw_metadata = obj.get("metadata")
    metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
    refs = [
        r
        for r in (
            _s(obj.get("payment_intent")),
            _s(obj.get("charge")),
            _s(obj.get("latest_charge")),
            _s(obj.get("id")) if object_type in ("payment_intent", "charge") else None,
        )
        if r
    ]
    currency = _currency(obj.get("currency"))

    def ours(amount: int | None) -> int | None:  # Stripe's amount in our minor units
        return None if amount is None or currency is None else from_stripe(amount, currency)

    amount = ours(_int(obj.get("amount")))
    object_id = _s(obj.get("id"))
    status = _s(obj.get("status"))
    failure = None
    if kind == EventType.PAYMENT_FAILED:
        error = obj.get("last_payment_error")
        failure = _s(error.get("code")) if isinstance(error, dict) else _s(obj.get("failure_code"))
    extra: dict[str, Any] = {}
    if kind == EventType.REFUND_SUCCEEDED and object_type == "charge":
        # charge.refunded: the newest refund in the list (API versions before 2022-11-15),
        # else only the charge's refunded total, which covers every refund so far.
        refunds = obj.get("refunds")
        items = refunds.get("data") if isinstance(refunds, dict) else None
        latest = (
            items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}
        )
        object_id = _s(latest.get("id"))
        amount = ours(_int(latest.get("amount")))
        if object_id is None or amount is None:
            object_id, amount = None, ours(_int(obj.get("amount_refunded")))
            extra["refunded_total"] = amount
        status = "succeeded"
    if kind == EventType.REFUND_SUCCEEDED and status in REFUND_UNDONE_STATUSES:
        # A refund can fail even after it succeeded (a closed card): the money stayed here.
        kind = EventType.REFUND_FAILED
    elif kind == EventType.REFUND_SUCCEEDED and status not in ("succeeded", None):
        return None  # a pending refund is not a refund.succeeded
    return InternalEvent(
        type=kind,
        provider="stripe",
        event_id=event_id,
        occurred_at=occurred,
        payment_refs=tuple(dict.fromkeys(refs)),
        our_payment_id=_s(metadata.get("payment_id")),
        object_id=object_id,
        charge_id=_s(obj.get("id")) if object_type == "charge" else _s(obj.get("latest_charge")),
        amount_minor=amount,
        currency=currency,
        status=status,
        reason=_s(obj.get("reason")),
        failure_code=failure,
        extra=extra,
    )


def _paypal_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else None


def _paypal_amount(value: Any) -> tuple[int | None, str | None]:
    """v2 `{value, currency_code}` or v1 `{total, currency}`; refunds may be negative in v1."""
    if not isinstance(value, dict):
        return None, None
    currency = _currency(value.get("currency_code") or value.get("currency"))
    raw = value.get("value", value.get("total"))
    if currency is None or not isinstance(raw, str):
        return None, currency
    try:
        return abs(round_to_minor(Decimal(raw), currency)), currency
    except (InvalidOperation, ValueError):
        return None, currency


def _paypal(event_id: str, body: dict[str, Any]) -> InternalEvent | None:
    kind = _PAYPAL_TYPES.get(str(body.get("event_type")))
    resource = body.get("resource")
    if kind is None or not isinstance(resource, dict):
        return None
    occurred = _paypal_time(body.get("create_time"))
    refs: list[str] = []
    supplementary = resource.get("supplementary_data")
    related = supplementary.get("related_ids") if isinstance(supplementary, dict) else None
    if isinstance(related, dict):
        refs += [r for r in (_s(related.get("order_id")), _s(related.get("capture_id"))) if r]
    for key in ("parent_payment", "sale_id", "capture_id"):
        if ref := _s(resource.get(key)):
            refs.append(ref)
    object_id = _s(resource.get("id"))
    if kind in (EventType.PAYMENT_SUCCEEDED, EventType.PAYMENT_FAILED) and object_id:
        refs.append(object_id)
    for link in _list(resource.get("links")):
        # Refund events point at the refunded capture/sale through a link ("up" in v2).
        href = link.get("href") if isinstance(link, dict) else None
        if isinstance(href, str) and link.get("rel") in ("up", "capture", "sale"):
            refs.append(href.rstrip("/").rsplit("/", 1)[-1])
    amount, currency = _paypal_amount(resource.get("amount"))
    status = _s(resource.get("status")) or _s(resource.get("state"))
    reason = _s(resource.get("reason"))
    if kind in (EventType.DISPUTE_OPENED, EventType.DISPUTE_CLOSED):
        object_id = _s(resource.get("dispute_id")) or object_id
        amount, currency = _paypal_amount(resource.get("dispute_amount"))
        # RISK.DISPUTE.* (the older shape) names the seller's transaction directly.
        refs = [ref] if (ref := _s(resource.get("seller_payment_id"))) else []
        for txn in _list(resource.get("disputed_transactions")):
            if isinstance(txn, dict) and (ref := _s(txn.get("seller_transaction_id"))):
                refs.append(ref)
        outcome = resource.get("dispute_outcome")
        if isinstance(outcome, dict):
            status = _s(outcome.get("outcome_code")) or status
    if kind == EventType.REFUND_SUCCEEDED and status not in (None, "COMPLETED", "completed"):
        return None
    return InternalEvent(
        type=kind,
        provider="paypal",
        event_id=event_id,
        occurred_at=occurred,
        payment_refs=tuple(dict.fromkeys(refs)),
        our_payment_id=_s(resource.get("custom_id")) or _s(resource.get("custom")),
        object_id=object_id,
        charge_id=object_id
        if kind in (EventType.PAYMENT_SUCCEEDED, EventType.PAYMENT_FAILED)
        else None,
        amount_minor=amount,
        currency=currency,
        status=status,
        reason=reason,
        failure_code=status if kind == EventType.PAYMENT_FAILED else None,
    )


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []
