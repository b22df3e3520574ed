"""Resolves a bearer secret to the actor it stands for."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.auth.keys import digest
from aihub_billing.auth.repository import ApiKeyRepository
from aihub_billing.errors import Unauthenticated
from aihub_billing.kit.context import KEY_ROLES, Actor, Role


class AuthService:
    async def authenticate(self, session: AsyncSession, authorization: str | None) -> Actor:
        if not authorization:
            raise Unauthenticated("send 'Authorization: Bearer <api key>'")
        scheme, _, secret = authorization.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret or len(secret) > 512:
            raise Unauthenticated("send 'Authorization: Bearer <api key>'")
        key = await ApiKeyRepository(session).by_digest(digest(secret))
        if key is None or key.revoked_at is not None:
            raise Unauthenticated("unknown or revoked API key")
        role = Role(key.role)
        if role not in KEY_ROLES:  # pragma: no cover - guarded when keys are issued
            raise Unauthenticated("unknown or revoked API key")
        return Actor(role=role, account_id=key.account_id, key_id=key.id, member_id=key.member_id)


auth = AuthService()
