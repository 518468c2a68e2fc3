"""One search parameter's values as one SQL condition on the resources table (search.html).

The query's most selective condition is ``resources.id IN (SELECT resource_id FROM <index
table> WHERE ...)``: both SQLite and PostgreSQL drive the query from that index table's value
index and look the candidates up by primary key. Every other condition is a correlated
``EXISTS`` on the index table's (type, resource, parameter) index, checked per candidate
(``probe``), so a common code or a wide date range never has to be listed in full. This is
what keeps a patient + code + date search on a million resources at a few milliseconds.
Values of one parameter separated by commas are ORed inside one subquery; repeated
parameters are ANDed by the caller.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, ClassVar

from sqlalchemy import ColumnElement, Select, Table, and_, exists, false, not_, or_, select, true

from health.search.definitions import SearchParam, definitions
from health.search.models import CODE_MAX, TABLES, URI_MAX, reference_index
from health.search.pinning import pinned_patient
from health.search.values import date_range, normalize, number_range, parse_reference
from health.store.models import ResourceRow
from services.kit.errors import Problem

RESOURCES = ResourceRow.__table__  # type: ignore[attr-defined]

# A restriction the caller adds to every resource the search touches, matches, chain targets
# and includes alike (e.g. "only these patients' compartments"): one WHERE clause on an alias
# of the resources table.
Restriction = Callable[[Any], ColumnElement[bool]]

# Bounds (issue 5, "bad input"): a chain or _has nests one subquery per level.
MAX_CHAIN_DEPTH = 3
MAX_VALUES = 100

# Upper end of a starts-with range: every string beginning with the prefix sorts below
# prefix + U+10FFFF bytewise (UTF-8 order is code point order).
_TOP = "\U0010ffff"
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{1,63}")


# Aliases kept per table: more than any reasonable search uses at once.
_POOLED_ALIASES = 32


class Aliases:
    """The table aliases of one search's statements, handed out in order from a pool the
    process keeps.

    Every condition needs an alias of its own within a statement (two conditions on the token
    table are two joins), and building an alias's column collection cost more CPU than the
    rest of the condition. An alias is an immutable construct: the statements of many searches
    may share one, so the pool holds as many per table as the largest search used at once
    (up to a bound).
    """

    _pool: ClassVar[dict[str, list[Any]]] = {}

    def __init__(self) -> None:
        self._used: dict[str, int] = {}

    def of(self, table: Table) -> Any:
        """An alias of ``table`` no other condition of this search has."""
        n = self._used.get(table.name, 0)
        self._used[table.name] = n + 1
        if n >= _POOLED_ALIASES:
            return table.alias()  # a search of many parameters: built for it alone
        pool = self._pool.setdefault(table.name, [])
        while len(pool) <= n:
            alias = table.alias()
            alias.c  # noqa: B018 - builds the column collection now, once
            pool.append(alias)
        return pool[n]


@dataclass(frozen=True, slots=True)
class Context:
    """What every condition needs: the base URL (for absolute references), the restriction,
    and which other types the caller may search through chains and ``_has`` (None: all)."""

    base_url: str | None = None
    restrict: Restriction | None = None
    may_search: Callable[[str], bool] | None = None
    # (resource type, Patient id) when the search of that type is pinned to one patient
    # (health.search.pinning): its token and date conditions then read only that patient's
    # index rows. Never applied inside a chain or _has (another alias, another type).
    pinned: tuple[str, str] | None = None
    # Shared by copies of the context (dataclasses.replace): one search, one set of aliases.
    aliases: Aliases = field(default_factory=Aliases)

    def check_search(self, key: str, resource_type: str) -> None:
        """403 when a chain or _has would filter on a type the caller may not search: the
        answer would tell what those resources hold."""
        if self.may_search is not None and not self.may_search(resource_type):
            raise Problem(
                403,
                f"search parameter {key!r} searches {resource_type}, which the token's scopes "
                f"do not allow (needs {resource_type}.s)",
                parameter=key,
            )


def bad(parameter: str, message: str) -> Problem:
    """400 naming the parameter (FHIR R4 search.html#errors)."""
    return Problem(400, f"search parameter {parameter!r}: {message}", parameter=parameter)


def split_values(raw: str) -> list[str]:
    """Comma-separated alternatives; ``\\,`` is a literal comma (search.html#escaping).

    Other escapes (``\\|``, ``\\$``, ``\\\\``) are kept for the value's own syntax to read.
    """
    values: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(raw):
        char = raw[index]
        if char == "\\" and index + 1 < len(raw):
            following = raw[index + 1]
            current.append(following if following == "," else char + following)
            index += 2
            continue
        if char == ",":
            values.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    values.append("".join(current))
    return values


def unescape(value: str) -> str:
    """A value with its remaining escapes (``\\|``, ``\\$``, ``\\\\``) resolved."""
    return re.sub(r"\\([\\|$,])", r"\1", value)


def _split_unescaped(value: str, separator: str) -> list[str]:
    """Split on ``separator`` unless preceded by a backslash (``\\|``, ``\\$``)."""
    parts = re.split(r"(?<!\\)" + re.escape(separator), value)
    return [p.replace("\\" + separator, separator) for p in parts]


# The DSTU1 comparators, still what fhirclient's {"$gt": ...} search structures send: read as
# the R4 prefixes (search.html#prefix), as HAPI FHIR does; no date, number or quantity starts
# with "<" or ">", so nothing else could be meant.
_LEGACY_PREFIXES = (">=", "ge"), ("<=", "le"), (">", "gt"), ("<", "lt")


def _prefix(value: str) -> tuple[str, str]:
    for legacy, prefix in _LEGACY_PREFIXES:
        if value.startswith(legacy) and len(value) > len(legacy):
            return prefix, value[len(legacy) :]
    if len(value) > 2 and value[:2] in _PREFIXES and not value[2].isalpha():
        return value[:2], value[2:]
    return "eq", value


def _in_index(
    table: Any, resource_type: str, param: str, condition: ColumnElement[bool] | None
) -> Select[Any]:
    where = [*_of_param(table, resource_type, param)]
    if condition is not None:
        where.append(condition)
    return select(table.c.resource_id).where(*where)


# Conditions that take few values (a type, a parameter's name) on the process's own tables and
# pooled aliases, built once each: an SQL expression is immutable, so every statement may share
# one, and building them was a good part of a search's CPU. Bounded, in case of odd queries.
@lru_cache(maxsize=8192)
def _of_param(table: Any, resource_type: str, param: str) -> tuple[ColumnElement[bool], ...]:
    """An index table's rows of one parameter of one resource type."""
    return (table.c.resource_type == resource_type, table.c.param == param)


@lru_cache(maxsize=4096)
def equals(column: Any, value: Any) -> ColumnElement[bool]:
    """``column == value``, built once per column and value (see _of_param)."""
    return column == value  # type: ignore[no-any-return]


# --- Values of each parameter type, as conditions on that type's index table ----------------


def string_condition(t: Any, name: str, modifier: str | None, value: str) -> ColumnElement[bool]:
    value = unescape(value)
    if modifier == "exact":
        return and_(t.c.normalized == normalize(value), t.c.value == value)
    needle = normalize(value)
    if not needle:
        raise bad(name, "a string value must have a letter or digit")
    if modifier == "contains":
        escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return t.c.normalized.like(f"%{escaped}%", escape="\\")  # type: ignore[no-any-return]
    if modifier is not None:
        raise bad(
            name, f"modifier :{modifier} is not supported on a string (use :exact, :contains)"
        )
    # The index keeps the first TEXT_MAX characters; a longer prefix is cut the same way.
    return and_(t.c.normalized >= needle, t.c.normalized < needle + _TOP)


def token_condition(
    t: Any,
    name: str,
    modifier: str | None,
    value: str,
    *,
    columns: tuple[str, str] = ("system", "code"),
) -> ColumnElement[bool]:
    system_column, code_column = (t.c[columns[0]], t.c[columns[1]])
    if modifier == "text":
        needle = normalize(value)
        return and_(t.c.text >= needle, t.c.text < needle + _TOP)
    if modifier not in (None, "not"):
        raise bad(name, f"modifier :{modifier} is not supported on a token (use :not, :text)")
    parts = _split_unescaped(value, "|")
    if len(parts) == 1:
        return code_column == parts[0][:CODE_MAX]  # type: ignore[no-any-return]
    if len(parts) != 2:
        raise bad(name, f"{value!r} is not [system]|[code]")
    system, code = parts[0][:URI_MAX], parts[1][:CODE_MAX]
    if not system:  # |code: a code without a system
        return and_(system_column.is_(None), code_column == code)
    if not code:  # system|: any code of the system
        return system_column == system  # type: ignore[no-any-return]
    return and_(system_column == system, code_column == code)


def _contained(low: Any, high: Any, column_low: Any, column_high: Any) -> ColumnElement[bool]:
    return and_(column_low >= low, column_high <= high)


# FHIR R4 search.html#prefix on ranges, one builder per prefix: only the prefix's own condition
# is built (each SQL expression costs microseconds, on every search).
_RANGE_PREFIXES: dict[str, Callable[[Any, Any, Any, Any], ColumnElement[bool]]] = {
    "eq": _contained,
    "ne": lambda low, high, cl, ch: not_(_contained(low, high, cl, ch)),
    # the range above (below) the search value intersects the target's range
    "gt": lambda low, high, cl, ch: ch > high,
    "lt": lambda low, high, cl, ch: cl < low,
    "ge": lambda low, high, cl, ch: or_(ch > high, _contained(low, high, cl, ch)),
    "le": lambda low, high, cl, ch: or_(cl < low, _contained(low, high, cl, ch)),
    # starts after / ends before: no overlap at all
    "sa": lambda low, high, cl, ch: cl > high,
    "eb": lambda low, high, cl, ch: ch < low,
}


def range_condition(
    prefix: str, low: Any, high: Any, column_low: Any, column_high: Any
) -> ColumnElement[bool]:
    """The search range [low, high] against the target's [column_low, column_high] (both
    inclusive), as ``prefix`` compares them."""
    return _RANGE_PREFIXES[prefix](low, high, column_low, column_high)


def date_condition(name: str, value: str, column_low: Any, column_high: Any) -> ColumnElement[bool]:
    prefix, text = _prefix(value)
    found = date_range(text)
    if found is None:
        raise bad(name, f"{value!r} is not a date, dateTime or instant (with an optional prefix)")
    low, high = found
    if prefix == "ap":
        # "approximately": 10% of the distance from now, at least a day (search.html#prefix).
        now = datetime.now(UTC)
        gap = max(abs(now - low) / 10, timedelta(days=1))
        low, high = low - gap, high + gap
        return and_(column_low <= high, column_high >= low)
    return range_condition(prefix, low, high, column_low, column_high)


def number_condition(
    name: str, prefix: str, text: str, column_low: Any, column_high: Any
) -> ColumnElement[bool]:
    found = number_range(text)
    if found is None:
        raise bad(name, f"{text!r} is not a number")
    number, low, high = found
    return _NUMBER_PREFIXES[prefix](number, low, high, column_low, column_high)


def _within(low: Any, high: Any, column_low: Any, column_high: Any) -> ColumnElement[bool]:
    return and_(column_low >= low, column_high < high)


# eq: within the precision of the value as written (search.html#number); ap: within 10%. One
# builder per prefix, as for ranges.
_NUMBER_PREFIXES: dict[str, Callable[[Any, Any, Any, Any, Any], ColumnElement[bool]]] = {
    "eq": lambda number, low, high, cl, ch: _within(low, high, cl, ch),
    "ne": lambda number, low, high, cl, ch: not_(_within(low, high, cl, ch)),
    "gt": lambda number, low, high, cl, ch: ch > number,
    "sa": lambda number, low, high, cl, ch: ch > number,
    "lt": lambda number, low, high, cl, ch: cl < number,
    "eb": lambda number, low, high, cl, ch: cl < number,
    "ge": lambda number, low, high, cl, ch: ch >= number,
    "le": lambda number, low, high, cl, ch: cl <= number,
    "ap": lambda number, low, high, cl, ch: and_(
        cl <= number + abs(number) / 10, ch >= number - abs(number) / 10
    ),
}


def quantity_condition(
    t: Any, name: str, value: str, *, columns: tuple[str, str, str, str, str | None]
) -> ColumnElement[bool]:
    """``[prefix]number|system|code``; ``number||code`` matches the code or the unit. No unit
    conversion: 1 g does not match 1000 mg (UCUM canonicalisation is not implemented)."""
    low_column, high_column, system_column, code_column, unit_column = columns
    parts = _split_unescaped(value, "|")
    if len(parts) not in (1, 3):
        raise bad(name, f"{value!r} is not [prefix]number|system|code")
    prefix, number = _prefix(parts[0])
    conditions = [number_condition(name, prefix, number, t.c[low_column], t.c[high_column])]
    if len(parts) == 3:
        system, code = parts[1], parts[2]
        if system:
            conditions.append(t.c[system_column] == system)
        if code:
            if unit_column is None:
                conditions.append(t.c[code_column] == code)
            else:
                conditions.append(or_(t.c[code_column] == code, t.c[unit_column] == code))
    return and_(*conditions)


def reference_condition(
    t: Any, name: str, param: SearchParam, modifier: str | None, value: str, context: Context
) -> ColumnElement[bool]:
    value = unescape(value)
    target_type = None
    if modifier is not None:
        if modifier == "identifier" or not _TYPE_NAME.fullmatch(modifier):
            raise bad(name, f"modifier :{modifier} is not supported on a reference")
        target_type = modifier
    base = (context.base_url or "").rstrip("/")
    if base and value.startswith(base + "/"):
        value = value[len(base) + 1 :]  # our own absolute URL is a local reference
    if "://" in value or value.startswith("urn:"):
        return t.c.url == value[:URI_MAX]  # type: ignore[no-any-return]
    if "/" in value:
        parsed_type, parsed_id = parse_reference(value)
        if parsed_type is None or parsed_id is None:
            raise bad(name, f"{value!r} is not Type/id, an id or an absolute URL")
        if target_type is not None and target_type != parsed_type:
            return false()
        return and_(t.c.target_type == parsed_type, t.c.target_id == parsed_id)
    if target_type is not None:
        return and_(t.c.target_type == target_type, t.c.target_id == value)
    return t.c.target_id == value  # type: ignore[no-any-return]


def uri_condition(t: Any, name: str, modifier: str | None, value: str) -> ColumnElement[bool]:
    value = unescape(value)
    if modifier == "below":
        return and_(t.c.uri >= value, t.c.uri < value + _TOP)
    if modifier is not None:
        raise bad(name, f"modifier :{modifier} is not supported on a uri (use :below)")
    return t.c.uri == value[:URI_MAX]  # type: ignore[no-any-return]


def composite_condition(t: Any, name: str, param: SearchParam, value: str) -> ColumnElement[bool]:
    parts = _split_unescaped(value, "$")
    if len(parts) != 2:
        raise bad(name, f"{value!r} is not [code]$[value] (a composite of two components)")
    first = token_condition(t, name, None, parts[0], columns=("c1_system", "c1_code"))
    kind = param.components[1].type
    second: ColumnElement[bool]
    if kind == "token":
        second = token_condition(t, name, None, parts[1], columns=("c2_system", "c2_code"))
    elif kind == "quantity":
        # The composite keeps the code, or the unit when there is no code, in c2_code.
        second = quantity_condition(
            t, name, parts[1], columns=("c2_low", "c2_high", "c2_system", "c2_code", None)
        )
    elif kind == "date":
        second = date_condition(name, parts[1], t.c.c2_start, t.c.c2_end)
    elif kind == "string":
        needle = normalize(parts[1])
        second = and_(t.c.c2_text >= needle, t.c.c2_text < needle + _TOP)
    else:
        raise bad(name, f"composites of {kind} are not supported")
    return and_(first, second)


# --- Whole parameters -------------------------------------------------------------------------


def parameter_condition(
    resource_type: str,
    key: str,
    raw_value: str,
    context: Context,
    *,
    depth: int = 0,
    r: Any = RESOURCES,
    probe: bool = False,
) -> ColumnElement[bool] | None:
    """The condition for one ``key=value`` pair of the query on resources alias ``r``; None
    when the value is empty (ignored, search.html#errors). Problem 400 naming the parameter
    when it is unknown or malformed.

    ``probe`` words an index condition as a correlated EXISTS on the index's resource key
    instead of ``id IN (...)``: the query should be driven by its most selective condition
    (``id IN``, a list the database walks) and only check the others per candidate, which
    SQLite does only when told so; PostgreSQL plans both forms as semi-joins.
    """
    if raw_value == "":
        return None
    values = split_values(raw_value)
    if len(values) > MAX_VALUES:
        raise bad(key, f"more than {MAX_VALUES} alternatives")
    if key.startswith("_has:"):
        return _has_condition(resource_type, key, raw_value, context, depth=depth, r=r)
    name, _, chain = key.partition(".")
    name, _, modifier_text = name.partition(":")
    modifier = modifier_text or None
    if name == "_id":
        return _id_condition(key, modifier, values, r)  # type: ignore[no-any-return]
    if name == "_lastUpdated" and not chain:
        if modifier is not None:
            raise bad(key, f"modifier :{modifier} is not supported on _lastUpdated")
        return or_(*[date_condition(key, v, r.c.last_updated, r.c.last_updated) for v in values])
    param = definitions().params(resource_type).get(name)
    if param is None:
        raise Problem(
            400,
            f"unknown search parameter {name!r} for {resource_type} (FHIR R4 definitions of "
            f"this server; see the CapabilityStatement)",
            parameter=key,
        )
    if chain:
        return _chain_condition(resource_type, param, modifier, chain, raw_value, context, depth, r)
    return _indexed_condition(resource_type, key, param, modifier, values, context, r, probe)


# How selective a parameter usually is, most first: the first condition of a query drives it.
_SELECTIVITY = {
    "_id": 0,
    "reference": 1,
    "token": 2,
    "string": 3,
    "uri": 3,
    "composite": 4,
    "quantity": 5,
    "number": 5,
    "date": 6,
    "_lastUpdated": 7,
}


def selectivity(resource_type: str, key: str) -> int:
    """A rank of how few resources ``key`` likely matches (lower: fewer), for ordering."""
    if key.startswith("_has:"):
        return 4
    name, _, chain = key.partition(".")
    name, _, modifier = name.partition(":")
    if modifier in ("not", "missing", "contains", "text"):
        return 9  # negations and scans never drive
    if name in _SELECTIVITY:
        return _SELECTIVITY[name]
    param = definitions().params(resource_type).get(name)
    if param is None:
        return 9
    return 3 if chain else _SELECTIVITY.get(param.type, 8)


def _indexed_condition(
    resource_type: str,
    key: str,
    param: SearchParam,
    modifier: str | None,
    values: list[str],
    context: Context,
    r: Any,
    probe: bool,
) -> ColumnElement[bool] | None:
    table = TABLES[param.type]
    if modifier == "missing":
        if values not in (["true"], ["false"]):
            raise bad(key, ":missing takes true or false")
        present: ColumnElement[bool] = r.c.id.in_(
            _in_index(context.aliases.of(table), resource_type, param.name, None)
        )
        return not_(present) if values == ["true"] else present
    patient = _pinned_patient(context, resource_type, r)
    if (
        patient is not None
        and len(values) == 1
        and pinned_patient(resource_type, [(key, values[0])]) == patient
    ):
        # The parameter that pins the search (health.search.pinning): its matches are
        # exactly the resources whose patient_key is that patient, a column of the resources
        # table itself (ix_resources_patient_key), so the reference index is not joined. One
        # relation fewer for PostgreSQL to plan and run on every pinned search.
        return r.c.patient_key == patient  # type: ignore[no-any-return]
    t = context.aliases.of(table)
    alternatives = [
        _value_condition(t, key, param, modifier, value, context) for value in values if value
    ]
    if not alternatives:
        return None
    return _matching_rows(
        resource_type, key, param, modifier, t, or_(*alternatives), patient, r, probe
    )


def _matching_rows(
    resource_type: str,
    key: str,
    param: SearchParam,
    modifier: str | None,
    t: Any,
    matches: ColumnElement[bool],
    patient: str | None,
    r: Any,
    probe: bool,
) -> ColumnElement[bool]:
    """The resources of ``r`` with an index row of ``param`` in ``t`` that ``matches``."""
    if patient is not None and param.type in _PATIENT_INDEXED and modifier != "not":
        # Every match is in this patient's compartment: the patient's rows of the parameter,
        # found by ix_<table>_patient (migration 0006), not a probe per resource.
        of_patient = _in_index(
            t, resource_type, param.name, and_(t.c.patient_key == patient, matches)
        )
        return r.c.id.in_(of_patient)  # type: ignore[no-any-return]
    if probe and modifier != "not":
        return exists().where(
            t.c.resource_type == r.c.resource_type,
            t.c.resource_id == r.c.id,
            t.c.param == param.name,
            matches,
        )
    subquery = _in_index(t, resource_type, param.name, matches)
    if modifier == "not":
        if param.type != "token":
            raise bad(key, ":not applies to tokens only")
        # search.html#modifiers: :not matches resources without a matching value, including
        # those with no value at all.
        return r.c.id.not_in(subquery)  # type: ignore[no-any-return]
    return r.c.id.in_(subquery)  # type: ignore[no-any-return]


# The index tables with a patient-scoped index (health/search/models.py, migration 0006).
_PATIENT_INDEXED = frozenset({"token", "date"})


def _pinned_patient(context: Context, resource_type: str, r: Any) -> str | None:
    """The Patient the search of ``resource_type`` is pinned to, at the top level only."""
    if context.pinned is None or r is not RESOURCES or context.pinned[0] != resource_type:
        return None
    return context.pinned[1]


def _value_condition(
    t: Any, key: str, param: SearchParam, modifier: str | None, value: str, context: Context
) -> ColumnElement[bool]:
    kind = param.type
    if kind in ("string", "token", "uri"):
        with_modifiers = {"string": string_condition, "token": token_condition}
        return with_modifiers.get(kind, uri_condition)(t, key, modifier, value)
    if kind == "reference":
        return reference_condition(t, key, param, modifier, value, context)
    if modifier is not None:
        raise bad(key, f"modifier :{modifier} is not supported on a {kind}")
    if kind == "date":
        return date_condition(key, value, t.c.start, t.c.end)
    if kind == "number":
        prefix, text = _prefix(value)
        return number_condition(key, prefix, text, t.c.low, t.c.high)
    if kind == "quantity":
        return quantity_condition(t, key, value, columns=("low", "high", "system", "code", "unit"))
    return composite_condition(t, key, param, value)


def _id_condition(key: str, modifier: str | None, values: Sequence[str], r: Any) -> Any:
    ids = [unescape(v) for v in values if v]
    if modifier == "not":
        return r.c.id.not_in(ids)
    if modifier == "missing":
        return false() if values == ["true"] else true()
    if modifier is not None:
        raise bad(key, f"modifier :{modifier} is not supported on _id")
    return r.c.id.in_(ids) if len(ids) > 1 else r.c.id == ids[0]


def _targets(r_inner: Any, target_type: str, context: Context) -> list[ColumnElement[bool]]:
    where = [r_inner.c.resource_type == target_type, r_inner.c.deleted == false()]
    if context.restrict is not None:
        where.append(context.restrict(r_inner))
    return where


def _chain_condition(
    resource_type: str,
    param: SearchParam,
    modifier: str | None,
    chain: str,
    raw_value: str,
    context: Context,
    depth: int,
    r: Any,
) -> ColumnElement[bool]:
    """``subject:Patient.name=x`` (search.html#chaining): resources whose reference points at
    a resource matching the rest of the chain."""
    key = f"{param.name}.{chain}"
    if param.type != "reference":
        raise bad(key, "only reference parameters can be chained")
    if depth >= MAX_CHAIN_DEPTH:
        raise bad(key, f"chains deeper than {MAX_CHAIN_DEPTH} are refused")
    if modifier is not None and not _TYPE_NAME.fullmatch(modifier):
        raise bad(key, f"modifier :{modifier} cannot start a chain (use a type, e.g. :Patient)")
    candidates = [modifier] if modifier else list(param.target)
    chained_name = chain.partition(".")[0].partition(":")[0]
    defs = definitions()
    targets = [
        target
        for target in candidates
        if chained_name in defs.params(target) or chained_name in ("_id", "_lastUpdated")
    ]
    if not targets:
        raise bad(key, f"no target type of {param.name} has a search parameter {chained_name!r}")
    for target in targets:
        context.check_search(key, target)
    ref = context.aliases.of(reference_index)
    per_target = []
    for target in targets:
        r_inner = context.aliases.of(RESOURCES)
        inner = parameter_condition(target, chain, raw_value, context, depth=depth + 1, r=r_inner)
        matching = select(r_inner.c.id).where(*_targets(r_inner, target, context))
        if inner is not None:
            matching = matching.where(inner)
        per_target.append(and_(ref.c.target_type == target, ref.c.target_id.in_(matching)))
    referring = select(ref.c.resource_id).where(
        ref.c.resource_type == resource_type, ref.c.param == param.name, or_(*per_target)
    )
    return r.c.id.in_(referring)  # type: ignore[no-any-return]


def _has_condition(
    resource_type: str, key: str, raw_value: str, context: Context, *, depth: int, r: Any
) -> ColumnElement[bool]:
    """``_has:Observation:patient:code=x`` (search.html#has): resources referred to, by the
    parameter ``patient`` of an Observation, where that Observation matches ``code=x``."""
    parts = key.split(":", 3)
    if len(parts) != 4 or not all(parts[1:]):
        raise bad(key, "_has takes _has:Type:reference-parameter:parameter")
    _, source_type, reference_name, inner_key = parts
    if depth >= MAX_CHAIN_DEPTH:
        raise bad(key, f"_has nested deeper than {MAX_CHAIN_DEPTH} is refused")
    if not _TYPE_NAME.fullmatch(source_type) or source_type not in definitions().resource_types:
        raise bad(key, f"{source_type!r} is not a resource type")
    reference = definitions().params(source_type).get(reference_name)
    if reference is None or reference.type != "reference":
        raise bad(key, f"{reference_name!r} is not a reference parameter of {source_type}")
    context.check_search(key, source_type)
    r_inner = context.aliases.of(RESOURCES)
    inner = parameter_condition(
        source_type, inner_key, raw_value, context, depth=depth + 1, r=r_inner
    )
    sources = select(r_inner.c.id).where(*_targets(r_inner, source_type, context))
    if inner is not None:
        sources = sources.where(inner)
    ref = context.aliases.of(reference_index)
    referring = select(ref.c.target_id).where(
        ref.c.resource_type == source_type,
        ref.c.param == reference_name,
        ref.c.target_type == resource_type,
        ref.c.resource_id.in_(sources),
    )
    return r.c.id.in_(referring)  # type: ignore[no-any-return]
