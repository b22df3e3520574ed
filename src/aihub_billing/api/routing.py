"""The route class that owns each request's transaction (and Idempotency-Key replay).

Endpoints and services never commit: the request succeeds and commits as a whole, or fails
and rolls back as a whole, so no error leaves a partial write. The exception is an error
whose class says `commits` (an outcome such as a recorded decline): its writes are committed
and its problem stored for Idempotency-Key replays.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any, TypeVar

import structlog
from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.api.problems import problem_response
from aihub_billing.errors import PROBLEM_CONTENT_TYPE, BillingError
from aihub_billing.idempotency.service import Replay, idempotency
from aihub_billing.kit.db import UNREACHABLE

log = structlog.get_logger(__name__)

REPLAY_HEADER = "Idempotent-Replayed"
_REPLICA = "__replica_read__"
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def replica_read(endpoint: Endpoint) -> Endpoint:
    """Marks a read-only listing that may run on the read replica when one is configured
    (`database_replica_url`): it can trail the primary by the replica's replay lag, so only
    listings and reports take it, never what a write is decided on or read back by id."""
    setattr(endpoint, _REPLICA, True)
    return endpoint


class ExactNumbersRequest(Request):
    """Parses a JSON number with a fraction or an exponent as a Decimal, not a float, so a
    price sent as a number (not as the documented string) keeps every digit: a float holds
    about 15 and would change `0.123456789012345678` without a word."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(await self.body(), parse_float=Decimal)
        return self._json


class IdempotentReplay(Exception):
    """Raised by the idempotency dependency when the request was already answered."""

    def __init__(self, replay: Replay) -> None:
        self.replay = replay
        super().__init__("replayed")


class TransactionalRoute(APIRoute):
    def endpoint_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """What runs inside the transaction: FastAPI's handler (a subclass may lighten it)."""
        return super().get_route_handler()

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = self.endpoint_handler()
        on_replica = getattr(self.endpoint, _REPLICA, False)

        async def transactional(request: Request) -> Response:
            request = ExactNumbersRequest(request.scope, request.receive)
            db = request.app.state.billing.db
            if not on_replica or db.read_sessions is db.sessions:
                return await in_transaction(request, db.sessions)
            try:
                return await in_transaction(request, db.read_sessions)
            except UNREACHABLE as exc:
                # A replica that is down must not take the listings with it (readyz says
                # `degraded`): they are read from the primary instead. A read-only GET
                # that changed nothing can simply run again.
                log.warning("db.replica_unavailable", error=str(getattr(exc, "orig", exc))[:300])
                return await in_transaction(request, db.sessions)

        async def in_transaction(
            request: Request, sessions: Callable[[], AsyncSession]
        ) -> Response:
            async with sessions() as session:
                request.state.session = session
                try:
                    response = await handler(request)
                except IdempotentReplay as replayed:
                    await session.rollback()
                    status_code = replayed.replay.status_code
                    return JSONResponse(
                        replayed.replay.body,
                        status_code=status_code,
                        headers={REPLAY_HEADER: "true"},
                        media_type=PROBLEM_CONTENT_TYPE if status_code >= 400 else None,
                    )
                except BillingError as error:
                    if not error.commits:
                        await session.rollback()
                        raise
                    response = problem_response(request, error)
                except BaseException:
                    await session.rollback()
                    raise
                else:
                    if response.status_code >= 400:
                        await session.rollback()
                        return response
                record = getattr(request.state, "idempotency_record", None)
                if record is not None:
                    await idempotency.complete(
                        session, record, response.status_code, _json_body(response)
                    )
                # A request that never touched the database (a cached quota check) skips
                # the commit round trip through SQLAlchemy's greenlet.
                if session.in_transaction():
                    await session.commit()
                return response

        return transactional


def _json_body(response: Response) -> Any:
    body = getattr(response, "body", b"")
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None
