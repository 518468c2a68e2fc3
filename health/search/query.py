"""Run a FHIR search: parameters to one SQL query, a page of matches, its includes and total.

FHIR R4 search.html. Filters become conditions on the resources table (``clauses``); the
result parameters (``_sort``, ``_count``, ``_include``, ...) shape the page. Every query is
bounded: ``_count`` is capped at :data:`MAX_COUNT`, chains and ``_has`` at
``clauses.MAX_CHAIN_DEPTH`` levels, ``_include``/``_revinclude`` at :data:`MAX_INCLUDED`
resources per page and ``:iterate`` at :data:`MAX_ITERATE` rounds, so that no request can make
the server work without end.

Results come in a total order (the sort keys, then id). A one-type search pages by keyset:
the ``next`` link's cursor holds the last match's sort key, so a page neither repeats nor
skips a match when resources are written between requests (``cursor``). A several-type
(``_type``) search pages by offset over the union, stable while the data stay as they are.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Executable,
    Select,
    and_,
    false,
    func,
    or_,
    select,
    union_all,
)
from sqlmodel.ext.asyncio.session import AsyncSession

from health.search.citizen_index import citizen_column
from health.search.clauses import (
    MAX_VALUES,
    RESOURCES,
    Context,
    Restriction,
    bad,
    equals,
    parameter_condition,
    selectivity,
    split_values,
)
from health.search.cursor import decode_cursor
from health.search.definitions import definitions
from health.search.models import TABLES, reference_index
from health.search.pinning import pinned_patient
from services.kit.errors import Problem

DEFAULT_COUNT = 20
MAX_COUNT = 1000
MAX_OFFSET = 100_000
MAX_INCLUDED = 1000
MAX_ITERATE = 3
MAX_PARAMETERS = 60
# _total=estimate counts at most this many matches; beyond it no total is given.
ESTIMATE_CAP = 10_000

# Result parameters (search.html#return); _format and _pretty are answered by the routes.
RESULT_PARAMS = frozenset(
    {
        "_sort",
        "_count",
        "_offset",
        "_cursor",
        "_include",
        "_revinclude",
        "_summary",
        "_elements",
        "_total",
        "_totalMethod",
        "_type",
        "_format",
        "_pretty",
    }
)
_UNSUPPORTED = frozenset({"_text", "_content", "_list", "_query", "_filter", "_contained"})
_SORT_AGGREGATES = {
    "date": ("start", "end"),
    "string": ("normalized", "normalized"),
    "token": ("code", "code"),
    "number": ("low", "high"),
    "quantity": ("low", "high"),
    "reference": ("target_id", "target_id"),
    "uri": ("uri", "uri"),
}
_SUMMARY = {"true", "false", "text", "data", "count"}
_TOTAL = {"none", "estimate", "accurate"}


@dataclass(frozen=True, slots=True)
class Include:
    """``_include`` / ``_revinclude`` = source type : parameter (or ``*``) [: target type]."""

    source: str
    param: str
    target: str | None
    iterate: bool
    reverse: bool


@dataclass(slots=True)
class SearchSpec:
    """A parsed search request."""

    resource_types: list[str]
    conditions: dict[str, list[ColumnElement[bool]]]
    sort: list[tuple[str, bool]] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    offset: int = 0
    total: str | None = None
    includes: list[Include] = field(default_factory=list)
    summary: str | None = None
    elements: list[str] | None = None
    warnings: list[str] = field(default_factory=list)
    # The query as understood (unknown parameters left out under lenient handling).
    echo: list[tuple[str, str]] = field(default_factory=list)
    # Keyset paging: the sort key of the last resource of the previous page (see cursor.py).
    after: list[Any] | None = None
    # Which types may be returned as includes (the caller's read permission); None: all.
    may_include: Callable[[str], bool] | None = None


@dataclass(frozen=True, slots=True)
class Found:
    resource_type: str
    id: str
    content: str
    # The Patient whose compartment it is in, as stored with it (health.fhir.compartment),
    # and that Patient's citizen, if it is linked to one (for the audit entry).
    patient_key: str | None = None
    citizen: str | None = None


@dataclass(slots=True)
class SearchResult:
    spec: SearchSpec
    matches: list[Found]
    included: list[Found]
    total: int | None
    has_next: bool
    # The sort key of the page's last match (for the next page's cursor), when keyset-paged.
    last_key: list[Any] | None = None


def _integer(name: str, text: str, *, maximum: int) -> int:
    try:
        number = int(text)
    except ValueError:
        raise bad(name, f"{text!r} is not a whole number") from None
    if number < 0:
        raise bad(name, "must not be negative")
    return min(number, maximum)


def _is_known(resource_type: str, key: str) -> bool:
    if key.startswith("_has:"):
        return True
    name = key.partition(".")[0].partition(":")[0]
    return name in ("_id", "_lastUpdated") or name in definitions().params(resource_type)


def parse(
    resource_types: Sequence[str],
    params: Sequence[tuple[str, str]],
    *,
    context: Context,
    lenient: bool = False,
) -> SearchSpec:
    """Read the query; Problem 400 naming the first unknown or malformed parameter (unknown
    ones are dropped with a warning under ``Prefer: handling=lenient``, search.html#errors)."""
    if len(params) > MAX_PARAMETERS:
        raise Problem(400, f"a search takes at most {MAX_PARAMETERS} parameters")
    spec = SearchSpec(list(resource_types), {t: [] for t in resource_types})
    filters: list[tuple[str, str]] = []
    for key, value in params:
        if "\x00" in key or "\x00" in value:
            # No database text holds NUL (PostgreSQL refuses it), and no FHIR string has one.
            raise bad(key.replace("\x00", ""), "contains a NUL character")
        name = key.partition(":")[0]
        if name in RESULT_PARAMS:
            _result_parameter(spec, key, value)
            if name not in ("_offset", "_cursor", "_format", "_pretty"):
                spec.echo.append((key, value))
            continue
        unknown = name in _UNSUPPORTED or not all(_is_known(t, key) for t in resource_types)
        if unknown:
            message = (
                f"search parameter {key!r} is not supported"
                if name in _UNSUPPORTED
                else f"unknown search parameter {key!r} for {' or '.join(resource_types)}"
            )
            if lenient:
                spec.warnings.append(message + " (ignored: Prefer handling=lenient)")
                continue
            raise Problem(400, message + " (see the CapabilityStatement)", parameter=key)
        filters.append((key, value))
        spec.echo.append((key, value))
    for resource_type in resource_types:
        patient = pinned_patient(resource_type, filters)
        of_type = context if patient is None else replace(context, pinned=(resource_type, patient))
        # The most selective condition drives the query; the others are probed per candidate.
        ordered = sorted(filters, key=lambda kv: selectivity(resource_type, kv[0]))
        for position, (key, value) in enumerate(ordered):
            condition = parameter_condition(resource_type, key, value, of_type, probe=position > 0)
            if condition is not None:
                spec.conditions[resource_type].append(condition)
    return spec


def _result_parameter(spec: SearchSpec, key: str, value: str) -> None:
    name, _, modifier = key.partition(":")
    if name in ("_format", "_pretty", "_type"):
        return  # answered by the routes
    if name in ("_include", "_revinclude"):
        if modifier not in ("", "iterate", "recurse"):
            raise bad(key, f"modifier :{modifier} is not supported (use :iterate)")
        for item in split_values(value)[:MAX_VALUES]:
            spec.includes.append(
                _parse_include(key, item, reverse=name == "_revinclude", iterate=bool(modifier))
            )
        return
    _SETTERS[name](spec, key, value)


def _set_count(spec: SearchSpec, key: str, value: str) -> None:
    spec.count = _integer(key, value, maximum=MAX_COUNT)  # capped, not refused (search.html)


def _set_offset(spec: SearchSpec, key: str, value: str) -> None:
    spec.offset = _integer(key, value, maximum=MAX_OFFSET + 1)
    if spec.offset > MAX_OFFSET:
        raise bad(key, f"pages beyond the first {MAX_OFFSET} matches are not served")


def _set_cursor(spec: SearchSpec, key: str, value: str) -> None:
    offset, after = decode_cursor(value)
    if len(spec.resource_types) > 1 and offset > MAX_OFFSET:
        raise bad(key, f"pages beyond the first {MAX_OFFSET} matches are not served")
    # The offset only numbers the page (keyset paging does not skip rows to find it).
    spec.offset, spec.after = offset, after


def _set_total(spec: SearchSpec, key: str, value: str) -> None:
    if value not in _TOTAL:
        raise bad(key, "takes none, estimate or accurate")
    spec.total = value


# Aidbox's name for _total, sent by fhirpy's SearchSet.count() (``_count=0&_totalMethod=count``):
# understood rather than refused so that the client works unmodified; "count" is an exact
# count (FHIR R4 search.html#total "accurate"), "estimate" the same as ours.
_TOTAL_METHODS = {"count": "accurate", "estimate": "estimate"}


def _set_total_method(spec: SearchSpec, key: str, value: str) -> None:
    if value not in _TOTAL_METHODS:
        raise bad(key, "takes count or estimate (or use _total)")
    spec.total = _TOTAL_METHODS[value]


def _set_summary(spec: SearchSpec, key: str, value: str) -> None:
    if value not in _SUMMARY:
        raise bad(key, "takes true, false, text, data or count")
    spec.summary = None if value == "false" else value


def _set_elements(spec: SearchSpec, key: str, value: str) -> None:
    spec.elements = [e.strip() for e in value.split(",") if e.strip()]


def _set_sort(spec: SearchSpec, key: str, value: str) -> None:
    spec.sort = _parse_sort(spec.resource_types, key, value)


_SETTERS = {
    "_count": _set_count,
    "_offset": _set_offset,
    "_cursor": _set_cursor,
    "_total": _set_total,
    "_totalMethod": _set_total_method,
    "_summary": _set_summary,
    "_elements": _set_elements,
    "_sort": _set_sort,
}


def _parse_sort(resource_types: Sequence[str], key: str, value: str) -> list[tuple[str, bool]]:
    keys = []
    for item in value.split(","):
        descending = item.startswith("-")
        name = item.lstrip("-").strip()
        if not name:
            continue
        for resource_type in resource_types:
            param = definitions().params(resource_type).get(name)
            table_param = name in ("_id", "_lastUpdated")
            if len(resource_types) > 1 and not table_param:
                raise bad(key, "searching several types sorts by _id or _lastUpdated only")
            if not table_param and (param is None or param.type not in _SORT_AGGREGATES):
                raise bad(key, f"cannot sort {resource_type} by {name!r}")
        keys.append((name, descending))
    if len(keys) > 5:
        raise bad(key, "at most 5 sort keys")
    return keys


def _parse_include(key: str, value: str, *, reverse: bool, iterate: bool) -> Include:
    parts = value.split(":")
    if value == "*" and not reverse:
        return Include("*", "*", None, iterate, reverse)
    if len(parts) not in (2, 3):
        raise bad(key, f"{value!r} is not SourceType:parameter[:TargetType]")
    source, param = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    defs = definitions()
    if source not in defs.resource_types:
        raise bad(key, f"{source!r} is not a resource type")
    if param != "*":
        definition = defs.params(source).get(param)
        if definition is None or definition.type != "reference":
            raise bad(key, f"{param!r} is not a reference parameter of {source}")
    if target is not None and target not in defs.resource_types:
        raise bad(key, f"{target!r} is not a resource type")
    return Include(source, param, target, iterate, reverse)


# --- Running it -------------------------------------------------------------------------------


async def _rows(session: AsyncSession, query: Executable) -> list[tuple[Any, ...]]:
    """A Core query's rows, in the session's transaction, after its pending ORM writes are
    flushed (a conditional create searches what the same transaction wrote before)."""
    await session.flush()
    connection = await session.connection()
    return [tuple(row) for row in await connection.execute(query)]


def _sort_column(r: Any, resource_type: str, name: str, descending: bool) -> Any:
    if name == "_id":
        return r.c.id
    if name == "_lastUpdated":
        return r.c.last_updated
    param = definitions().params(resource_type)[name]
    table = TABLES[param.type].alias()
    ascending_column, descending_column = _SORT_AGGREGATES[param.type]
    # search.html#sort: a resource with several values sorts by its lowest going up and by
    # its highest going down.
    value = (
        func.max(table.c[descending_column]) if descending else func.min(table.c[ascending_column])
    )
    return (
        select(value)
        .where(
            table.c.resource_type == r.c.resource_type,
            table.c.resource_id == r.c.id,
            table.c.param == name,
        )
        .scalar_subquery()
    )


_NOT_DELETED = RESOURCES.c.deleted == false()


def _matching(
    spec: SearchSpec, resource_type: str, restrict: Restriction | None, *, columns: Sequence[Any]
) -> Select[Any]:
    r = RESOURCES
    query = select(*columns).where(
        equals(r.c.resource_type, resource_type),
        _NOT_DELETED,
        *spec.conditions[resource_type],
    )
    if restrict is not None:
        query = query.where(restrict(r))
    return query


def _page_query(spec: SearchSpec, restrict: Restriction | None) -> Select[Any]:
    """The page's rows, in a total order: the ids are sorted and cut to the page on narrow
    rows first, and only the page's contents are then read (a sort of thousands of matches
    never carries their JSON)."""
    r = RESOURCES
    limit, offset = spec.count + 1, spec.offset
    if len(spec.resource_types) == 1:
        resource_type = spec.resource_types[0]
        keys = [
            _sort_column(r, resource_type, name, descending).label(f"s{index}")
            for index, (name, descending) in enumerate(spec.sort)
        ]
        matching = _matching(spec, resource_type, restrict, columns=[r.c.id, *keys])
        if spec.after is not None:
            # Keyset paging: the resources after the previous page's last one, in the same
            # total order, so a write between two pages neither repeats nor skips a match.
            matching = matching.where(_after(r, resource_type, spec.sort, spec.after))
        else:
            matching = matching.offset(offset)
        ids = matching.order_by(*_directions(keys, spec.sort), r.c.id).limit(limit).subquery()
        page_keys = [ids.c[f"s{index}"] for index in range(len(keys))]
        return (
            select(
                r.c.resource_type,
                r.c.id,
                r.c.content,
                r.c.patient_key,
                citizen_column(r),
                *page_keys,
            )
            .join(ids, and_(equals(r.c.resource_type, resource_type), r.c.id == ids.c.id))
            .order_by(*_directions(page_keys, spec.sort), ids.c.id)
        )
    # Several types: a union, sorted by the table columns only (checked by _parse_sort).
    parts = [
        _matching(spec, t, restrict, columns=[r.c.resource_type, r.c.id, r.c.last_updated])
        for t in spec.resource_types
    ]
    union = union_all(*parts).subquery()
    columns = [union.c.id if name == "_id" else union.c.last_updated for name, _ in spec.sort]
    ids = (
        select(union.c.resource_type, union.c.id, union.c.last_updated)
        .order_by(*_directions(columns, spec.sort), union.c.resource_type, union.c.id)
        .limit(limit)
        .offset(offset)
        .subquery()
    )
    page_columns = [ids.c.id if name == "_id" else ids.c.last_updated for name, _ in spec.sort]
    return (
        select(r.c.resource_type, r.c.id, r.c.content, r.c.patient_key, citizen_column(r))
        .join(ids, and_(r.c.resource_type == ids.c.resource_type, r.c.id == ids.c.id))
        .order_by(*_directions(page_columns, spec.sort), ids.c.resource_type, ids.c.id)
    )


def _after(
    r: Any, resource_type: str, sort: Sequence[tuple[str, bool]], key: Sequence[Any]
) -> ColumnElement[bool]:
    """Rows strictly after ``key`` (sort values..., id) in the order of ``_directions``."""
    if len(key) != len(sort) + 1 or not all(
        _fits(resource_type, name, value) for (name, _), value in zip(sort, key, strict=False)
    ):
        raise bad("_cursor", "does not belong to this search (its sort differs)")
    equal_so_far: list[ColumnElement[bool]] = []
    alternatives: list[ColumnElement[bool]] = []
    for (name, descending), value in zip(sort, key, strict=False):
        column = _sort_column(r, resource_type, name, descending)
        if value is None:
            # Missing values sort last: nothing but other missing values follows one.
            equal_so_far.append(column.is_(None))
            continue
        later = column < value if descending else column > value
        alternatives.append(and_(*equal_so_far, or_(later, column.is_(None))))
        equal_so_far.append(column == value)
    alternatives.append(and_(*equal_so_far, r.c.id > key[-1]))
    return or_(*alternatives)


def _fits(resource_type: str, name: str, value: Any) -> bool:
    """Whether a cursor's sort value has the type of the sort key it stands for."""
    if value is None:
        return True
    kind = "date" if name == "_lastUpdated" else "token"
    if name not in ("_id", "_lastUpdated"):
        kind = definitions().params(resource_type)[name].type
    if kind == "date":
        return isinstance(value, datetime)
    if kind in ("number", "quantity"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, str)


def _directions(columns: Sequence[Any], sort: Sequence[tuple[str, bool]]) -> list[Any]:
    # Resources without a value sort last either way (search.html#sort leaves it open).
    return [
        column.desc().nulls_last() if descending else column.asc().nulls_last()
        for column, (_, descending) in zip(columns, sort, strict=True)
    ]


async def count(
    session: AsyncSession, spec: SearchSpec, restrict: Restriction | None, *, cap: int | None
) -> int | None:
    """How many resources match (None when more than ``cap``)."""
    r = RESOURCES
    total = 0
    for resource_type in spec.resource_types:
        query = _matching(spec, resource_type, restrict, columns=[r.c.id])
        if cap is not None:
            query = query.limit(cap + 1)
        counted = select(func.count()).select_from(query.subquery())
        total += int((await _rows(session, counted))[0][0])
    if cap is not None and total > cap:
        return None
    return total


async def run(
    session: AsyncSession, spec: SearchSpec, *, restrict: Restriction | None = None
) -> SearchResult:
    """One page of matches with its includes and, as asked, the total."""
    matches: list[Found] = []
    has_next = False
    last_key: list[Any] | None = None
    wants_page = spec.count > 0 and spec.summary != "count"
    if wants_page:
        rows = await _rows(session, _page_query(spec, restrict))
        has_next = len(rows) > spec.count
        page = rows[: spec.count]
        matches = [Found(*row[:5]) for row in page]
        if page and len(spec.resource_types) == 1:
            last_key = [*page[-1][5:], page[-1][1]]
    total: int | None = None
    if spec.total == "accurate" or (not wants_page and spec.total is None):
        total = await count(session, spec, restrict, cap=None)
    elif spec.total == "estimate":
        total = await count(session, spec, restrict, cap=ESTIMATE_CAP)
    elif spec.total is None and wants_page and not has_next and (matches or spec.offset == 0):
        total = spec.offset + len(matches)  # the last page: the total is known for free
    included = await _includes(session, spec, matches, restrict) if spec.includes else []
    return SearchResult(spec, matches, included, total, has_next, last_key)


async def _includes(
    session: AsyncSession, spec: SearchSpec, matches: list[Found], restrict: Restriction | None
) -> list[Found]:
    seen = {(m.resource_type, m.id) for m in matches}
    included: list[Found] = []
    current: list[Found] = matches
    for round_number in range(MAX_ITERATE + 1):
        specs = [i for i in spec.includes if round_number == 0 or i.iterate]
        if not specs or not current:
            break
        wanted: dict[str, set[str]] = defaultdict(set)
        for include in specs:
            for resource_type, resource_id in await _follow(session, include, current):
                if (resource_type, resource_id) not in seen:
                    wanted[resource_type].add(resource_id)
        refused = sorted(t for t in wanted if spec.may_include and not spec.may_include(t))
        for resource_type in refused:
            del wanted[resource_type]
            spec.warnings.append(
                f"included {resource_type} resources are left out: the token may not read them"
            )
        fetched = await fetch(session, wanted, restrict)
        room = MAX_INCLUDED - len(included)
        if len(fetched) > room:
            spec.warnings.append(
                f"only the first {MAX_INCLUDED} included resources are returned with a page"
            )
            fetched = fetched[:room]
        seen.update((f.resource_type, f.id) for f in fetched)
        included.extend(fetched)
        current = fetched
        if len(included) >= MAX_INCLUDED:
            break
    else:
        if any(i.iterate for i in spec.includes) and current:
            spec.warnings.append(f"_include:iterate stopped after {MAX_ITERATE} rounds")
    return included


async def _follow(
    session: AsyncSession, include: Include, sources: Sequence[Found]
) -> list[tuple[str, str]]:
    ref = reference_index
    by_type: dict[str, list[str]] = defaultdict(list)
    for found in sources:
        by_type[found.resource_type].append(found.id)
    pairs: list[tuple[str, str]] = []
    for resource_type, ids in by_type.items():
        for chunk in _chunks(ids):
            if include.reverse:
                if include.target is not None and include.target != resource_type:
                    continue
                query = select(ref.c.resource_type, ref.c.resource_id).where(
                    ref.c.resource_type == include.source,
                    ref.c.param == include.param,
                    ref.c.target_type == resource_type,
                    ref.c.target_id.in_(chunk),
                )
            else:
                if include.source not in ("*", resource_type):
                    continue
                query = select(ref.c.target_type, ref.c.target_id).where(
                    ref.c.resource_type == resource_type,
                    ref.c.resource_id.in_(chunk),
                    ref.c.target_id.is_not(None),
                )
                if include.param != "*":
                    query = query.where(ref.c.param == include.param)
                if include.target is not None:
                    query = query.where(ref.c.target_type == include.target)
            rows = await _rows(session, query.limit(MAX_INCLUDED * 2))
            pairs.extend((row[0], row[1]) for row in rows)
    return pairs


def _chunks(ids: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


async def fetch(
    session: AsyncSession, wanted: dict[str, set[str]], restrict: Restriction | None
) -> list[Found]:
    """The current, undeleted resources named in ``wanted`` that ``restrict`` allows."""
    r = RESOURCES
    found: list[Found] = []
    for resource_type in sorted(wanted):
        for chunk in _chunks(sorted(wanted[resource_type])):
            query = select(
                r.c.resource_type, r.c.id, r.c.content, r.c.patient_key, citizen_column(r)
            ).where(r.c.resource_type == resource_type, r.c.id.in_(chunk), r.c.deleted == false())
            if restrict is not None:
                query = query.where(restrict(r))
            rows = await _rows(session, query.order_by(r.c.id))
            found.extend(Found(*row) for row in rows)
    return found


async def search(
    session: AsyncSession,
    resource_types: Sequence[str],
    params: Sequence[tuple[str, str]],
    *,
    base_url: str | None = None,
    restrict: Restriction | None = None,
    lenient: bool = False,
    may_include: Callable[[str], bool] | None = None,
    may_search: Callable[[str], bool] | None = None,
) -> SearchResult:
    """Search ``resource_types`` (one type, or several for a system-level ``_type`` search).

    ``may_include`` says which types may come back through ``_include`` / ``_revinclude``
    (the others are left out with a warning): a token that may search Observations but not
    read Patients must not get Patients by ``_include=Observation:subject``. ``may_search``
    likewise says which types chains and ``_has`` may filter on (403 otherwise).
    """
    defs = definitions()
    for resource_type in resource_types:
        if resource_type not in defs.resource_types:
            raise Problem(404, f"{resource_type!r} is not a FHIR R4 resource type")
    context = Context(base_url=base_url, restrict=restrict, may_search=may_search)
    spec = parse(resource_types, params, context=context, lenient=lenient)
    spec.may_include = may_include
    return await run(session, spec, restrict=restrict)


async def find_ids(
    session: AsyncSession,
    resource_type: str,
    params: list[tuple[str, str]],
    *,
    limit: int,
    restrict: Restriction | None = None,
    base_url: str | None = None,
) -> list[str]:
    """Ids of the current, undeleted ``resource_type`` resources matching ``params`` (at most
    ``limit``, in id order): conditional create, update and delete (FHIR R4 http.html#cond-update).
    Problem 400 naming the parameter when one is unknown or malformed."""
    if resource_type not in definitions().resource_types:
        raise Problem(400, f"{resource_type!r} is not a FHIR R4 resource type")
    filters = [(k, v) for k, v in params if k.partition(":")[0] not in RESULT_PARAMS]
    context = Context(base_url=base_url, restrict=restrict)
    spec = parse([resource_type], filters, context=context)
    r = RESOURCES
    query = _matching(spec, resource_type, restrict, columns=[r.c.id]).order_by(r.c.id)
    rows = await _rows(session, query.limit(limit))
    return [row[0] for row in rows]
