"""Async engines and session factories for SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import SessionTransaction

from aihub_billing.kit.cache import Cache, touched

# The database cannot be reached: stopped, restarting, refusing or dropping connections.
# SQLAlchemy wraps most of it in OperationalError; asyncpg raises the rest as they are.
UNREACHABLE: tuple[type[Exception], ...] = (
    OperationalError,
    ConnectionError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
)

CACHE_INFO = "cache"
log = structlog.get_logger("aihub_billing.db")


# What a hot path hands to a read that happens only on a cache miss: the caller's session,
# or a factory, so that a hit constructs no session at all.
SessionSource = AsyncSession | async_sessionmaker[AsyncSession]


@asynccontextmanager
async def session_of(source: SessionSource) -> AsyncIterator[AsyncSession]:
    """`source` itself, or a new session of the factory, closed afterwards."""
    if isinstance(source, async_sessionmaker):
        async with source() as session:
            yield session
    else:
        yield source


# -- work after the commit, or after its failure -----------------------------------------

_PENDING = "aihub_billing.on_transaction_end"
# (the transaction or savepoint current when registered, True: run on its commit / False:
# run unless it commits, the callable)
Pending = list[tuple[SessionTransaction, bool, Callable[[], None]]]


def on_commit(session: AsyncSession, fn: Callable[[], None]) -> None:
    """Calls `fn()` once the session's outermost transaction commits; never if it, or the
    savepoint that was current, rolls back. With no transaction open, at once."""
    if not _register(session, True, fn):  # nothing to wait for
        fn()


def unless_committed(session: AsyncSession, fn: Callable[[], None]) -> None:
    """Calls `fn()` when the session's transaction (or the savepoint that is current) ends
    without its work committed: rolled back, closed, or its commit failed; never once the
    outermost transaction committed. With no transaction open, never. A commit whose
    acknowledgement was lost calls it too, so `fn` must be right either way."""
    _register(session, False, fn)


def _register(session: AsyncSession, on_commit: bool, fn: Callable[[], None]) -> bool:
    sync = session.sync_session
    transaction = sync.get_nested_transaction() or sync.get_transaction()
    if transaction is None:
        return False
    pending: Pending = sync.info.setdefault(_PENDING, [])
    pending.append((transaction, on_commit, fn))
    return True


# Registered once on the Session class: a transaction that registered nothing costs a dict
# lookup.
@event.listens_for(OrmSession, "after_commit")
def _committed(session: OrmSession) -> None:
    if session.in_nested_transaction():  # a savepoint released: its work waits for the end
        return
    for _, on_commit, fn in session.info.pop(_PENDING, None) or ():
        if on_commit:
            fn()


@event.listens_for(OrmSession, "after_soft_rollback")
def _rolled_back(session: OrmSession, previous: SessionTransaction) -> None:
    pending: Pending | None = session.info.get(_PENDING)
    if not pending:
        return
    undone = [p for p in pending if _within(p[0], previous)]
    if undone:
        pending[:] = [p for p in pending if not _within(p[0], previous)]
        for _, on_commit, fn in undone:
            if not on_commit:
                fn()


@event.listens_for(OrmSession, "after_transaction_end")
def _ended(session: OrmSession, transaction: SessionTransaction) -> None:
    # The outermost transaction ended and its commit (which empties the list) never came.
    if transaction.parent is None:
        for _, on_commit, fn in session.info.pop(_PENDING, None) or ():
            if not on_commit:
                fn()


def _within(transaction: SessionTransaction | None, ended: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ended:
            return True
        transaction = transaction.parent
    return False


class Session(AsyncSession):
    """An AsyncSession that, once its commit is through, moves on the generations of the
    cache scopes its writes touched (kit/cache.py) before the caller goes on."""

    async def commit(self) -> None:
        await super().commit()
        scopes = touched(self)
        cache: Cache | None = self.info.get(CACHE_INFO)
        if scopes and cache is not None:
            try:
                await cache.invalidate(scopes)
            except Exception as exc:  # the write stands; the cache retries before its next use
                log.warning(
                    "cache.invalidation_failed", scopes=sorted(scopes), error=type(exc).__name__
                )

    async def rollback(self) -> None:
        touched(self)
        await super().rollback()


def _sqlite_engine(url: str, echo: bool, *, immediate: bool = True) -> AsyncEngine:
    engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30})

    # The driver's own transaction handling defers BEGIN and breaks SAVEPOINT; take it over
    # and start every transaction IMMEDIATE so a read-then-write never fails to upgrade.
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Read-only snapshots begin deferred: in WAL mode they never wait for a writer.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


# Connections per process and engine, opened as needed and then kept.
DEFAULT_POOL_SIZE = 30
# The read-snapshot engine's (see Database.snapshots): reads beside a transaction.
SNAPSHOT_POOL_SIZE = 10


def create_engine(
    url: str, *, echo: bool = False, pool_size: int = DEFAULT_POOL_SIZE
) -> AsyncEngine:
    if make_url(url).get_backend_name() == "sqlite":
        return _sqlite_engine(url, echo)
    # No overflow: the pool closes an overflow connection as soon as it comes back, so any
    # load above the pool size opened and closed connections by the dozen per second (with
    # a TLS handshake, a server process and every statement prepared again, each), a
    # quarter of a core at 50 concurrent /usage/track requests. The same ceiling, all kept.
    # No pre-ping: it costs a round trip on every checkout. A dead connection fails its
    # statement instead (answered 503, retryable) and the pool drops it; recycling keeps
    # connections younger than typical server and proxy idle timeouts.
    return create_async_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=0, pool_recycle=1800
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: responses are rendered from objects after the commit.
    return async_sessionmaker(engine, class_=Session, expire_on_commit=False, autoflush=False)


@dataclass
class Database:
    """The primary engine and, when configured, a read replica for read-only queries."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    read_engine: AsyncEngine
    read_sessions: async_sessionmaker[AsyncSession]
    # Read-only sessions on the primary that never wait for (nor block) a writer: for reads
    # made while the caller's own transaction may hold SQLite's write lock.
    snapshot_engine: AsyncEngine
    snapshots: async_sessionmaker[AsyncSession]

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()
        if self.snapshot_engine is not self.engine:
            await self.snapshot_engine.dispose()


def open_database(
    url: str,
    replica_url: str | None = None,
    *,
    echo: bool = False,
    pool_size: int = DEFAULT_POOL_SIZE,
) -> Database:
    engine = create_engine(url, echo=echo, pool_size=pool_size)
    read_engine = (
        create_engine(replica_url, echo=echo, pool_size=pool_size) if replica_url else engine
    )
    # A pool of its own, so a request holding a primary connection never waits on a pool it
    # exhausts itself (N requests each waiting for a second connection).
    parsed = make_url(url)
    snapshot_engine = engine
    if parsed.get_backend_name() != "sqlite":
        snapshot_engine = create_engine(url, echo=echo, pool_size=SNAPSHOT_POOL_SIZE)
    elif parsed.database not in (None, "", ":memory:"):
        snapshot_engine = _sqlite_engine(url, echo, immediate=False)
    return Database(
        engine,
        session_factory(engine),
        read_engine,
        session_factory(read_engine),
        snapshot_engine,
        session_factory(snapshot_engine),
    )
