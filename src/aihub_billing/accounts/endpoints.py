"""/accounts: the operator creates and changes accounts; owners manage members and API keys
and change their account's name and email."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from aihub_billing.accounts import schemas
from aihub_billing.accounts.errors import (
    AccountNotFound,
    ApiKeyNotFound,
    MemberExists,
    MemberNotFound,
    RoleNotAllowed,
    TaxSettingsConflict,
)
from aihub_billing.accounts.service import accounts
from aihub_billing.api.deps import BillingDep, ContextDep, Idempotent, SessionDep
from aihub_billing.api.routing import TransactionalRoute
from aihub_billing.errors import Forbidden, responses
from aihub_billing.kit.pagination import Page

router = APIRouter(prefix="/accounts", tags=["accounts"], route_class=TransactionalRoute)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Idempotent],
    responses=responses(Forbidden),
)
async def create_account(
    data: schemas.AccountCreate, session: SessionDep, ctx: ContextDep, billing: BillingDep
) -> schemas.Account:
    """Create an account (operator only)."""
    account = await accounts.create(
        session, ctx, data, default_currency=billing.config.pricing.currency
    )
    return schemas.Account.model_validate(account)


@router.get("", responses=responses())
async def list_accounts(
    session: SessionDep,
    ctx: ContextDep,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=200)] = None,
) -> Page[schemas.Account]:
    """Accounts the key can see: all for the operator, its own otherwise."""
    rows, next_cursor = await accounts.page(session, ctx, cursor=cursor, limit=limit)
    return Page(items=[schemas.Account.model_validate(a) for a in rows], next_cursor=next_cursor)


@router.get("/{account_id}", responses=responses(AccountNotFound))
async def get_account(account_id: str, session: SessionDep, ctx: ContextDep) -> schemas.Account:
    return schemas.Account.model_validate(await accounts.get(session, ctx, account_id))


@router.patch(
    "/{account_id}",
    responses=responses(AccountNotFound, RoleNotAllowed, Forbidden, TaxSettingsConflict),
)
async def update_account(
    account_id: str, data: schemas.AccountUpdate, session: SessionDep, ctx: ContextDep
) -> schemas.Account:
    """Change the fields sent: name and email (operator or the account's owner), tax_rate and
    tax_exempt (operator only; invoices generated afterwards use them). Not the currency."""
    account = await accounts.update(session, ctx, account_id, data)
    return schemas.Account.model_validate(account)


@router.post(
    "/{account_id}/members",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Idempotent],
    responses=responses(AccountNotFound, RoleNotAllowed, MemberExists),
)
async def create_member(
    account_id: str, data: schemas.MemberCreate, session: SessionDep, ctx: ContextDep
) -> schemas.Member:
    member = await accounts.add_member(session, ctx, account_id, data)
    return schemas.Member.model_validate(member)


@router.get("/{account_id}/members", responses=responses(AccountNotFound, RoleNotAllowed))
async def list_members(
    account_id: str, session: SessionDep, ctx: ContextDep
) -> list[schemas.Member]:
    return [
        schemas.Member.model_validate(m) for m in await accounts.members(session, ctx, account_id)
    ]


@router.post(
    "/{account_id}/api-keys",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Idempotent],
    responses=responses(AccountNotFound, RoleNotAllowed, MemberNotFound),
)
async def create_api_key(
    account_id: str, data: schemas.ApiKeyCreate, session: SessionDep, ctx: ContextDep
) -> schemas.ApiKeyIssued:
    """Issue a key for the account; the secret is in this response only."""
    key, secret = await accounts.issue_key(session, ctx, account_id, data)
    return schemas.ApiKeyIssued(**schemas.ApiKey.model_validate(key).model_dump(), secret=secret)


@router.get("/{account_id}/api-keys", responses=responses(AccountNotFound, RoleNotAllowed))
async def list_api_keys(
    account_id: str, session: SessionDep, ctx: ContextDep
) -> list[schemas.ApiKey]:
    return [schemas.ApiKey.model_validate(k) for k in await accounts.keys(session, ctx, account_id)]


@router.delete(
    "/{account_id}/api-keys/{key_id}",
    responses=responses(AccountNotFound, RoleNotAllowed, ApiKeyNotFound),
)
async def revoke_api_key(
    account_id: str, key_id: str, session: SessionDep, ctx: ContextDep
) -> schemas.ApiKey:
    """Revoke a key at once; requests with it are refused from now on."""
    key = await accounts.revoke_key(session, ctx, account_id, key_id)
    return schemas.ApiKey.model_validate(key)
