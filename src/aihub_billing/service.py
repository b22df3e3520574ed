"""BillingService: the façade the API, the CLI and the workers call.

It owns the runtime parts (config, clock, database, Redis) and composes the domain services.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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
import aihub_billing.webhooks.tasks  # noqa: F401
from aihub_billing.accounts import schemas as account_schemas
from aihub_billing.accounts.service import accounts
from aihub_billing.auth.keys import digest
from aihub_billing.auth.ratelimit import KeyRateLimit
from aihub_billing.auth.repository import ApiKeyRepository
from aihub_billing.auth.service import auth
from aihub_billing.collection.service import DunningPolicy
from aihub_billing.config import BillingConfig
from aihub_billing.invoices.service import CloseOutcome, invoices
from aihub_billing.jobs.worker import Worker
from aihub_billing.kit.clock import Clock, SystemClock
from aihub_billing.kit.context import SYSTEM, Actor, Context
from aihub_billing.kit.db import Database, open_database
from aihub_billing.models import Account, ApiKey
from aihub_billing.payments.providers.base import PaymentProcessor
from aihub_billing.payments.providers.registry import ProcessorRegistry
from aihub_billing.plans import schemas as plan_schemas
from aihub_billing.plans.service import plans
from aihub_billing.quota.engine import QuotaEngine
from aihub_billing.quota.memory_engine import MemoryQuotaEngine
from aihub_billing.quota.redis_engine import RedisQuotaEngine
from aihub_billing.quota.service import QuotaManager, StoredUsageSource
from aihub_billing.subscriptions import service as subscriptions_service
from aihub_billing.usage.service import model_prices, usage

ROOT = Path(__file__).resolve().parents[2]
log = structlog.get_logger("aihub_billing")


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
    admin_secret: str | None = None
    admin_key_from_env: bool = False
    model_prices_created: list[str] = field(default_factory=list)


class BillingService:
    def __init__(
        self, config: BillingConfig, *, clock: Clock | None = None, db: Database | None = None
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.db = db or open_database(config.database_url, config.database_replica_url)
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
        subscriptions_service.on_plan_change.append(self.limits_changed)

    def processor(self, name: str | None = None) -> PaymentProcessor:
        """The processor of provider `name` (default: the first enabled one), from config."""
        return self.processors.get(name or self.processors.default())

    async def close(self) -> None:
        with suppress(ValueError):
            subscriptions_service.on_plan_change.remove(self.limits_changed)
        await self.processors.aclose()
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
                        session, ctx, name="bootstrap (AIHUB_BILLING_ADMIN_KEY)", secret=secret
                    )
                    existing = key
                result.admin_key_id = existing.id
            else:
                admin = await keys.any_admin()
                if admin is None:
                    admin, result.admin_secret = await accounts.issue_operator_key(
                        session, ctx, name="bootstrap"
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
        cached limits (here at once, elsewhere through Redis pub/sub when configured)."""
        self.quota.invalidate(account_id)
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
                        self.quota.invalidate(message["data"].decode())
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
                await listener

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

    # Operator actions used by the CLI.

    async def create_account(self, data: account_schemas.AccountCreate) -> Account:
        async with self.transaction() as session:
            return await accounts.create(
                session, self.context(), data, default_currency=self.config.pricing.currency
            )

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
