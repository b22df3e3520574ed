"""Resolves a bearer secret to the actor it stands for.

Resolved keys are cached in process for `cache_seconds` (a DB round trip per request would
dominate the quota hot path). A revoke in this process drops the entry at once; another
process keeps accepting the revoked key until its entry expires (at most `cache_seconds`).
"""

from __future__ import annotations

from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.auth.keys import digest
from aihub_billing.auth.repository import ApiKeyRepository
from aihub_billing.errors import Unauthenticated
from aihub_billing.kit.clock import monotonic
from aihub_billing.kit.context import KEY_ROLES, Actor, Role
from aihub_billing.kit.db import SessionSource, on_commit, session_of

DEFAULT_CACHE_SECONDS = 10.0
MAX_CACHED = 10_000


class AuthService:
    def __init__(self, cache_seconds: float = DEFAULT_CACHE_SECONDS) -> None:
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Actor]] = {}
        self._refreshing: set[str] = set()
        # Moves on with every forget: a lookup that read the database before a revoke was
        # committed and finishes after it does not cache what it read.
        self._forgotten = 0

    async def authenticate(self, session: SessionSource, authorization: str | None) -> Actor:
        """The actor of a bearer key; the database is read only when the key is not in the
        cache."""
        if not authorization:
            raise Unauthenticated("send 'Authorization: Bearer <api key>'")
        scheme, _, secret = authorization.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret or len(secret) > 512:
            raise Unauthenticated("send 'Authorization: Bearer <api key>'")
        key_digest = digest(secret)
        cached = self._cache.get(key_digest)
        # Expired under load: one request re-reads, the others keep the old entry meanwhile
        # (a revoke in this process drops it, so it is never served stale here).
        if cached is not None and (cached[0] > monotonic() or key_digest in self._refreshing):
            return cached[1]
        self._refreshing.add(key_digest)
        try:
            async with session_of(session) as opened:
                return await self._lookup(opened, key_digest, self._forgotten)
        finally:
            self._refreshing.discard(key_digest)

    async def _lookup(self, session: AsyncSession, key_digest: str, generation: int) -> Actor:
        key = await ApiKeyRepository(session).by_digest(key_digest)
        if key is None or key.revoked_at is not None:
            raise Unauthenticated("unknown or revoked API key")
        role = Role(key.role)
        if role not in KEY_ROLES:  # pragma: no cover - guarded when keys are issued
            raise Unauthenticated("unknown or revoked API key")
        actor = Actor(role=role, account_id=key.account_id, key_id=key.id, member_id=key.member_id)
        if self.cache_seconds > 0 and generation == self._forgotten:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[key_digest] = (monotonic() + self.cache_seconds, actor)
        return actor

    def forget(self, key_digest: str) -> None:
        """Drops a key from this process's cache."""
        self._forgotten += 1
        self._cache.pop(key_digest, None)

    def revoked(self, session: AsyncSession, key_digest: str) -> None:
        """A key revoked in `session`: dropped from this process's cache now and again once
        the session commits, for a request may have read (and cached) the key as still valid
        in between."""
        self.forget(key_digest)
        on_commit(session, partial(self.forget, key_digest))


auth = AuthService()
