"""The records ``Patient/$everything`` returns (FHIR R4 patient-operation-everything.html).

"The Patient resource, any resource in the patient compartment, and any resource referenced
from those": the compartment is the ``patient_key`` column of ``resources`` (set from
compartmentdefinition-patient on every write), and the referenced records added are those in
no patient's compartment (Practitioner, Organization, Location, Medication ...): a reference
to another patient's record never widens the answer to that patient.

Pages are keyset-paged in the total order (resource type, id), so a page costs the same at
any depth and records written between two pages neither repeat nor vanish (search.html#paging
leaves the links to the server). The referenced records of a page come with that page (as
``_include`` does, search.html#include), so a record several pages refer to may appear on
each of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Executable, and_, false, or_, select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel.ext.asyncio.session import AsyncSession

from health.fhir.references import reference_dicts, reference_target
from health.search.clauses import Restriction
from health.store.models import ResourceRow
from health.store.versions import Version

RESOURCES = ResourceRow.__table__  # type: ignore[attr-defined]

# Bounds (issue 5, "bad input"): a page's referenced records are looked up in chunks, and at
# most this many per page (a Synthea page of 1,000 refers to a few dozen).
_LOOKUP_CHUNK = 500
MAX_REFERENCED = 2000


@dataclass(frozen=True, slots=True)
class Everything:
    """One page request: whose compartment, which types, since when, where the page starts."""

    patient_id: str
    count: int
    # _type: only these resource types (None: every type).
    types: frozenset[str] | None = None
    # _since: only records last updated at or after this instant.
    since: datetime | None = None
    # The (resource type, id) of the previous page's last record.
    after: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Record:
    """A stored current version with its parsed JSON (access rules and references need it)."""

    version: Version
    resource: dict[str, Any]


@dataclass(slots=True)
class Page:
    matches: list[Record]
    referenced: list[Record]
    has_next: bool

    @property
    def last_key(self) -> tuple[str, str] | None:
        if not self.matches:
            return None
        last = self.matches[-1].version
        return last.resource_type, last.id


_COLUMNS = (
    RESOURCES.c.resource_type,
    RESOURCES.c.id,
    RESOURCES.c.version_id,
    RESOURCES.c.last_updated,
    RESOURCES.c.deleted,
    RESOURCES.c.content,
    RESOURCES.c.patient_key,
    RESOURCES.c.author,
)


async def page(
    session: AsyncSession,
    query: Everything,
    *,
    restrict: Restriction | None,
    may_read: Callable[[str], bool],
) -> Page:
    """One page of the compartment (at most ``query.count`` records, none when it is 0) and the
    records outside any compartment that they refer to, only what ``restrict`` lets the reader
    see. The caller narrows ``query.types`` to the types the token's scopes may read; a
    referenced record's type must pass ``may_read`` too."""
    r = RESOURCES
    conditions: list[ColumnElement[bool]] = [
        r.c.patient_key == query.patient_id,
        r.c.deleted.is_(False),
        *_common(query, restrict),
    ]
    if query.after is not None:
        after_type, after_id = query.after
        conditions.append(
            or_(
                r.c.resource_type > after_type,
                and_(r.c.resource_type == after_type, r.c.id > after_id),
            )
        )
    statement = (
        select(*_COLUMNS)
        .where(*conditions)
        .order_by(r.c.resource_type, r.c.id)
        .limit(query.count + 1)
    )
    rows = await _rows(session, statement)
    has_next = len(rows) > query.count
    matches = [_record(row) for row in rows[: query.count]]
    referenced = await _referenced(session, matches, query, restrict=restrict, may_read=may_read)
    return Page(matches, referenced, has_next)


def _common(query: Everything, restrict: Restriction | None) -> list[ColumnElement[bool]]:
    r = RESOURCES
    conditions: list[ColumnElement[bool]] = []
    if query.types is not None:
        conditions.append(r.c.resource_type.in_(sorted(query.types)) if query.types else false())
    if query.since is not None:
        conditions.append(r.c.last_updated >= query.since)
    if restrict is not None:
        conditions.append(restrict(r))
    return conditions


async def _referenced(
    session: AsyncSession,
    matches: list[Record],
    query: Everything,
    *,
    restrict: Restriction | None,
    may_read: Callable[[str], bool],
) -> list[Record]:
    shown = {(m.version.resource_type, m.version.id) for m in matches}
    wanted = sorted(
        target
        for target in _targets(m.resource for m in matches)
        if target not in shown
        and may_read(target[0])
        and (query.types is None or target[0] in query.types)
    )[:MAX_REFERENCED]
    by_type: dict[str, list[str]] = {}
    for resource_type, resource_id in wanted:
        by_type.setdefault(resource_type, []).append(resource_id)
    r = RESOURCES
    found: list[Record] = []
    for resource_type, ids in sorted(by_type.items()):
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            statement = (
                select(*_COLUMNS)
                .where(
                    r.c.resource_type == resource_type,
                    r.c.id.in_(ids[start : start + _LOOKUP_CHUNK]),
                    # Only records in no patient's compartment: "referenced" never reaches into
                    # another patient's records (or this one's outside the page's filters).
                    r.c.patient_key.is_(None),
                    r.c.deleted.is_(False),
                    *_common(query, restrict),
                )
                .order_by(r.c.id)
            )
            found.extend(_record(row) for row in await _rows(session, statement))
    return found


def _targets(resources: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    """The local records the resources refer to: relative literal references (references.html
    #literal); absolute URLs may name another server, contained (``#x``) and logical
    references name no stored record."""
    targets: set[tuple[str, str]] = set()
    for resource in resources:
        for _path, holder in reference_dicts(resource):
            reference = holder["reference"]
            if "://" in reference:
                continue
            target = reference_target(reference)
            if target is not None:
                targets.add(target)
    return targets


async def _rows(session: AsyncSession, statement: Executable) -> list[Any]:
    """A Core query's rows, on the session's connection and transaction (as health.search
    reads the same table)."""
    connection = await session.connection()
    return list(await connection.execute(statement))


def _record(row: Any) -> Record:
    version = Version(
        row.resource_type,
        row.id,
        row.version_id,
        row.last_updated,
        row.deleted,
        row.content,
        row.patient_key,
        row.author,
    )
    return Record(version, orjson.loads(row.content))
