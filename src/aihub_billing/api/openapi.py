"""The OpenAPI document, with the responses every route can give declared once for all.

Routes list their own errors (`responses=`); what comes from the plumbing is added here, so
the document stays true as routes are added (the suite fuzzes the API against it):
validation errors as problem+json (not FastAPI's default body), 401 and 429 behind an API
key (and the key as the operation's security), 403 behind a role check, 413 where a body is
taken, 400 from a pagination cursor, and 400 and 409 from an Idempotency-Key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from aihub_billing.api.deps import ROLE_CHECKS, get_actor, idempotent
from aihub_billing.errors import (
    PROBLEM_CONTENT_TYPE,
    BillingError,
    Forbidden,
    IdempotencyKeyReused,
    InvalidCursorValue,
    InvalidIdempotencyKey,
    PayloadTooLarge,
    Problem,
    RateLimited,
    Unauthenticated,
    ValidationFailed,
)

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
SECURITY_SCHEME = "apiKey"


def install(app: FastAPI) -> None:
    """Wraps `app.openapi` so that each document FastAPI generates (it caches one until the
    routes change) gets the common responses."""
    generate = app.openapi
    done: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        schema = generate()
        if not done or done[0] is not schema:
            declare_common_responses(app, schema)
            done[:] = [schema]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def declare_common_responses(app: FastAPI, schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {}).setdefault("Problem", Problem.model_json_schema())
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer ahb_...`",
    }
    paths = schema.get("paths", {})
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or not context.include_in_schema:
            continue
        calls = set(_calls(route.dependant))
        for method in context.methods or ():
            operation = paths.get(context.path_format, {}).get(method.lower())
            if operation is None:
                continue
            _problems_as_problem_json(operation)
            errors: list[type[BillingError]] = []
            if {"parameters", "requestBody"} & operation.keys() or "422" in operation["responses"]:
                errors.append(ValidationFailed)
            if "requestBody" in operation:
                errors.append(PayloadTooLarge)
            if get_actor in calls:
                operation["security"] = [{SECURITY_SCHEME: []}]
                errors += [Unauthenticated, RateLimited]
            if calls & ROLE_CHECKS:
                errors.append(Forbidden)
            if any(p.get("name") == "cursor" for p in operation.get("parameters", ())):
                errors.append(InvalidCursorValue)
            if idempotent in calls:
                errors += [InvalidIdempotencyKey, IdempotencyKeyReused]
            for error in errors:
                _declare(operation["responses"], error)


def _problems_as_problem_json(operation: dict[str, Any]) -> None:
    """`responses(...)` entries carry the Problem model, which FastAPI files under the
    route's JSON media type: moved to application/problem+json, what is sent."""
    for status, entry in operation.get("responses", {}).items():
        content = entry.get("content", {})
        if status >= "400" and PROBLEM_CONTENT_TYPE in content:
            moved = content.pop("application/json", None)
            if moved is not None:
                content[PROBLEM_CONTENT_TYPE] = moved


def _declare(declared: dict[str, Any], error: type[BillingError]) -> None:
    described = f"{error.title} (`{error.code}`)"
    entry = declared.get(str(error.status))
    if entry is None or entry.get("description") == "Validation Error":
        # FastAPI's own 422 describes a body this API never sends: replaced.
        entry = declared[str(error.status)] = {"description": described}
    elif f"`{error.code}`" not in entry.get("description", ""):
        entry["description"] = f"{entry['description']}; {described}"
    entry.setdefault("content", {})[PROBLEM_CONTENT_TYPE] = {"schema": _PROBLEM_REF}


def _calls(dependant: Dependant) -> Iterator[Any]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _calls(dependency)
