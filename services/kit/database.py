"""One async SQLAlchemy engine per service: SQLite under var/ by default, PostgreSQL by URL.

Only the request's session dependency commits or rolls back (one request, one unit of work);
service code flushes, never commits.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from services.kit.settings import ServiceSettings

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class Database:
    """The engine and session factory of one service's own database."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 16,
        schema: str | None = None,
        server_settings: Mapping[str, str] | None = None,
    ) -> None:
        self.url: URL = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.schema = None if self.is_sqlite else schema
        # PostgreSQL run-time parameters for every connection (``SET`` at connect).
        self.server_settings = dict(server_settings or {}) if not self.is_sqlite else {}
        # hide_parameters: a failing statement's bound values (names, phone numbers) must not
        # reach logs or exception messages. No pool_pre_ping: see _discard_closed.
        kwargs: dict[str, Any] = {"hide_parameters": True}
        if self.is_sqlite:
            # SQLite allows one writer; the busy timeout queues writers instead of failing them.
            kwargs["connect_args"] = {"timeout": 30}
        else:
            # At most 20 connections per service, so that the five services stay within
            # PostgreSQL's default max_connections (100). 16 of them stay open: the benchmarks'
            # concurrency is served from the pool, where an overflow connection is closed on its
            # return and the next one opened again (a forked PostgreSQL backend each time).
            kwargs.update(
                pool_size=pool_size, max_overflow=max(0, 20 - pool_size), pool_recycle=1800
            )
            if self.schema and not _SCHEMA_NAME.fullmatch(self.schema):
                raise ValueError(f"schema name {self.schema!r} is not a plain identifier")
            if self.schema or self.server_settings:
                kwargs["connect_args"] = self.connect_args()
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            event.listen(self.engine.sync_engine, "checkout", _discard_closed)
        self.sessionmaker = async_sessionmaker(
            self.engine, class_=AsyncSession, expire_on_commit=False
        )

    @classmethod
    def for_settings(cls, settings: ServiceSettings) -> Database:
        """The database of the service these settings belong to."""
        return cls(
            settings.resolved_database_url(),
            schema=settings.database_schema,
            server_settings=settings.postgres_server_settings,
        )

    def connect_args(self) -> dict[str, Any]:
        """Driver arguments that put a connection in this service's schema, with its settings."""
        server_settings = dict(self.server_settings)
        if self.schema:
            server_settings["search_path"] = self.schema
        return {"server_settings": server_settings} if server_settings else {}

    @property
    def display_url(self) -> str:
        """The URL with any password masked, for logs and /readyz."""
        return self.url.render_as_string(hide_password=True)

    async def ensure_exists(self) -> None:
        """Create the database itself (PostgreSQL) or its folder (SQLite) if missing."""
        if self.is_sqlite:
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            return
        await create_postgres_database(self.url)
        if self.schema:
            async with self.engine.begin() as conn:
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncSession]:
        """A session committed when the block succeeds, else rolled back (and always closed)."""
        async with self.sessionmaker() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncSession]:
        """A session for a request that only reads: its statements run without a transaction
        around them, which saves two round trips per request (BEGIN and COMMIT).

        A reader gives nothing up by it on PostgreSQL: under READ COMMITTED, its default, each
        statement of a transaction reads its own snapshot anyway (PostgreSQL docs, "Transaction
        Isolation"). A write through this session is committed statement by statement, so
        anything that writes takes :meth:`unit_of_work`."""
        async with self.engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            async with AsyncSession(bind=autocommit, expire_on_commit=False) as session:
                yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the single writer; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _discard_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Pessimistic disconnect handling without a round trip (SQLAlchemy "Dealing with
    Disconnects", custom checkout handler): a pooled connection the server has closed is
    replaced before the request gets it.

    SQLAlchemy's ``pool_pre_ping`` on asyncpg costs three round trips per checkout (BEGIN,
    ``;``, ROLLBACK), as many as a read by id itself. When PostgreSQL restarts or ends a
    backend it sends a FATAL message and closes the socket; the event loop hands that to
    asyncpg's protocol while the connection sits in the pool, and ``is_closed()`` tells. (A
    silent network partition would hang a ping as well, until its timeout.)
    """
    driver = getattr(dbapi_connection, "driver_connection", None)
    is_closed = getattr(driver, "is_closed", None)
    if is_closed is not None and is_closed():
        # The pool discards this connection and checks out another (up to three times).
        raise DisconnectionError("the server closed this pooled connection")


def _sqlstate(exc: DBAPIError) -> str | None:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return str(code) if code else None


async def create_postgres_database(url: URL) -> None:
    """CREATE DATABASE via the maintenance database, tolerating a concurrent creator."""
    name = url.database
    if not name:
        raise ValueError(
            f"database URL {url.render_as_string(hide_password=True)} names no database"
        )
    admin = create_async_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            exists = await conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            )
            if exists:
                return
            quoted = conn.dialect.identifier_preparer.quote(name)
            try:
                await conn.execute(text(f"CREATE DATABASE {quoted}"))
            except DBAPIError as exc:
                # 42P04 duplicate_database, or 23505 unique_violation on pg_database when both
                # creators passed the existence check: either way another process won the race.
                if _sqlstate(exc) not in {"42P04", "23505"}:
                    raise
    finally:
        await admin.dispose()
