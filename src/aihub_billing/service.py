"""BillingService: the façade the API, the CLI and the workers call.

It owns the runtime parts (config, clock, database, Redis) and composes the domain services.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import structlog
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

# Importing the tasks modules registers their jobs with the registry.
import aihub_billing.collection.tasks
import aihub_billing.idempotency.tasks
import aihub_billing.invoices.tasks
import aihub_billing.jobs.tasks
import aihub_billing.notifications.tasks
import aihub_billing.quota.tasks
import aihub_billing.subscriptions.tasks
import aihub_billing.usage.tasks
import aihub_billing.webhooks.tasks  # noqa: F401
from aihub_billing.accounts import schemas as account_schemas
from aihub_billing.accounts.changes import EVERY_ACCOUNT, on_limits_change
from aihub_billing.accounts.errors import AccountNotFound
from aihub_billing.accounts.service import (
    CONFIGURED_BOOTSTRAP_KEY,
    RANDOM_BOOTSTRAP_KEY,
    accounts,
)
from aihub_billing.auth.keys import digest
from aihub_billing.auth.ratelimit import KeyRateLimit
from aihub_billing.auth.repository import ApiKeyRepository
from aihub_billing.auth.service import auth
from aihub_billing.caching import (
    PLANS_TTL,
    SUBSCRIPTION_TTL,
    USAGE_STATS_TTL,
    read_through,
)
from aihub_billing.collection.service import DunningPolicy
from aihub_billing.config import BillingConfig
from aihub_billing.creditnotes import schemas as balance_schemas
from aihub_billing.creditnotes.service import credit_notes
from aihub_billing.invoices import schemas as invoice_schemas
from aihub_billing.invoices.service import CloseOutcome, invoices
from aihub_billing.jobs.repository import JobRepository
from aihub_billing.jobs.worker import Worker
from aihub_billing.kit.cache import PLANS_SCOPE, Cache, MemoryCache, RedisCache, account_scope
from aihub_billing.kit.clock import Clock, SystemClock, monotonic
from aihub_billing.kit.context import SYSTEM, Actor, Context, Role
from aihub_billing.kit.db import CACHE_INFO, Database, open_database
from aihub_billing.models import Account, ApiKey
from aihub_billing.notifications.service import notifications as outbound
from aihub_billing.payments.providers.base import PaymentProcessor
from aihub_billing.payments.providers.registry import ProcessorRegistry
from aihub_billing.plans import schemas as plan_schemas
from aihub_billing.plans.service import plans
from aihub_billing.quota import schemas as quota_schemas
from aihub_billing.quota.engine import QuotaEngine
from aihub_billing.quota.errors import QuotaUnavailable
from aihub_billing.quota.memory_engine import MemoryQuotaEngine
from aihub_billing.quota.redis_engine import RedisQuotaEngine
from aihub_billing.quota.service import QuotaManager, StoredUsageSource
from aihub_billing.subscriptions import schemas as subscription_schemas
from aihub_billing.subscriptions import service as subscriptions_service
from aihub_billing.subscriptions.service import SubscriptionMetrics, subscriptions
from aihub_billing.summary import schemas as summary_schemas
from aihub_billing.summary.service import summaries
from aihub_billing.testclocks.service import test_clocks
from aihub_billing.usage import schemas as usage_schemas
from aihub_billing.usage.grouped import GroupedTracks
from aihub_billing.usage.service import model_prices, usage

ROOT = Path(__file__).resolve().parents[2]
log = structlog.get_logger("aihub_billing")
# /metrics needs no key: its database figures are read at most this often per process, and
# a database that does not answer within the timeout leaves them out of that scrape.
METRICS_TTL_SECONDS = 5.0
METRICS_QUERY_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class DatabaseMetrics:
    """What /metrics reads from the database per scrape."""

    subscriptions: SubscriptionMetrics
    usage_not_rolled_up: int  # events the roller has not added to the daily rollups yet
    jobs_by_status: dict[str, int]
    jobs_oldest_due_seconds: float


def migrate_database(url: str, revision: str = "head") -> None:
    """Runs the Alembic migrations (synchronously: call it outside an event loop)."""
    ini = ROOT / "alembic.ini"
    if not ini.exists():
        raise FileNotFoundError(f"alembic.ini not found at {ini}; run from a source checkout")
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    cfg = AlembicConfig(str(ini))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["skip_logging_config"] = True
    command.upgrade(cfg, revision)


def redis_client(url: str, max_connections: int = 100) -> aioredis.Redis:
    """A client whose pool waits for a free connection instead of failing a burst."""
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=5)
    return aioredis.Redis(connection_pool=pool)


@dataclass
class Bootstrap:
    plans_created: list[str] = field(default_factory=list)
    admin_key_id: str | None = None
    # Set only when this start created a key whose secret nobody has seen yet.
    admin_secret: str | None = field(default=None, repr=False)
    admin_key_from_env: bool = False
    model_prices_created: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class AccountOverview:
    """One account as the operator looks at it (`aihub-billing accounts show`)."""

    account: account_schemas.Account
    plan: subscription_schemas.CurrentPlan
    quota: quota_schemas.QuotaStatus | None
    quota_error: str | None  # why `quota` is missing (the counter store is unreachable)
    usage: usage_schemas.UsageStats  # this month so far, per model
    balance: balance_schemas.AccountBalance
    invoices: list[invoice_schemas.InvoiceSummary]  # newest first


@dataclass(frozen=True, slots=True)
class QuotaRebuild:
    accounts: int
    rebuilt: int


class BillingService:
    def __init__(
        self, config: BillingConfig, *, clock: Clock | None = None, db: Database | None = None
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.db = db or open_database(
            config.database_url,
            config.database_replica_url,
            pool_size=config.database_pool_size,
        )
        self.redis: aioredis.Redis | None = (
            redis_client(config.redis_url, config.redis_max_connections)
            if config.redis_url
            else None
        )
        self.processors = ProcessorRegistry(config, self.clock)
        engine: QuotaEngine = (
            RedisQuotaEngine(self.redis, prefix=config.quota_key_prefix)
            if self.redis is not None
            else MemoryQuotaEngine()
        )
        self.quota = QuotaManager(
            engine,
            fail_mode=config.quota_fail_mode,
            thresholds=config.quota_thresholds,
            limits_ttl_seconds=config.quota_limits_cache_seconds,
            reservation_ttl_seconds=config.quota_reservation_ttl_seconds,
            usage_source=StoredUsageSource(self.db.snapshots),
        )
        # Seed TTLs: plans 24 h, subscriptions 1 h, usage statistics 15 min (caching.py).
        self.cache: Cache = (
            RedisCache(self.redis, prefix=config.quota_key_prefix)
            if self.redis is not None
            else MemoryCache()
        )
        self.db.sessions.configure(info={CACHE_INFO: self.cache})
        self.key_limit = KeyRateLimit(
            per_minute=config.api_rate_limit_per_minute,
            burst=config.api_rate_limit_burst,
            operator_per_minute=config.api_rate_limit_operator_per_minute,
            redis=self.redis,
            prefix=config.quota_key_prefix,
        )
        auth.cache_seconds = config.auth_cache_seconds
        invoices.finalize_after = timedelta(seconds=config.invoice_finalize_after_seconds)
        invoices.default_tax_rate = config.pricing.tax_rate
        invoices.store_pdfs = config.documents.store
        test_clocks.enabled = config.environment != "production"
        outbound.configure(
            allow_private_targets=config.notifications_allow_private_targets,
            secrets=config.secret_box(),
            encrypt=config.encryption_enabled,
        )
        on_limits_change.append(self.limits_changed)
        # /usage/track's events, written a group per transaction (usage/grouped.py).
        self.tracks = GroupedTracks(self.transaction, self.quota)
        self._metrics_lock = asyncio.Lock()
        self._metrics_cache: tuple[float, DatabaseMetrics] | None = None

    def processor(self, name: str | None = None) -> PaymentProcessor:
        """The processor of provider `name` (default: the first enabled one), from config."""
        return self.processors.get(name or self.processors.default())

    async def close(self) -> None:
        with suppress(ValueError):
            on_limits_change.remove(self.limits_changed)
        await self.processors.aclose()
        await self.tracks.drain()  # every event a request is waiting for, written
        try:
            await self.flush_quota_events()
        except Exception:
            log.exception("quota.flush_failed")
        await self.key_limit.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.db.dispose()

    def context(self, actor: Actor = SYSTEM, request_id: str | None = None) -> Context:
        return Context(actor=actor, clock=self.clock, request_id=request_id)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A unit of work for the CLI and jobs: commits on success, rolls back on error."""
        async with self.db.sessions() as session:
            try:
                yield session
            except BaseException:
                await session.rollback()
                raise
            await session.commit()

    async def bootstrap(self) -> Bootstrap:
        """Seeds the default plans and makes sure an operator key exists."""
        result = Bootstrap()
        ctx = self.context()
        async with self.transaction() as session:
            result.plans_created = await plans.seed_defaults(session, ctx)
            result.model_prices_created = await model_prices.seed_defaults(session, ctx)
            keys = ApiKeyRepository(session)
            configured = self.config.admin_key
            if configured is not None:
                secret = configured.get_secret_value()
                existing = await keys.by_digest(digest(secret))
                result.admin_key_from_env = True
                if existing is None:
                    key, _ = await accounts.issue_operator_key(
                        session, ctx, name=CONFIGURED_BOOTSTRAP_KEY, secret=secret
                    )
                    existing = key
                result.admin_key_id = existing.id
                # The configured key replaces the random first one and an earlier configured
                # one: rotating AIHUB_BILLING_ADMIN_KEY must end the old key.
                await accounts.retire_bootstrap_keys(session, ctx, keep_id=existing.id)
            else:
                admin = await keys.any_admin()
                if admin is None:
                    admin, result.admin_secret = await accounts.issue_operator_key(
                        session, ctx, name=RANDOM_BOOTSTRAP_KEY
                    )
                result.admin_key_id = admin.id
        return result

    async def readiness(self) -> dict[str, str]:
        """'ok' or the error per dependency; the API answers 503 unless all are ok."""
        checks: dict[str, str] = {}
        try:
            await self.db.ping()
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {type(exc).__name__}"
        if self.db.read_engine is not self.db.engine:
            try:
                async with self.db.read_engine.connect() as conn:
                    await conn.exec_driver_sql("SELECT 1")
                checks["database_replica"] = "ok"
            except Exception as exc:
                checks["database_replica"] = f"error: {type(exc).__name__}"
        if self.redis is not None:
            try:
                await self.redis.ping()
                checks["redis"] = "ok"
            except Exception as exc:
                checks["redis"] = f"error: {type(exc).__name__}"
        return checks

    async def database_metrics(self) -> DatabaseMetrics | None:
        """Open subscriptions by status, MRR per currency and the roller's backlog for
        /metrics: read on the replica (or a read-only session), cached for
        METRICS_TTL_SECONDS; None when the database does not answer."""
        async with self._metrics_lock:  # concurrent scrapes share one query
            cached = self._metrics_cache
            if cached is not None and cached[0] > monotonic():
                return cached[1]
            replica = self.db.read_engine is not self.db.engine
            sessions = self.db.read_sessions if replica else self.db.snapshots
            try:
                async with asyncio.timeout(METRICS_QUERY_TIMEOUT_SECONDS), sessions() as session:
                    now = self.clock.now()
                    jobs, oldest_due = await JobRepository(session).backlog(now)
                    figures = DatabaseMetrics(
                        subscriptions=await subscriptions.metrics(session),
                        usage_not_rolled_up=await usage.pending_rollup(session),
                        jobs_by_status=jobs,
                        jobs_oldest_due_seconds=(
                            max(0.0, (now - oldest_due).total_seconds()) if oldest_due else 0.0
                        ),
                    )
            except Exception as exc:
                log.warning("metrics.database_unavailable", error=type(exc).__name__)
                return None
            self._metrics_cache = (monotonic() + METRICS_TTL_SECONDS, figures)
            return figures

    async def flush_quota_events(self) -> int:
        """Writes the quota violations and notifications buffered by checks."""
        if not self.quota.pending:
            return 0
        async with self.transaction() as session:
            return await self.quota.flush(session, self.context())

    @property
    def _invalidation_channel(self) -> str:
        return f"{self.config.quota_key_prefix}aihub:quota:limits-changed"

    async def limits_changed(self, account_id: str) -> None:
        """After a committed change of an account's plan or override: every process drops its
        cached limits (here at once, elsewhere through Redis pub/sub when configured);
        EVERY_ACCOUNT drops them all."""
        self.quota.invalidate(None if account_id == EVERY_ACCOUNT else account_id)
        if self.redis is not None:
            try:
                await self.redis.publish(self._invalidation_channel, account_id)
            except Exception:
                log.warning("quota.invalidation_not_published", account_id=account_id)

    async def _listen_for_invalidations(self, stop: asyncio.Event) -> None:
        assert self.redis is not None
        while not stop.is_set():
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self._invalidation_channel)
                # Messages may have been missed while not subscribed.
                self.quota.invalidate()
                while not stop.is_set():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                    if message is not None:
                        changed = message["data"].decode()
                        self.quota.invalidate(None if changed == EVERY_ACCOUNT else changed)
            except Exception:
                log.warning("quota.invalidation_listener_reconnecting")
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1)
            finally:
                with suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def run_quota_background(self, stop: asyncio.Event) -> None:
        """Rebuilds lost counters at start, then flushes quota events until `stop`; listens
        for other processes' limit changes meanwhile."""
        listener = (
            asyncio.create_task(self._listen_for_invalidations(stop))
            if self.redis is not None
            else None
        )
        try:
            await self._quota_loop(stop)
        finally:
            if listener is not None:
                # Cancelled, not awaited: it would notice `stop` only at the end of its
                # 1 s wait for a message, and every shutdown would take that second.
                listener.cancel()
                await asyncio.wait([listener])

    async def _quota_loop(self, stop: asyncio.Event) -> None:
        try:
            async with self.transaction() as session:
                await self.quota.rebuild_missing(session, self.context())
        except Exception:
            log.exception("quota.startup_rebuild_failed")
        while not stop.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.quota_flush_interval_seconds)
            try:
                await self.flush_quota_events()
            except Exception:
                log.exception("quota.flush_failed")

    async def roll_up_usage(self) -> int | None:
        """One pass of the usage roller (PostgreSQL); returns the new watermark."""
        async with self.transaction() as session:
            return await usage.roll_up(session, self.context())

    async def settle_usage_rollups(self) -> None:
        """Rolls up until every committed event is in the daily rollups (benchmarks, tests,
        maintenance). The horizon is the oldest transaction running anywhere in the
        PostgreSQL cluster, so this waits for those too; callers bound it (asyncio.timeout)."""
        while True:
            await self.roll_up_usage()
            async with self.db.sessions() as session:
                if await usage.pending_rollup(session) == 0:
                    return
            await asyncio.sleep(0.02)

    async def run_usage_rollups(self, stop: asyncio.Event) -> None:
        """Rolls stored usage up every `usage_rollup_interval_seconds` until `stop`
        (PostgreSQL; any number of processes run it, one rolls at a time)."""
        if self.db.dialect != "postgresql":
            return
        while not stop.is_set():
            try:
                await self.roll_up_usage()
            except Exception:
                log.exception("usage.rollup_failed")
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.usage_rollup_interval_seconds)

    def job_settings(self) -> dict[str, Any]:
        """What job handlers get besides the session (JobRun.settings)."""
        dunning = self.config.dunning
        return {
            "idempotency_ttl_hours": self.config.idempotency_ttl_hours,
            "processors": self.processor,
            "dunning": DunningPolicy(tuple(dunning.retry_days), dunning.final_action),
            "documents": self.config.documents,
        }

    def worker(self, **options: Any) -> Worker:
        settings = self.job_settings()
        return Worker(
            self.db,
            self.clock,
            poll_interval=self.config.jobs_poll_interval_seconds,
            settings=settings,
            max_attempts=self.config.jobs_max_attempts,
            **options,
        )

    # Reads the API serves through the caches (caching.py): the caller's authorization is
    # checked before the cache is asked, a miss loads through the domain service.

    async def plan_catalog(self, session: AsyncSession) -> list[plan_schemas.Plan]:
        async def load() -> tuple[Any, float | None]:
            return [p.model_dump(mode="json") for p in await plans.catalog(session)], None

        value = await read_through(self.cache, PLANS_SCOPE, "catalog", PLANS_TTL, load)
        return [plan_schemas.Plan.model_validate(p) for p in value]

    async def plan(self, session: AsyncSession, code: str) -> plan_schemas.Plan:
        async def load() -> tuple[Any, float | None]:
            return (await plans.get(session, code)).model_dump(mode="json"), None

        value = await read_through(self.cache, PLANS_SCOPE, f"plan:{code}", PLANS_TTL, load)
        return plan_schemas.Plan.model_validate(value)

    async def current_subscription(
        self, session: AsyncSession, ctx: Context, account_id: str | None
    ) -> subscription_schemas.CurrentPlan:
        account = subscriptions_service.subscriptions.account_in_scope(ctx, account_id)

        async def load() -> tuple[Any, float | None]:
            current = await subscriptions_service.subscriptions.current(session, ctx, account)
            # True until the period ends (the test clock's time when the account has one).
            account_ctx, _ = await test_clocks.context_for(session, ctx, account)
            left = (current.period_end - account_ctx.clock.now()).total_seconds()
            return current.model_dump(mode="json"), left

        value = await read_through(
            self.cache, account_scope(account), "subscription", SUBSCRIPTION_TTL, load
        )
        return subscription_schemas.CurrentPlan.model_validate(value)

    async def usage_stats(
        self,
        session: AsyncSession,
        ctx: Context,
        *,
        account_id: str | None,
        start: date | None,
        end: date | None,
        group_by: usage_schemas.GroupBy,
    ) -> usage_schemas.UsageStats:
        account = account_id or ctx.actor.account_id or ""
        if not ctx.actor.can_access(account):
            return await usage.stats(  # raises the domain's not-found
                session, ctx, account_id=account_id, start=start, end=end, group_by=group_by
            )
        # The default range is this month (on the account's clock): named by the day it is,
        # not left open.
        clocked, _ = await test_clocks.context_for(session, ctx, account)
        today = clocked.clock.now().date()
        start = start or today.replace(day=1)
        end = end or today + timedelta(days=1)

        async def load() -> tuple[Any, float | None]:
            stats = await usage.stats(
                session, ctx, account_id=account, start=start, end=end, group_by=group_by
            )
            return stats.model_dump(mode="json"), None

        name = f"stats:{start}:{end}:{group_by}"
        value = await read_through(self.cache, account_scope(account), name, USAGE_STATS_TTL, load)
        return usage_schemas.UsageStats.model_validate(value)

    async def summary(
        self, session: AsyncSession, ctx: Context, account_id: str | None
    ) -> summary_schemas.Summary:
        """The seed's /summary with a forecast; quota figures are live (never cached)."""
        return await summaries.summary(session, ctx, account_id, self.quota)

    # Operator actions used by the CLI.

    async def create_account(self, data: account_schemas.AccountCreate) -> Account:
        async with self.transaction() as session:
            return await accounts.create(
                session, self.context(), data, default_currency=self.config.pricing.currency
            )

    async def update_account(self, account_id: str, data: account_schemas.AccountUpdate) -> Account:
        async with self.transaction() as session:
            return await accounts.update(session, self.context(), account_id, data)

    async def issue_api_key(
        self, *, account_id: str | None, role: str, name: str | None = None
    ) -> tuple[ApiKey, str]:
        async with self.transaction() as session:
            if account_id is None:
                if role != "admin":
                    raise ValueError("keys other than admin keys need an account")
                return await accounts.issue_operator_key(session, self.context(), name=name)
            if role == "admin":
                raise ValueError("admin keys are not bound to an account")
            data = account_schemas.ApiKeyCreate.model_validate({"role": role, "name": name})
            return await accounts.issue_key(session, self.context(), account_id, data)

    def check_close_at(self, at: datetime | None) -> None:
        """InvalidRequest when `at` is in the future (the CLI asks before its header)."""
        invoices.check_close_at(self.context(), at)

    async def close_period(
        self,
        *,
        account_id: str | None = None,
        at: datetime | None = None,
        batch_size: int = 50,
        on_batch: Callable[[CloseOutcome, int], None] | None = None,
    ) -> CloseOutcome:
        """Period close for every due subscription (the CLI's `close-period`): the same
        service function as POST /invoices/generate, a transaction per batch of subscriptions
        so a crash keeps what was committed and a rerun finds it."""
        self.check_close_at(at)
        async with self.db.sessions() as session:
            ids = await invoices.closable(session, account_id)
            if account_id is not None and not ids:
                await invoices.close_period(session, self.context(), account_id=account_id)
        total = CloseOutcome()
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            async with self.transaction() as session:
                done = await invoices.close_period(
                    session, self.context(), at=at, subscription_ids=chunk
                )
            total.add(done)
            if on_batch is not None:
                on_batch(done, len(ids))
        return total

    async def list_plans(self) -> list[plan_schemas.Plan]:
        async with self.db.sessions() as session:
            return await plans.catalog(session)

    async def account(self, account_id: str) -> account_schemas.Account:
        """The account, or AccountNotFound."""
        async with self.db.sessions() as session:
            found = await accounts.get(session, self.context(), account_id)
            return account_schemas.Account.model_validate(found)

    async def known_accounts(self, account_ids: Iterable[str]) -> set[str]:
        """Those of `account_ids` that exist."""
        known = set()
        async with self.db.sessions() as session:
            for account_id in set(account_ids):
                try:
                    await accounts.get(session, self.context(), account_id)
                except AccountNotFound:
                    continue
                known.add(account_id)
        return known

    async def account_overview(self, account_id: str, *, recent: int = 5) -> AccountOverview:
        """The account, its plan and period, quota counters, this month's usage per model,
        its balance and its `recent` newest invoices, each from its domain's service."""
        ctx = self.context()
        async with self.db.sessions() as session:
            account = await accounts.get(session, ctx, account_id)
            plan = await subscriptions_service.subscriptions.current(session, ctx, account_id)
            quota: quota_schemas.QuotaStatus | None = None
            quota_error = None
            try:
                quota = await self.quota.status(session, ctx, account_id)
            except QuotaUnavailable as exc:  # counters unreachable: show the rest anyway
                quota_error = f"{exc.code}: {exc.detail}"
            stats = await usage.stats(
                session, ctx, account_id=account_id, start=None, end=None, group_by="model"
            )
            balance = await credit_notes.account_balance(session, ctx, account_id)
            latest, _ = await invoices.page(session, ctx, account_id=account_id, limit=recent)
        return AccountOverview(
            account=account_schemas.Account.model_validate(account),
            plan=plan,
            quota=quota,
            quota_error=quota_error,
            usage=stats,
            balance=balance,
            invoices=latest,
        )

    async def list_invoices(
        self, *, account_id: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[invoice_schemas.InvoiceSummary]:
        """Up to `limit` invoices, newest first, walking the API's keyset pages."""
        ctx = self.context()
        found: list[invoice_schemas.InvoiceSummary] = []
        cursor = None
        async with self.db.sessions() as session:
            if account_id is not None:
                await accounts.get(session, ctx, account_id)  # unknown: AccountNotFound
            while len(found) < limit:
                page, cursor = await invoices.page(
                    session,
                    ctx,
                    account_id=account_id,
                    status=status,
                    cursor=cursor,
                    limit=limit - len(found),
                )
                found += page
                if cursor is None:
                    break
        return found

    async def record_usage(
        self, groups: Sequence[tuple[str, Sequence[dict[str, Any]]]]
    ) -> list[usage_schemas.UsageBatchResult]:
        """Records each (account id, events) group as POST /usage/batch would for a key of that
        account (validated one by one, counted once per event id), all groups in one
        transaction; one result per group.

        The quota counters are not fed here: without Redis they live in each server's
        memory, out of this process's reach. With Redis, rebuild the accounts' counters from
        the stored usage afterwards (rebuild_quota), which counts each call in its period."""
        results = []
        async with self.transaction() as session:
            for account_id, events in groups:
                ctx = self.context(Actor(role=Role.SYSTEM, account_id=account_id))
                results.append(await usage.record(session, ctx, events))
        return results

    async def rebuild_quota(
        self,
        *,
        account_ids: Sequence[str] | None = None,
        on_start: Callable[[int], None] | None = None,
        on_account: Callable[[str, bool], None] | None = None,
    ) -> QuotaRebuild:
        """Sets the live quota counters of the given accounts (default: every active one) to
        the usage stored in their current period; live reservations stay counted.
        `on_start(total)` comes first, then `on_account(account_id, rebuilt)` after each one.

        A call recorded while its account is rebuilt can be missed (counted in the counters
        before its transaction commits, overwritten by a rebuild that read before the commit):
        the next rebuild counts it."""
        ctx = self.context()
        async with self.db.sessions() as session:
            if account_ids is None:
                total = await self.quota.active_accounts(session)
                if on_start is not None:
                    on_start(total)
                done = 0

                def step(account_id: str, rebuilt: bool) -> None:
                    nonlocal done
                    done += 1
                    if on_account is not None:
                        on_account(account_id, rebuilt)

                rebuilt = await self.quota.rebuild_accounts(session, ctx, on_account=step)
                return QuotaRebuild(done, rebuilt)
            if on_start is not None:
                on_start(len(account_ids))
            rebuilt = 0
            for account_id in account_ids:
                written = await self.quota.rebuild(session, ctx, account_id, force=True)
                rebuilt += written
                if on_account is not None:
                    on_account(account_id, written)
            return QuotaRebuild(len(account_ids), rebuilt)
