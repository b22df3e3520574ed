"""The route class that owns each request's transaction (and Idempotency-Key replay).

Endpoints and services never commit: the request succeeds and commits as a whole, or fails
and rolls back as a whole, so no error leaves a partial write.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from aihub_billing.idempotency.service import Replay, idempotency

REPLAY_HEADER = "Idempotent-Replayed"


class IdempotentReplay(Exception):
    """Raised by the idempotency dependency when the request was already answered."""

    def __init__(self, replay: Replay) -> None:
        self.replay = replay
        super().__init__("replayed")


class TransactionalRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def transactional(request: Request) -> Response:
            billing = request.app.state.billing
            async with billing.db.sessions() as session:
                request.state.session = session
                try:
                    response = await handler(request)
                except IdempotentReplay as replayed:
                    await session.rollback()
                    return JSONResponse(
                        replayed.replay.body,
                        status_code=replayed.replay.status_code,
                        headers={REPLAY_HEADER: "true"},
                    )
                except BaseException:
                    await session.rollback()
                    raise
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
