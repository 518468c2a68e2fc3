"""The typed search-index tables (one per search parameter type, FHIR R4 search.html#ptypes).

Every row names the resource it indexes (``resource_type``, ``resource_id``), the parameter
(``param``) and the Patient whose compartment the resource is in (``patient_key``), so that the
tables can later be sharded by patient like the resources themselves. The rows of one resource
are rewritten as a whole on every write, in the writer's transaction (``index.reindex``).

Indexes are chosen for a store of millions of resources: each table has one index that finds
rows by value within a type and parameter (the search itself), and one by resource and
parameter (rewrites, ``:missing``, ``_sort`` and ``_include``). Rows carry no surrogate key:
nothing ever points at one row, and a key would only cost a sequence and another index.

Strings that are compared by prefix use the bytewise "C" collation on PostgreSQL, so that the
range ``[prefix, prefix + U+10FFFF)`` holds exactly the values starting with ``prefix`` and is
answered from the btree (SQLite compares bytewise already).
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, String, Table, Text
from sqlalchemy.types import TypeEngine
from sqlmodel import SQLModel

from services.kit.sqltypes import UtcDateTime

METADATA = SQLModel.metadata

# Lengths: values longer than these are cut before indexing (a btree entry has a size limit
# on PostgreSQL, and nobody searches by the 300th character of a name).
TEXT_MAX = 200
CODE_MAX = 255
URI_MAX = 512


def bytewise(length: int) -> TypeEngine[str]:
    return String(length).with_variant(String(length, collation="C"), "postgresql")


def _index_table(
    name: str,
    *columns: Column[object],
    value_index: tuple[str, ...],
    patient_index: tuple[str, ...] | None = None,
) -> Table:
    table = Table(
        name,
        METADATA,
        Column("resource_type", String(64), nullable=False),
        Column("resource_id", String(64), nullable=False),
        Column("param", String(64), nullable=False),
        Column("patient_key", String(64), nullable=True),
        *columns,
    )
    Index(f"ix_{name}_value", table.c.resource_type, table.c.param, *value_index)
    Index(f"ix_{name}_resource", table.c.resource_type, table.c.resource_id, table.c.param)
    if patient_index is not None:
        # A search pinned to one patient (health.search.pinning) finds that patient's rows of
        # a parameter directly (migration 0006).
        Index(
            f"ix_{name}_patient",
            table.c.patient_key,
            table.c.resource_type,
            table.c.param,
            *patient_index,
        )
    return table


# Strings: ``normalized`` (lower case, accents removed) for the default starts-with match and
# :contains; ``value`` as written for :exact (FHIR R4 search.html#string).
string_index = _index_table(
    "search_string",
    Column("normalized", bytewise(TEXT_MAX), nullable=False),
    Column("value", Text, nullable=False),
    value_index=("normalized",),
)

# Tokens: system and code (either may be absent), and the display or text for :text
# (FHIR R4 search.html#token).
token_index = _index_table(
    "search_token",
    Column("system", bytewise(URI_MAX), nullable=True),
    Column("code", bytewise(CODE_MAX), nullable=True),
    Column("text", bytewise(TEXT_MAX), nullable=True),
    value_index=("code", "system"),
    patient_index=("code",),
)

# Dates: the instants the value's precision covers, both inclusive (search.html#date):
# "2020-03" is [2020-03-01T00:00:00, 2020-03-31T23:59:59.999999]; an open Period end is the
# largest instant.
date_index = _index_table(
    "search_date",
    Column("start", UtcDateTime, nullable=False),
    Column("end", UtcDateTime, nullable=False),
    value_index=("start", "end"),
    patient_index=("start",),
)

# References: a local target as type and id; anything else (absolute URLs, canonicals) by
# ``url`` as written (search.html#reference).
reference_index = _index_table(
    "search_reference",
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("url", bytewise(URI_MAX), nullable=True),
    value_index=("target_id", "target_type"),
)

# Quantities: a value (low == high) or a Range, with system, code and the human unit.
quantity_index = _index_table(
    "search_quantity",
    Column("low", Float, nullable=True),
    Column("high", Float, nullable=True),
    Column("system", bytewise(URI_MAX), nullable=True),
    Column("code", bytewise(CODE_MAX), nullable=True),
    Column("unit", bytewise(CODE_MAX), nullable=True),
    value_index=("code", "low"),
)

number_index = _index_table(
    "search_number",
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    value_index=("low",),
)

uri_index = _index_table(
    "search_uri",
    Column("uri", bytewise(URI_MAX), nullable=False),
    value_index=("uri",),
)

# Composites (search.html#composite): the components of one element kept together, so that
# code-value-quantity matches a code and a value of the same Observation component. Every
# composite of the indexed types starts with a token; the second component is a token,
# quantity, date or string, in the matching columns.
composite_index = _index_table(
    "search_composite",
    Column("c1_system", bytewise(URI_MAX), nullable=True),
    Column("c1_code", bytewise(CODE_MAX), nullable=True),
    Column("c2_system", bytewise(URI_MAX), nullable=True),
    Column("c2_code", bytewise(CODE_MAX), nullable=True),
    Column("c2_low", Float, nullable=True),
    Column("c2_high", Float, nullable=True),
    Column("c2_start", UtcDateTime, nullable=True),
    Column("c2_end", UtcDateTime, nullable=True),
    Column("c2_text", bytewise(TEXT_MAX), nullable=True),
    value_index=("c1_code", "c2_code"),
)

TABLES: dict[str, Table] = {
    "string": string_index,
    "token": token_index,
    "date": date_index,
    "reference": reference_index,
    "quantity": quantity_index,
    "number": number_index,
    "uri": uri_index,
    "composite": composite_index,
}
