"""FastAPI dependencies: session, actor, context, role checks, Idempotency-Key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.api.routing import IdempotentReplay
from aihub_billing.auth.service import auth
from aihub_billing.errors import Forbidden
from aihub_billing.idempotency.service import Replay, idempotency
from aihub_billing.kit.context import Actor, Context, Role
from aihub_billing.kit.db import SessionSource
from aihub_billing.service import BillingService

# Dependencies are `async def` even when they do not await: FastAPI runs a plain `def`
# dependency in the thread pool, a hop that costs more than the whole quota check.


async def get_billing(request: Request) -> BillingService:
    billing: BillingService = request.app.state.billing
    return billing


async def get_session(request: Request) -> AsyncSession:
    session: AsyncSession = request.state.session
    return session


SessionDep = Annotated[AsyncSession, Depends(get_session)]
BillingDep = Annotated[BillingService, Depends(get_billing)]


async def authenticated(
    request: Request,
    session: SessionSource,
    authorization: str | None,
) -> Actor:
    """The caller's actor, once its key is known and within its request rate (every
    authenticated request passes here: the dependency below and the lean routes)."""
    actor = await auth.authenticate(session, authorization)
    billing: BillingService = request.app.state.billing
    await billing.key_limit.check(actor, billing.clock.now())
    return actor


async def get_actor(
    request: Request,
    session: SessionDep,
    authorization: Annotated[
        str | None, Header(description="Bearer <API key>", include_in_schema=False)
    ] = None,
) -> Actor:
    return await authenticated(request, session, authorization)


ActorDep = Annotated[Actor, Depends(get_actor)]


async def get_context(request: Request, actor: ActorDep) -> Context:
    return _context(request, actor)


async def lean_context(request: Request, session: SessionSource) -> Context:
    """What ContextDep gives, for the lean routes that skip dependency solving; `session`
    may be a factory (a session only when auth misses its cache)."""
    return _context(
        request, await authenticated(request, session, request.headers.get("authorization"))
    )


def _context(request: Request, actor: Actor) -> Context:
    billing: BillingService = request.app.state.billing
    return Context(
        actor=actor, clock=billing.clock, request_id=getattr(request.state, "request_id", None)
    )


ContextDep = Annotated[Context, Depends(get_context)]


# Every role check made here: the OpenAPI document declares 403 on routes that use one.
ROLE_CHECKS: set[Callable[..., Awaitable[Context]]] = set()


def require_roles(*roles: Role) -> Callable[[Context], Awaitable[Context]]:
    """Admin passes every check; other roles must be listed."""

    async def check(ctx: ContextDep) -> Context:
        if ctx.actor.role != Role.ADMIN and ctx.actor.role not in roles:
            allowed = ", ".join(["admin", *(str(r) for r in roles)])
            raise Forbidden(f"this action needs one of the roles: {allowed}")
        return ctx

    ROLE_CHECKS.add(check)
    return check


AdminContext = Annotated[Context, Depends(require_roles())]


async def idempotent(
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Retry-safe creation: the same key and body return the first response",
            max_length=255,
        ),
    ] = None,
) -> None:
    if idempotency_key is None:
        return
    billing: BillingService = request.app.state.billing
    outcome = await idempotency.begin(
        session,
        ctx,
        key=idempotency_key,
        method=request.method,
        path=request.url.path,
        body=await request.body(),
        ttl=timedelta(hours=billing.config.idempotency_ttl_hours),
    )
    if isinstance(outcome, Replay):
        raise IdempotentReplay(outcome)
    request.state.idempotency_record = outcome


Idempotent = Depends(idempotent)
