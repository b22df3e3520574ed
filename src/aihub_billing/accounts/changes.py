"""After-commit hooks for "what governs an account's quota changed": its plan or plan version
(subscriptions), its quota override (quota), the test clock it runs on (test clocks). The
service façade registers what drops cached limits in every process.

Here, below those domains, so that each can announce a change without importing another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

log = structlog.get_logger("aihub_billing.accounts")

# Called with the account id after a commit that changed what governs its quota. Register
# with `on_limits_change.append(fn)`.
LimitsChangeHook = Callable[[str], Coroutine[Any, Any, None]]
on_limits_change: list[LimitsChangeHook] = []
# The account id that means every account: a plan version took effect (the free plan, which
# accounts without a subscription follow at once, or a plan an override names).
EVERY_ACCOUNT = "*"
_PENDING_KEY = "accounts.limits_changed"
_LISTENING_KEY = "accounts.limits_listening"
_hook_tasks: set[asyncio.Task[None]] = set()


def limits_changed(session: AsyncSession, account_id: str) -> None:
    """Runs the `on_limits_change` hooks for the account once `session` commits (never on
    rollback)."""
    sync = session.sync_session
    if not sync.info.get(_LISTENING_KEY):
        event.listen(sync, "after_commit", _fire_hooks)
        event.listen(sync, "after_rollback", _drop_pending)
        sync.info[_LISTENING_KEY] = True
    sync.info.setdefault(_PENDING_KEY, set()).add(account_id)


async def _run_hook(hook: LimitsChangeHook, account_id: str) -> None:
    try:
        await hook(account_id)
    except Exception:  # one failing hook must not hide the change from the others
        log.exception("accounts.limits_change_hook_failed", account_id=account_id)


def _fire_hooks(sync_session: Session) -> None:
    # SQLAlchemy sends after_commit on a SAVEPOINT release too: the change is not committed
    # then (another process would re-read and cache the old limits), so wait for the root.
    if sync_session.in_nested_transaction():
        return
    accounts: set[str] = sync_session.info.pop(_PENDING_KEY, set())
    if not accounts or not on_limits_change:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # pragma: no cover - the async session always commits in a loop
        return
    for account_id in sorted(accounts):
        for hook in list(on_limits_change):
            task = loop.create_task(_run_hook(hook, account_id))
            _hook_tasks.add(task)
            task.add_done_callback(_hook_tasks.discard)


def _drop_pending(sync_session: Session) -> None:
    # A SAVEPOINT rolled back (after_rollback is sent for it too) leaves the changes made
    # before it in the transaction: keep them pending.
    if sync_session.in_nested_transaction():
        return
    sync_session.info.pop(_PENDING_KEY, None)
