"""Accounts, members and API keys: creation, changes, scoped reads, audit."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.accounts import schemas
from aihub_billing.accounts.errors import (
    AccountNotFound,
    ApiKeyNotFound,
    MemberExists,
    MemberNotFound,
    RoleNotAllowed,
    TaxSettingsConflict,
)
from aihub_billing.accounts.repository import AccountRepository
from aihub_billing.audit.service import audit
from aihub_billing.auth.keys import IssuedSecret, issue_secret
from aihub_billing.auth.repository import ApiKeyRepository
from aihub_billing.auth.service import auth
from aihub_billing.errors import Forbidden
from aihub_billing.kit.context import Context, Role
from aihub_billing.kit.ids import new_id
from aihub_billing.kit.pagination import id_page
from aihub_billing.models import Account, ApiKey, Member

# Names of the admin keys bootstrap makes: the random one of a first start, and the one of
# AIHUB_BILLING_ADMIN_KEY.
RANDOM_BOOTSTRAP_KEY = "bootstrap"
CONFIGURED_BOOTSTRAP_KEY = "bootstrap (AIHUB_BILLING_ADMIN_KEY)"
BOOTSTRAP_KEY_NAMES = (RANDOM_BOOTSTRAP_KEY, CONFIGURED_BOOTSTRAP_KEY)


class AccountService:
    async def create(
        self,
        session: AsyncSession,
        ctx: Context,
        data: schemas.AccountCreate,
        *,
        default_currency: str,
    ) -> Account:
        if not ctx.actor.is_operator:
            raise Forbidden("only the operator creates accounts")
        now = ctx.clock.now()
        account = Account(
            id=new_id("acct", now),
            name=data.name,
            email=data.email,
            currency=data.currency or default_currency,
            tax_rate=data.tax_rate,
            tax_exempt=data.tax_exempt,
            status="active",
            created_at=now,
            updated_at=now,
        )
        AccountRepository(session).add(account)
        await audit.record(
            session,
            ctx,
            action="account.created",
            object_type="account",
            object_id=account.id,
            account_id=account.id,
            after=schemas.Account.model_validate(account),
        )
        return account

    async def update(
        self,
        session: AsyncSession,
        ctx: Context,
        account_id: str,
        data: schemas.AccountUpdate,
    ) -> Account:
        """Changes the fields sent. The owner may change its account's name and email; the
        tax rate and exemption are the operator's. Invoices generated from now on use the new
        tax settings (they read them at generation); those already generated keep theirs."""
        account = await self.get(session, ctx, account_id)
        changes = data.changes()
        if not ctx.actor.is_operator:
            _require(ctx, Role.OWNER)
            if changes.keys() & _OPERATOR_FIELDS:
                raise Forbidden("only the operator sets tax_rate and tax_exempt")
        repo = AccountRepository(session)
        await repo.lock(account.id)  # a concurrent change cannot slip between check and write
        await session.refresh(account)
        if changes.keys() & _OPERATOR_FIELDS:
            exempt = changes.get("tax_exempt", account.tax_exempt)
            if exempt and changes.get("tax_rate", account.tax_rate) is not None:
                raise TaxSettingsConflict(
                    "the account is tax exempt: send tax_exempt false with a tax_rate"
                    if "tax_rate" in changes
                    else f"the account has the tax rate {account.tax_rate}: send tax_rate null"
                    " with tax_exempt true"
                )
        changed = {k: v for k, v in changes.items() if getattr(account, k) != v}
        if not changed:
            return account
        before = schemas.Account.model_validate(account)
        for field, value in changed.items():
            setattr(account, field, value)
        account.updated_at = ctx.clock.now()
        await session.flush()  # the account's cached reads go at commit (caching.py)
        await audit.record(
            session,
            ctx,
            action="account.updated",
            object_type="account",
            object_id=account.id,
            account_id=account.id,
            before=before,
            after=schemas.Account.model_validate(account),
        )
        return account

    async def lock(self, session: AsyncSession, account_id: str) -> None:
        """Holds the account row until the transaction ends: subscribing and attaching the
        account to a test clock take turns, so neither decides on a state the other is
        changing."""
        await AccountRepository(session).lock(account_id)

    async def get(self, session: AsyncSession, ctx: Context, account_id: str) -> Account:
        """The account, if the actor may see it; otherwise not found, so ids don't leak."""
        account = await AccountRepository(session).get(account_id)
        if account is None or not ctx.actor.can_access(account.id):
            raise AccountNotFound(f"no account {account_id!r}")
        return account

    async def page(
        self, session: AsyncSession, ctx: Context, *, cursor: str | None, limit: int | None
    ) -> tuple[list[Account], str | None]:
        if not ctx.actor.is_operator:
            account = await self.get(session, ctx, ctx.actor.account_id or "")
            return [account], None
        repo = AccountRepository(session)
        return await id_page(
            cursor, limit, lambda after_id, n: repo.page(limit=n, after_id=after_id)
        )

    async def add_member(
        self, session: AsyncSession, ctx: Context, account_id: str, data: schemas.MemberCreate
    ) -> Member:
        account = await self.get(session, ctx, account_id)
        _require(ctx, Role.OWNER)
        repo = AccountRepository(session)
        if await repo.member_by_email(account.id, data.email) is not None:
            raise MemberExists(f"{data.email} is already a member")
        now = ctx.clock.now()
        member = Member(
            id=new_id("mem", now),
            account_id=account.id,
            email=data.email,
            name=data.name,
            created_at=now,
            updated_at=now,
        )
        repo.add(member)
        await audit.record(
            session,
            ctx,
            action="member.created",
            object_type="member",
            object_id=member.id,
            account_id=account.id,
            after=schemas.Member.model_validate(member),
        )
        return member

    async def members(self, session: AsyncSession, ctx: Context, account_id: str) -> list[Member]:
        account = await self.get(session, ctx, account_id)
        _require(ctx, Role.OWNER)
        return await AccountRepository(session).members(account.id)

    async def issue_key(
        self, session: AsyncSession, ctx: Context, account_id: str, data: schemas.ApiKeyCreate
    ) -> tuple[ApiKey, str]:
        account = await self.get(session, ctx, account_id)
        _require(ctx, Role.OWNER)
        repo = AccountRepository(session)
        if data.member_id is not None and await repo.member(account.id, data.member_id) is None:
            raise MemberNotFound(f"no member {data.member_id!r} in this account")
        key, issued = _new_key(ctx, Role(data.role), account.id, data.member_id, data.name)
        ApiKeyRepository(session).add(key)
        await _audit_key(session, ctx, key)
        return key, issued.secret

    async def issue_operator_key(
        self, session: AsyncSession, ctx: Context, *, name: str | None, secret: str | None = None
    ) -> tuple[ApiKey, str]:
        """An admin key (CLI and bootstrap only: the API never mints operator keys)."""
        if not ctx.actor.is_operator:
            raise RoleNotAllowed("only the operator issues admin keys")
        key, issued = _new_key(ctx, Role.ADMIN, None, None, name, secret)
        ApiKeyRepository(session).add(key)
        await _audit_key(session, ctx, key)
        return key, issued.secret

    async def retire_bootstrap_keys(
        self, session: AsyncSession, ctx: Context, keep_id: str
    ) -> list[ApiKey]:
        """Revokes the admin keys that earlier starts made (the random first one, a previous
        AIHUB_BILLING_ADMIN_KEY) other than `keep_id`: setting the key replaces them, so a
        rotated or leaked bootstrap key stops working. Keys issued by name stay."""
        if not ctx.actor.is_operator:
            raise RoleNotAllowed("only the operator retires admin keys")
        retired = []
        for key in await ApiKeyRepository(session).live_admins(names=BOOTSTRAP_KEY_NAMES):
            if key.id != keep_id:
                retired.append(await self._revoke(session, ctx, key))
        return retired

    async def revoke_key(
        self, session: AsyncSession, ctx: Context, account_id: str, key_id: str
    ) -> ApiKey:
        """Revokes a key of the account; revoking it again changes nothing."""
        account = await self.get(session, ctx, account_id)
        _require(ctx, Role.OWNER)
        key = await ApiKeyRepository(session).get(key_id)
        if key is None or key.account_id != account.id:
            raise ApiKeyNotFound(f"no API key {key_id!r} in this account")
        if key.revoked_at is not None:
            return key
        return await self._revoke(session, ctx, key)

    async def _revoke(self, session: AsyncSession, ctx: Context, key: ApiKey) -> ApiKey:
        before = schemas.ApiKey.model_validate(key)
        key.revoked_at = ctx.clock.now()
        await session.flush()
        auth.revoked(session, key.key_hash)  # this process refuses it at once (auth.service)
        await audit.record(
            session,
            ctx,
            action="api_key.revoked",
            object_type="api_key",
            object_id=key.id,
            account_id=key.account_id,
            before=before,
            after=schemas.ApiKey.model_validate(key),
        )
        return key

    async def keys(self, session: AsyncSession, ctx: Context, account_id: str) -> list[ApiKey]:
        account = await self.get(session, ctx, account_id)
        _require(ctx, Role.OWNER)
        return await ApiKeyRepository(session).for_account(account.id)


# What only the operator changes on an account (AccountUpdate).
_OPERATOR_FIELDS = frozenset({"tax_rate", "tax_exempt"})


def _require(ctx: Context, role: Role) -> None:
    """Owner-level actions: the operator or the account's owner."""
    if not (ctx.actor.is_operator or ctx.actor.role == role):
        raise RoleNotAllowed(f"needs the {role} role")


def _new_key(
    ctx: Context,
    role: Role,
    account_id: str | None,
    member_id: str | None,
    name: str | None,
    secret: str | None = None,
) -> tuple[ApiKey, IssuedSecret]:
    issued = issue_secret(secret)
    now = ctx.clock.now()
    key = ApiKey(
        id=new_id("key", now),
        account_id=account_id,
        member_id=member_id,
        role=str(role),
        name=name,
        prefix=issued.prefix,
        key_hash=issued.digest,
        created_at=now,
        revoked_at=None,
    )
    return key, issued


async def _audit_key(session: AsyncSession, ctx: Context, key: ApiKey) -> None:
    await audit.record(
        session,
        ctx,
        action="api_key.created",
        object_type="api_key",
        object_id=key.id,
        account_id=key.account_id,
        after=schemas.ApiKey.model_validate(key),
    )


accounts = AccountService()
