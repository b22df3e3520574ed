"""Request body size limit (pure ASGI: no body copy, nothing read past the limit).

A declared Content-Length over the limit is refused before a byte of the body is read; a
body without one (chunked) is counted as it streams in and refused when the count passes
the limit. Either way the answer is a 413 problem.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aihub_billing.errors import PROBLEM_CONTENT_TYPE, PayloadTooLarge

_CONTENT_LENGTH = b"content-length"


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes the limit; an HTTPException so that
    FastAPI's body parsing lets it through, and rendered as a 413 problem."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over the limit of {limit} bytes")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int, by_path: dict[str, int]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.by_path = by_path  # exact paths with a limit of their own (/usage/batch)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.by_path.get(scope["path"], self.max_bytes)
        for name, value in scope["headers"]:
            if name == _CONTENT_LENGTH:
                # The server holds the body to its Content-Length: checking the header is
                # enough. A malformed one is the server's to refuse (uvicorn does).
                if value.isdigit() and int(value) > limit:
                    await _refuse(scope, send, limit)
                    return
                await self.app(scope, receive, send)
                return

        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


async def _refuse(scope: Scope, send: Send, limit: int) -> None:
    error = PayloadTooLarge(f"the request body is over the limit of {limit} bytes")
    request_id = scope.get("state", {}).get("request_id")
    body = error.problem(instance=scope["path"], request_id=request_id)
    # The unread body is left to the server, which closes the connection rather than read it.
    response = JSONResponse(
        body,
        status_code=error.status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers={"Connection": "close"},
    )
    await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}
