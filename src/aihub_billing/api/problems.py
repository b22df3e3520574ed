"""Renders every error as application/problem+json (RFC 9457) with a stable code."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from aihub_billing.api.middleware import REQUEST_ID_HEADER
from aihub_billing.errors import (
    PROBLEM_CONTENT_TYPE,
    BillingError,
    Conflict,
    InternalError,
    InvalidCurrency,
    InvalidCursorValue,
    PayloadTooLarge,
    ServiceUnavailable,
    ValidationFailed,
    problem_body,
)
from aihub_billing.kit.db import UNREACHABLE
from aihub_billing.kit.money import CurrencyError
from aihub_billing.kit.pagination import InvalidCursor

log = structlog.get_logger("aihub_billing.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def problem_response(request: Request, error: BillingError) -> JSONResponse:
    body = error.problem(
        instance=request.url.path, request_id=getattr(request.state, "request_id", None)
    )
    return JSONResponse(
        body, status_code=error.status, headers=error.headers, media_type=PROBLEM_CONTENT_TYPE
    )


def _validation_errors(errors: Any) -> list[dict[str, Any]]:
    # Echo where and why, never the submitted value: it may be a secret or a card number.
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in errors
    ]


async def _billing_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BillingError)
    return problem_response(request, exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _validation_errors(exc.errors())
    detail = (
        "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
        or "invalid request"
    )
    return problem_response(request, ValidationFailed(detail, extra={"errors": errors}))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.__cause__ is not None:
        # FastAPI's "error parsing the body" (bytes that are not UTF-8 JSON): the same 422 a
        # body that is not JSON gets, and the lean routes give.
        error = {"loc": ["body"], "msg": "the body is not valid UTF-8 JSON", "type": "json_invalid"}
        return problem_response(
            request, ValidationFailed(f"body: {error['msg']}", extra={"errors": [error]})
        )
    if exc.status_code == 413:
        return problem_response(request, PayloadTooLarge(str(exc.detail)))
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405:
        # Starlette's Allow names the first route of the path only (one per method here).
        headers = {**(headers or {}), "Allow": _allowed_methods(request)}
    body = problem_body(
        code=_HTTP_CODES.get(exc.status_code, "http_error"),
        status=exc.status_code,
        title=str(exc.detail),
        detail=str(exc.detail),
        instance=request.url.path,
        request_id=getattr(request.state, "request_id", None),
    )
    return JSONResponse(
        body, status_code=exc.status_code, headers=headers, media_type=PROBLEM_CONTENT_TYPE
    )


def _allowed_methods(request: Request) -> str:
    """The methods of the path's most specific template (/payments/intents, not
    /payments/{payment_id}), as OpenAPI resolves a path; every route of it, not the first."""
    by_template: dict[str, set[str]] = {}
    for route in iter_route_contexts(request.app.router.routes):
        if route.path_format and route.matches(request.scope)[0] is not Match.NONE:
            by_template.setdefault(route.path_format, set()).update(route.methods or ())
    if not by_template:
        return ""
    template = min(by_template, key=lambda t: (t.count("{"), t))
    return ", ".join(sorted(by_template[template]))


async def _invalid_input(request: Request, exc: Exception) -> JSONResponse:
    error = InvalidCursorValue if isinstance(exc, InvalidCursor) else InvalidCurrency
    return problem_response(request, error(str(exc)))


async def _integrity_error(request: Request, exc: Exception) -> JSONResponse:
    # A unique constraint lost a race the service's own check could not see: a conflict.
    log.info("db.integrity_conflict", error=str(getattr(exc, "orig", exc))[:500])
    return problem_response(request, Conflict("the change conflicts with a concurrent change"))


def _data_exception(exc: Exception) -> bool:
    """PostgreSQL's SQLSTATE class 22 (a NUL character in text, a number beyond its column):
    a value the request validation let through, refused by the database. The input is wrong,
    not the database; asyncpg's errors reach SQLAlchemy as plain DBAPIErrors."""
    return str(getattr(getattr(exc, "orig", None), "sqlstate", None) or "").startswith("22")


async def _unstorable_value(request: Request, exc: Exception) -> JSONResponse:
    # Nothing was written: the request's transaction rolls back.
    log.info("db.data_error", error=str(getattr(exc, "orig", exc))[:500])
    error = {"loc": ["body"], "msg": "a value the database cannot take", "type": "value_error"}
    return problem_response(
        request,
        ValidationFailed(
            "a value the database cannot take: text with a NUL character (\\u0000), or a "
            "number out of range",
            extra={"errors": [error]},
        ),
    )


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    if _data_exception(exc):
        return await _unstorable_value(request, exc)
    log.warning("db.unavailable", error=str(getattr(exc, "orig", exc))[:500])
    return problem_response(
        request, ServiceUnavailable("the database is unavailable", headers={"Retry-After": "1"})
    )


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The client closed the connection before its request was read (its timeout, a load
    # generator stopping): nobody is there to answer, and nothing went wrong here. 499 is
    # how nginx logs it, so the access line and the metrics keep it apart from errors.
    log.info("request.client_disconnected", path=request.url.path)
    return Response(status_code=499)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # This handler runs outside the request-id middleware (its id is unbound by now), so it
    # names the request and sets the header itself.
    request_id = getattr(request.state, "request_id", None)
    log.exception("request.unhandled", path=request.url.path, request_id=request_id)
    response = problem_response(request, InternalError("an internal error occurred"))
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


def install(app: FastAPI) -> None:
    app.add_exception_handler(BillingError, _billing_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(InvalidCursor, _invalid_input)
    app.add_exception_handler(CurrencyError, _invalid_input)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(DBAPIError, _database_unavailable)
    # A connection that cannot be made or was lost (the database stopped or restarting):
    # asyncpg raises these as they are, outside SQLAlchemy's wrapping.
    for unreachable in UNREACHABLE:
        app.add_exception_handler(unreachable, _database_unavailable)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
