"""Claims an Idempotency-Key inside the request's transaction and stores its response.

The record is inserted before the endpoint runs and committed with the endpoint's effects,
so either both exist or neither does. A concurrent duplicate blocks on the unique index
until the first commits, then replays the stored response.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.errors import IdempotencyKeyReused, InvalidIdempotencyKey
from aihub_billing.idempotency.repository import IdempotencyRepository
from aihub_billing.kit.context import Context
from aihub_billing.kit.ids import new_id
from aihub_billing.models import IdempotencyRecord

_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
OPERATOR_SCOPE = "operator"
# A response field that is shown once (a new API key's secret): never stored, so never
# replayed.
_SHOWN_ONCE = "secret"


@dataclass(frozen=True, slots=True)
class Replay:
    status_code: int
    body: Any


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    """Same JSON in a different key order or spacing is the same request."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


class IdempotencyService:
    async def begin(
        self,
        session: AsyncSession,
        ctx: Context,
        *,
        key: str,
        method: str,
        path: str,
        body: bytes,
        ttl: timedelta,
    ) -> IdempotencyRecord | Replay:
        """The new record to fill once the endpoint answers, or the replay of the first answer."""
        if not _KEY.match(key):
            raise InvalidIdempotencyKey()
        # Per API key: a replay answers only the credential that made the request (another
        # key of the account, with another role, must not read its answer).
        scope = ctx.actor.key_id or ctx.actor.account_id or OPERATOR_SCOPE
        fingerprint = request_fingerprint(method, path, body)
        now = ctx.clock.now()
        repo = IdempotencyRepository(session)
        existing = await repo.get(scope, key)
        if existing is not None and existing.created_at <= now - ttl:
            await session.delete(existing)
            await session.flush()
            existing = None
        if existing is None:
            record = IdempotencyRecord(
                id=new_id("idem", now),
                scope=scope,
                key=key,
                method=method,
                path=path,
                request_hash=fingerprint,
                status_code=0,
                response_body=None,
                created_at=now,
            )
            try:
                async with session.begin_nested():
                    session.add(record)
                return record
            except IntegrityError:
                # Another request with this key committed first: answer as it did.
                existing = await repo.get(scope, key)
                if existing is None:  # pragma: no cover - the conflicting row must be there
                    raise
        if existing.request_hash != fingerprint:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used for a different request; use a new key"
            )
        stored = existing.response_body
        if isinstance(stored, dict) and _SHOWN_ONCE in stored:
            raise IdempotencyKeyReused(
                f"this Idempotency-Key already created {stored.get('id')}, whose secret is shown "
                "once and not kept: revoke that key and create another with a new "
                "Idempotency-Key"
            )
        return Replay(existing.status_code, stored)

    async def complete(
        self, session: AsyncSession, record: IdempotencyRecord, status_code: int, body: Any
    ) -> None:
        record.status_code = status_code
        if isinstance(body, dict) and _SHOWN_ONCE in body:
            body = {**body, _SHOWN_ONCE: None}
        record.response_body = body
        await session.flush()

    async def purge(self, session: AsyncSession, ctx: Context, ttl: timedelta) -> int:
        return await IdempotencyRepository(session).delete_older_than(ctx.clock.now() - ttl)


idempotency = IdempotencyService()
