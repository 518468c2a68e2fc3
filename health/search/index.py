"""Keep the search index in step with the resources, in the writer's own transaction.

FHIR R4 search.html: a search sees the current version of each resource. The store calls
:func:`reindex` (or :func:`reindex_many` for a whole Bundle) inside the transaction that writes
the resource, so the index never disagrees with what a read returns: a failed write leaves
neither. Rows are written in bulk, one INSERT per table per call (executemany), because a
Synthea bundle is thousands of resources.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, delete, insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel.ext.asyncio.session import AsyncSession

from health.consent_index import reindex_consents
from health.search.definitions import TABLE_PARAMS, definitions
from health.search.models import TABLES
from health.search.values import Row, rows_for

# Ids per DELETE ... IN (...): well under SQLite's and asyncpg's bound-parameter limits.
_DELETE_CHUNK = 500
# From this many rows for one table, PostgreSQL gets them by COPY rather than INSERT.
_COPY_MIN_ROWS = 100


@dataclass(frozen=True, slots=True)
class Indexed:
    """One resource to (re)index; ``resource`` None removes its rows (a delete)."""

    resource_type: str
    resource_id: str
    resource: dict[str, Any] | None
    patient_key: str | None


async def reindex(
    session: AsyncSession,
    *,
    resource_type: str,
    resource_id: str,
    resource: dict[str, Any] | None,
    patient_key: str | None,
) -> None:
    """Replace the index rows of one resource (none when ``resource`` is None)."""
    await reindex_many(
        session, [Indexed(resource_type, resource_id, resource, patient_key)], fresh=False
    )


async def reindex_many(
    session: AsyncSession, items: Sequence[Indexed], *, fresh: bool = False
) -> None:
    """Replace the index rows of many resources at once.

    ``fresh`` says every resource is new in this transaction (a create with a server-assigned
    id), so there are no old rows to delete.
    """
    # Core statements on the session's own connection (and transaction): no ORM objects.
    connection = await session.connection()
    if not fresh:
        await _delete_rows(connection, items)
    rows = index_rows(items)
    for kind, table_rows in rows.items():
        if table_rows:
            await _insert(connection, TABLES[kind], table_rows)
    await reindex_consents(
        connection,
        (
            (item.resource_id, item.resource, item.patient_key)
            for item in items
            if item.resource_type == "Consent"
        ),
        fresh=fresh,
    )


async def _insert(connection: AsyncConnection, table: Table, rows: list[Row]) -> None:
    if connection.dialect.name == "postgresql" and len(rows) >= _COPY_MIN_ROWS:
        # PostgreSQL's COPY (through asyncpg, on this transaction's connection) loads a
        # Bundle's thousands of rows several times faster than multi-row INSERTs.
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        columns = [column.name for column in table.columns]
        await driver.copy_records_to_table(
            table.name, records=[tuple(row[c] for c in columns) for row in rows], columns=columns
        )
        return
    await connection.execute(_INSERTS[table.name], rows[0] if len(rows) == 1 else rows)


# Built once (each write used to build and compile-key its INSERT anew).
_INSERTS = {table.name: insert(table) for table in TABLES.values()}


def index_rows(items: Iterable[Indexed]) -> dict[str, list[Row]]:
    """The rows to insert, per parameter type, for ``items``."""
    defs = definitions()
    rows: dict[str, list[Row]] = defaultdict(list)
    for item in items:
        if item.resource is None:
            continue
        for param in defs.params(item.resource_type).values():
            if param.name in TABLE_PARAMS or not param.may_apply(item.resource):
                continue
            identity = {
                "resource_type": item.resource_type,
                "resource_id": item.resource_id,
                "param": param.name,
                "patient_key": item.patient_key,
            }
            seen: set[tuple[Any, ...]] = set()
            for row in rows_for(param, item.resource):
                key = tuple(row.values())
                if key in seen:  # the same value twice (e.g. code | component.code) is one row
                    continue
                seen.add(key)
                rows[param.type].append({**identity, **row})
    return rows


async def _delete_rows(connection: AsyncConnection, items: Sequence[Indexed]) -> None:
    ids_by_type: dict[str, list[str]] = defaultdict(list)
    for item in items:
        ids_by_type[item.resource_type].append(item.resource_id)
    for resource_type, ids in ids_by_type.items():
        for start in range(0, len(ids), _DELETE_CHUNK):
            chunk = ids[start : start + _DELETE_CHUNK]
            for table in TABLES.values():
                await connection.execute(
                    delete(table).where(
                        table.c.resource_type == resource_type,
                        table.c.resource_id.in_(chunk)
                        if len(chunk) > 1
                        else table.c.resource_id == chunk[0],
                    )
                )
