"""Alembic, driven from code: each service migrates only its own database at start-up.

A service keeps its revisions in ``<package>/migrations/`` with a two-line ``env.py`` that calls
:func:`run_env`. The version table is named after the service so that two services pointed at
one database by mistake cannot trample each other's history.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

# Any constant works; it only has to be the same for every process migrating one database.
_PG_MIGRATION_LOCK = 0x0C4D_0001


def alembic_config(
    *,
    service: str,
    migrations_dir: Path,
    database_url: str,
    connect_args: dict[str, Any] | None = None,
) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["service"] = service
    config.attributes["connect_args"] = connect_args or {}
    return config


def upgrade(config: Config, revision: str = "head") -> None:
    """``alembic upgrade``; blocking, so services call it via ``asyncio.to_thread``."""
    command.upgrade(config, revision)


def run_env(metadata: MetaData | None) -> None:
    """Body of every service's ``migrations/env.py`` (online mode only: we migrate live DBs)."""
    config = context.config
    service = config.attributes.get("service") or config.get_main_option("service") or "service"
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("alembic config has no sqlalchemy.url")

    def migrate(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            # Several workers may start at once; one migrates, the others wait and find head.
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table=f"alembic_version_{service}",
            render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE on SQLite
        )
        with context.begin_transaction():
            context.run_migrations()

    async def main() -> None:
        engine = create_async_engine(
            url, poolclass=pool.NullPool, connect_args=config.attributes.get("connect_args", {})
        )
        try:
            async with engine.begin() as connection:
                await connection.run_sync(migrate)
        finally:
            await engine.dispose()

    asyncio.run(main())
