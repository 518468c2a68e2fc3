"""The only place that queries the store's tables (``resources``, ``resource_versions``)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, func, literal, tuple_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from health.search.citizen_index import citizen_column
from health.store.models import ResourceRow, ResourceVersionRow
from services.kit.sqltypes import UtcDateTime

# asyncpg and SQLite both allow well over this many bound parameters per statement; rows of
# nine columns in chunks of 500 stay far below either limit.
_INSERT_CHUNK = 500


def is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def lock(session: AsyncSession, keys: Sequence[str]) -> None:
    """Serialize writers on ``keys`` until this transaction ends (commit or rollback).

    PostgreSQL: transaction-scoped advisory locks, taken in sorted order so two transactions
    needing several keys cannot deadlock. SQLite has one writer at a time: a no-op UPDATE takes
    the database's write lock (the statement starts the write transaction whether or not a row
    matches), so whatever this transaction reads next is read as it is now, not before another
    writer's commit, and no other writer can slip in before we commit.
    """
    if not is_postgres(session):
        await session.exec(
            update(ResourceRow)
            .where(col(ResourceRow.resource_type) == "", col(ResourceRow.id) == "")
            .values(version_id=col(ResourceRow.version_id))
        )
        return
    for key in sorted(set(keys)):
        await session.exec(select(func.pg_advisory_xact_lock(advisory_key(key))))


def advisory_key(key: str) -> int:
    """A signed 64-bit advisory lock key for a string (PostgreSQL's bigint)."""
    digest = hashlib.sha256(b"onecard.health:" + key.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


_RESOURCES = ResourceRow.__table__  # type: ignore[attr-defined]
# Built once: every read by id runs it, and building a statement (and loading an ORM object
# from its row) cost more CPU than running it. A Core row reads like the model (row.deleted).
_CURRENT = select(*_RESOURCES.c).where(
    _RESOURCES.c.resource_type == bindparam("resource_type"),
    _RESOURCES.c.id == bindparam("resource_id"),
)


async def current(
    session: AsyncSession, *, resource_type: str, resource_id: str
) -> Row[Any] | None:
    """The current version of a resource (deleted or not), read fresh from the database
    (a Core row: never an identity-map copy from earlier in the session)."""
    connection = await session.connection()
    result = await connection.execute(
        _CURRENT, {"resource_type": resource_type, "resource_id": resource_id}
    )
    return result.first()


# The current row and, beside it as ``citizen``, the citizen of the Patient whose compartment
# it is in (health.search.citizen_index): a read by id is audited under that citizen, and
# asking for both at once saves the read a second round trip to the database.
_CURRENT_WITH_CITIZEN = _CURRENT.add_columns(citizen_column(_RESOURCES))


async def current_with_citizen(
    session: AsyncSession, *, resource_type: str, resource_id: str
) -> Row[Any] | None:
    """:func:`current`, with its patient's citizen (None: in no patient's compartment, or
    that Patient is linked to no citizen, or is not stored, or deleted)."""
    connection = await session.connection()
    result = await connection.execute(
        _CURRENT_WITH_CITIZEN, {"resource_type": resource_type, "resource_id": resource_id}
    )
    return result.first()


async def version(
    session: AsyncSession, *, resource_type: str, resource_id: str, version_id: int
) -> ResourceVersionRow | None:
    result = await session.exec(
        select(ResourceVersionRow).where(
            col(ResourceVersionRow.resource_type) == resource_type,
            col(ResourceVersionRow.id) == resource_id,
            col(ResourceVersionRow.version_id) == version_id,
        )
    )
    return result.first()


async def current_many(
    session: AsyncSession, *, resource_type: str, resource_ids: Sequence[str]
) -> list[ResourceRow]:
    if not resource_ids:
        return []
    result = await session.exec(
        select(ResourceRow).where(
            col(ResourceRow.resource_type) == resource_type,
            col(ResourceRow.id).in_(list(resource_ids)),
        )
    )
    return list(result.all())


# Core INSERTs on the table, built once: the ORM's bulk insert of the same rows (through
# session.exec) cost about a tenth of a create's CPU in its persistence machinery, for rows
# that are plain dicts already and never enter the session's identity map either way.
_INSERT_CURRENT = ResourceRow.__table__.insert()  # type: ignore[attr-defined]
_INSERT_VERSION = ResourceVersionRow.__table__.insert()  # type: ignore[attr-defined]


async def insert_current(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert the first current row of new resources (one executemany per chunk)."""
    await _insert(session, _INSERT_CURRENT, rows)


async def replace_current(session: AsyncSession, row: dict[str, Any]) -> None:
    """Make ``row`` the current version of an existing resource."""
    await session.exec(
        update(ResourceRow)
        .where(
            col(ResourceRow.resource_type) == row["resource_type"],
            col(ResourceRow.id) == row["id"],
        )
        .values(
            version_id=row["version_id"],
            last_updated=row["last_updated"],
            deleted=row["deleted"],
            patient_key=row["patient_key"],
            author=row["author"],
            content=row["content"],
        )
    )


async def insert_versions(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await _insert(session, _INSERT_VERSION, rows)


async def _insert(session: AsyncSession, statement: Any, rows: Sequence[dict[str, Any]]) -> None:
    # In the session's transaction, after what the session itself has pending.
    await session.flush()
    connection = await session.connection()
    for start in range(0, len(rows), _INSERT_CHUNK):
        chunk = rows[start : start + _INSERT_CHUNK]
        await connection.execute(statement, chunk[0] if len(chunk) == 1 else list(chunk))


async def history(
    session: AsyncSession,
    *,
    resource_type: str | None,
    resource_id: str | None,
    since: datetime | None,
    after: tuple[datetime, str, str, int] | None,
    limit: int,
    author: str | None = None,
) -> list[ResourceVersionRow]:
    """Versions newest first (FHIR R4 http.html#history), resuming after the key ``after``.

    The order (last_updated, type, id, version) descending is total, so a page resumes exactly
    where the previous one stopped however many versions are written meanwhile (those are
    newer than the cursor, so they never slip into later pages).
    """
    v = ResourceVersionRow
    query = select(v)
    if resource_type is not None:
        query = query.where(col(v.resource_type) == resource_type)
    if resource_id is not None:
        query = query.where(col(v.id) == resource_id)
    if since is not None:
        query = query.where(col(v.last_updated) >= since)
    if author is not None:
        query = query.where(col(v.author) == author)
    key = tuple_(col(v.last_updated), col(v.resource_type), col(v.id), col(v.version_id))
    if after is not None:
        query = query.where(
            key
            < tuple_(
                literal(after[0], type_=UtcDateTime),
                literal(after[1]),
                literal(after[2]),
                literal(after[3]),
            )
        )
    query = query.order_by(
        col(v.last_updated).desc(),
        col(v.resource_type).desc(),
        col(v.id).desc(),
        col(v.version_id).desc(),
    ).limit(limit)
    result = await session.exec(query)
    return list(result.all())
