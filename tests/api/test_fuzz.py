"""Schemathesis over the whole OpenAPI, as the operator and as an account owner.

Each run starts from a seeded database (an account with one object of every kind, see
world.py) and fails on any 5xx or any response that breaks the declared schema: status
codes, content types, bodies and headers; invalid input must be refused with a 4xx.
Generation is deterministic (fixed seed, derandomized) and capped per operation.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.python import asgi
from sqlalchemy.engine import make_url

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.main import create_app
from aihub_billing.service import BillingService, migrate_database
from tests.api.world import Operator, Tenant, make_operator_objects, make_tenant
from tests.backends import pg_admin, throwaway_postgres
from tests.conftest import make_config

MAX_EXAMPLES = 5
# SQLite by default (the suite's time budget); AIHUB_BILLING_TEST_FUZZ_BACKEND=postgresql runs
# the same fuzzing against PostgreSQL.
BACKEND = os.environ.get("AIHUB_BILLING_TEST_FUZZ_BACKEND", "sqlite")
SEED = 20260131

FUZZ_CONFIG = {
    "seed": SEED,
    # The coverage phase also sends each path methods it does not document (405 and Allow):
    # one is enough to see that, eight would cost a tenth of the run.
    "phases": {"coverage": {"unexpected-methods": ["options"]}},
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    "checks": {
        # Valid input may still be refused (an id that does not exist, a state conflict).
        "positive_data_acceptance": {"enabled": False},
    },
    "operations": [
        {
            # Events of a batch are validated one by one: an invalid event is rejected in the
            # results (200), the others are still recorded. Only the envelope is refused.
            "include-path": "/api/v1/billing/usage/batch",
            "checks": {"negative_data_rejection": {"enabled": False}},
        }
    ],
}


# The schema is the app's own OpenAPI, read at collection time (no database needed); each
# test then calls a freshly seeded app.
schema = schemathesis.openapi.from_dict(
    create_app(make_config("sqlite+aiosqlite://")).openapi(),
    config=schemathesis.Config.from_dict(FUZZ_CONFIG),
)


async def _no_app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("every request names the app of its world")


# Marks the schema as served in process (ASGI); each call, and each probe a check sends
# (e.g. the same request without its API key), goes to the `app=` of its call.
schema.app = _no_app


@dataclass
class World:
    app: Any
    admin_key: str
    tenant: Tenant
    operator: Operator


def _clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 1, 31, 12, 0, tzinfo=UTC))


async def _seed(url: str) -> tuple[str, Tenant, Operator]:
    billing = BillingService(make_config(url), clock=_clock())
    try:
        boot = await billing.bootstrap()
        assert boot.admin_secret is not None
        app = create_app(billing=billing)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                tenant = await make_tenant(c, billing, boot.admin_secret, "acme")
                await make_tenant(c, billing, boot.admin_secret, "globex")
                operator = await make_operator_objects(c, boot.admin_secret)
        return boot.admin_secret, tenant, operator
    finally:
        await billing.close()


@dataclass
class Seeded:
    url: str
    admin_key: str
    tenant: Tenant
    operator: Operator


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    if BACKEND == "postgresql":
        with throwaway_postgres("aihub_billing_fuzz") as url:
            migrate_database(url)
            yield Seeded(url, *asyncio.run(_seed(url)))
        return
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('fuzz') / 'seeded.db'}"
    migrate_database(url)
    yield Seeded(url, *asyncio.run(_seed(url)))


@contextmanager
def _copy(seeded: Seeded, name: str) -> Iterator[str]:
    """A copy of the seeded database (a file, or a PostgreSQL database made from it)."""
    source = make_url(seeded.url)
    if BACKEND == "postgresql":
        copy = f"{source.database}_{name}"
        asyncio.run(pg_admin(f'CREATE DATABASE "{copy}" TEMPLATE "{source.database}"'))
        try:
            yield source.set(database=copy).render_as_string(hide_password=False)
        finally:
            asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)'))
        return
    assert source.database is not None
    path = Path(source.database).with_name(f"{name}.db")
    shutil.copyfile(source.database, path)
    yield f"sqlite+aiosqlite:///{path}"


def _world(seeded: Seeded, name: str) -> Iterator[World]:
    """The seeded data behind an app of its own (one per role: the operator's run revokes
    keys and voids invoices the owner's run should still find)."""
    with _copy(seeded, name) as url:
        # The app runs in schemathesis' event loop thread, with a service made there.
        app = create_app(make_config(url), clock=_clock())
        try:
            yield World(app, seeded.admin_key, seeded.tenant, seeded.operator)
        finally:
            asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def operator_world(seeded: Seeded) -> Iterator[World]:
    yield from _world(seeded, "operator")


@pytest.fixture(scope="module")
def owner_world(seeded: Seeded) -> Iterator[World]:
    yield from _world(seeded, "owner")


def _real_ids(case: schemathesis.Case, world: World) -> None:
    """Points the path at the seeded objects, so the request reaches the code past the
    lookup (a generated id finds nothing and stops at 404)."""
    tenant, operator = world.tenant, world.operator
    ids = {
        "account_id": tenant.account_id,
        "key_id": tenant.billing_key_id,
        "subscription_id": tenant.subscription_id,
        "invoice_id": tenant.invoice_id,
        "credit_note_id": tenant.credit_note_id,
        "payment_id": tenant.payment_id,
        "method_id": tenant.payment_method_id,
        "reservation_id": tenant.reservation_id,
        "clock_id": operator.test_clock_id,
        "code": operator.coupon_code if "/coupons/" in case.path else operator.plan_code,
    }
    for name in case.path_parameters or {}:
        case.path_parameters[name] = ids[name]  # a new kind of id: seed one in world.py


_CASES = itertools.count()
# Operator-only operations refuse an owner key before reading the request: after a few such
# refusals the owner's copy of the case teaches nothing (and halves the cost of the widest
# bodies, plans and overrides).
_REFUSED_TO_OWNER: Counter[str] = Counter()
ENOUGH_REFUSALS = 3


def _call(case: schemathesis.Case, world: World, key: str, role: str) -> schemathesis.Response:
    # The document names the API key as each keyed operation's security: schemathesis puts a
    # made-up key in valid cases (replaced by the real one) and leaves it out of some invalid
    # ones (sent without, they must get 401).
    generated = {name.lower() for name in case.headers or {}}
    headers = {"Authorization": f"Bearer {key}"} if "authorization" in generated else {}
    try:
        return case.call_and_validate(app=world.app, headers=headers)
    except BaseException as exc:
        exc.add_note(f"(sent with the {role}'s key)")
        raise


@schema.parametrize()
def test_fuzz(case: schemathesis.Case, operator_world: World, owner_world: World) -> None:
    """Each generated request goes to both apps: as the operator, then as the owner; every
    other one with the path pointing at seeded objects."""
    if case.path_parameters and next(_CASES) % 2:
        _real_ids(case, operator_world)
    _call(case, operator_world, operator_world.admin_key, "operator")
    label = case.operation.label
    if _REFUSED_TO_OWNER[label] < ENOUGH_REFUSALS:
        response = _call(case, owner_world, owner_world.tenant.owner_key, "owner")
        if response.status_code == 403 and response.json().get("code") == "forbidden":
            _REFUSED_TO_OWNER[label] += 1
