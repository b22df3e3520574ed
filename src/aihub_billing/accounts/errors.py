"""Errors of the accounts domain."""

from aihub_billing.errors import BillingError, Conflict, NotFound


class AccountNotFound(NotFound):
    code = "account_not_found"
    title = "Account not found"


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"
    title = "API key not found"


class MemberNotFound(NotFound):
    code = "member_not_found"
    title = "Member not found"


class MemberExists(BillingError):
    code = "member_exists"
    status = 409
    title = "A member with this email already exists in the account"


class RoleNotAllowed(BillingError):
    code = "role_not_allowed"
    status = 403
    title = "The role of this key does not allow this"


class TaxSettingsConflict(Conflict):
    code = "tax_settings_conflict"
    title = "An exempt account has no tax rate"
