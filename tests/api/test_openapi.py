"""The OpenAPI document declares what the plumbing answers, on every operation (the fuzz
tests hold responses to it; this keeps the declarations themselves honest and cheap to see)."""

from __future__ import annotations

from typing import Any

from aihub_billing.main import API_PREFIX, create_app

PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    document = create_app().openapi()
    return [
        (method.upper(), path, operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]


def test_every_error_is_declared_as_a_problem() -> None:
    for method, path, operation in _operations():
        for status, response in operation["responses"].items():
            if status >= "400" and (path, status) != ("/readyz", "503"):
                assert response.get("content") == PROBLEM, (method, path, status, response)


def test_keyed_routes_declare_401_and_429_and_bodies_413() -> None:
    unauthenticated = {"/healthz", "/readyz"} | {
        f"{API_PREFIX}/webhooks/{provider}" for provider in ("stripe", "paypal")
    }
    for method, path, operation in _operations():
        declared = set(operation["responses"])
        if path not in unauthenticated:
            assert {"401", "429"} <= declared, (method, path)
        else:
            assert not {"401", "429"} & declared, (method, path)
        if "requestBody" in operation:
            assert {"413", "422"} <= declared, (method, path)


def test_validation_errors_replace_fastapis_default() -> None:
    for _, _, operation in _operations():
        response = operation["responses"].get("422")
        if response is not None:
            assert "`validation_error`" in response["description"]
            assert "application/json" not in response["content"]


def test_keyed_routes_name_the_api_key_as_their_security() -> None:
    document = create_app().openapi()
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    for method, path, operation in _operations():
        keyed = "401" in operation["responses"]
        assert (operation.get("security") == [{"apiKey": []}]) is keyed, (method, path)
