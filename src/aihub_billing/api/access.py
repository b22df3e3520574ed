"""One access log line and one latency observation per request (pure ASGI, like the request id
middleware: no per-request task, no body copy).

Both name the route by its template (`/api/v1/billing/plans/{code}`), never the raw path: a
path holds ids (unbounded label values) and may hold what a caller should not have sent.
"""

from __future__ import annotations

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aihub_billing.kit.clock import monotonic
from aihub_billing.kit.metrics import HTTP_REQUEST_DURATION

log = structlog.get_logger("aihub_billing.access")

UNMATCHED = "<unmatched>"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Probes and scrapes arrive every few seconds: logged at debug, still measured.
_QUIET = frozenset({"/healthz", "/readyz", "/metrics"})


class AccessMiddleware:
    def __init__(self, app: ASGIApp, *, log_requests: bool = True) -> None:
        self.app = app
        self.log_requests = log_requests
        # id(route) -> (prefix, template). Routes live as long as the app (and so this map).
        self._templates: dict[int, tuple[str, str]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = monotonic()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        except Exception:
            status = 500  # the error handler answers 500 outside this middleware
            raise
        finally:
            elapsed = monotonic() - start
            route = self.template(scope)
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            HTTP_REQUEST_DURATION.labels(route, method, f"{status // 100}xx").observe(elapsed)
            if self.log_requests:
                (log.debug if route in _QUIET else log.info)(
                    "http.request",
                    method=method,
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )

    def template(self, scope: Scope) -> str:
        """The matched route's full path template, or UNMATCHED."""
        path: str = scope["path"]
        route = scope.get("route")
        regex = getattr(route, "path_regex", None)
        if route is None or regex is None:
            # FastAPI's own pages (/docs, /openapi.json) match without naming their route;
            # they have no parameters, so their path is their template.
            if scope.get("endpoint") is not None and not scope.get("path_params"):
                return path
            return UNMATCHED
        # The route knows its path below the prefixes it was included under (the API prefix):
        # the prefix is what precedes the part of the path its own pattern matches.
        known = self._templates.get(id(route))
        if known is not None and path.startswith(known[0]) and regex.match(path[len(known[0]) :]):
            return known[1]
        for i, char in enumerate(path):
            if char == "/" and regex.match(path[i:]):
                prefix = path[:i]
                template = f"{prefix}{route.path}"
                # Include prefixes have no parameters here: one per route, found once.
                self._templates.setdefault(id(route), (prefix, template))
                return template
        return UNMATCHED
