"""Typed errors with a stable code and HTTP status, rendered as RFC 9457 problem details.

Domains subclass BillingError; the web layer renders any of them in one place (main.py).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

PROBLEM_TYPE_PREFIX = "urn:aihub-billing:problem:"
PROBLEM_CONTENT_TYPE = "application/problem+json"


class BillingError(Exception):
    code: ClassVar[str] = "billing_error"
    status: ClassVar[int] = 400
    title: ClassVar[str] = "Billing error"
    # An outcome, not a refusal: the request's writes so far are committed (and its
    # Idempotency-Key answer stored) before the problem is rendered; e.g. a recorded decline.
    commits: ClassVar[bool] = False

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.detail = detail or self.title
        self.headers = headers or {}
        self.extra = extra or {}
        super().__init__(self.detail)

    def problem(self, *, instance: str | None, request_id: str | None) -> dict[str, Any]:
        return problem_body(
            code=self.code,
            status=self.status,
            title=self.title,
            detail=self.detail,
            instance=instance,
            request_id=request_id,
            **self.extra,
        )

    @classmethod
    def response_doc(cls) -> dict[str, Any]:
        """An entry for a route's `responses=`, so OpenAPI lists the error and its code."""
        return {
            "model": Problem,
            "description": f"{cls.title} (`{cls.code}`)",
            "content": {PROBLEM_CONTENT_TYPE: {}},
        }


def problem_body(
    *,
    code: str,
    status: int,
    title: str,
    detail: str,
    instance: str | None,
    request_id: str | None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "type": PROBLEM_TYPE_PREFIX + code,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "code": code,
        "request_id": request_id,
        **extra,
    }


def responses(*errors: type[BillingError]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route; several errors sharing a status are listed together."""
    out: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        doc = out.setdefault(error.status, error.response_doc())
        if doc["description"] != error.response_doc()["description"]:
            doc["description"] += f"; {error.title} (`{error.code}`)"
    return out


class Problem(BaseModel):
    """RFC 9457 problem details as this API emits them."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    code: str
    request_id: str | None = None


class NotFound(BillingError):
    code = "not_found"
    status = 404
    title = "Not found"


class Unauthenticated(BillingError):
    code = "unauthenticated"
    status = 401
    title = "Missing or invalid API key"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(BillingError):
    code = "forbidden"
    status = 403
    title = "The API key's role does not allow this"


class Conflict(BillingError):
    code = "conflict"
    status = 409
    title = "Conflict with the current state"


class InvalidRequest(BillingError):
    """A request that is well-formed JSON but asks for something impossible (bad cursor, etc.)."""

    code = "invalid_request"
    status = 400
    title = "Invalid request"


class AccountRequired(InvalidRequest):
    """An operator key on a route about one account that did not say which."""

    code = "account_required"
    title = "An operator key must name the account (account_id)"


class InvalidCursorValue(InvalidRequest):
    code = "invalid_cursor"
    title = "The pagination cursor is not one this API issued"


class InvalidCurrency(InvalidRequest):
    code = "invalid_currency"
    title = "Unknown ISO 4217 currency code"


class ValidationFailed(BillingError):
    code = "validation_error"
    status = 422
    title = "The request body or parameters are invalid"


class IdempotencyKeyReused(BillingError):
    code = "idempotency_key_reused"
    status = 409
    title = "Idempotency-Key reused with a different request"


class InvalidIdempotencyKey(BillingError):
    code = "invalid_idempotency_key"
    status = 400
    title = "Idempotency-Key must be 1 to 255 printable ASCII characters"


class PayloadTooLarge(BillingError):
    code = "payload_too_large"
    status = 413
    title = "The request body is larger than this endpoint accepts"


class RateLimited(BillingError):
    code = "rate_limited"
    status = 429
    title = "Too many requests, tokens or concurrent calls; retry later"

    @classmethod
    def retry_after(
        cls,
        detail: str,
        *,
        limit: int,
        remaining: int,
        seconds: int,
        extra: dict[str, Any] | None = None,
    ) -> RateLimited:
        """A 429 with `Retry-After` and the `RateLimit-*` headers (whole seconds, >= 1)."""
        seconds = max(1, seconds)
        return cls(
            detail,
            headers={
                "Retry-After": str(seconds),
                "RateLimit-Limit": str(limit),
                "RateLimit-Remaining": str(max(remaining, 0)),
                "RateLimit-Reset": str(seconds),
            },
            extra={**(extra or {}), "retry_after_seconds": seconds},
        )


class ServiceUnavailable(BillingError):
    code = "service_unavailable"
    status = 503
    title = "A dependency is unavailable; retry later"


class InternalError(BillingError):
    code = "internal_error"
    status = 500
    title = "Internal error"
