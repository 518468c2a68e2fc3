"""Search index: one table per search parameter type (FHIR R4 search.html#ptypes).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

Rows are rewritten with their resource in the same transaction (health.search.index). Each
table has a value index (type, parameter, value...) for the search itself and a resource index
(type, id, parameter) for rewrites, :missing, _sort and _include. Prefix-compared strings use
the bytewise "C" collation on PostgreSQL so that a starts-with match is one btree range.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TEXT_MAX = 200
CODE_MAX = 255
URI_MAX = 512

# table: (extra columns as (name, kind, nullable), value index columns)
_TABLES: dict[str, tuple[list[tuple[str, str, bool]], list[str]]] = {
    "search_string": (
        [("normalized", f"c{TEXT_MAX}", False), ("value", "text", False)],
        ["normalized"],
    ),
    "search_token": (
        [
            ("system", f"c{URI_MAX}", True),
            ("code", f"c{CODE_MAX}", True),
            ("text", f"c{TEXT_MAX}", True),
        ],
        ["code", "system"],
    ),
    "search_date": ([("start", "date", False), ("end", "date", False)], ["start", "end"]),
    "search_reference": (
        [
            ("target_type", "s64", True),
            ("target_id", "s64", True),
            ("url", f"c{URI_MAX}", True),
        ],
        ["target_id", "target_type"],
    ),
    "search_quantity": (
        [
            ("low", "float", True),
            ("high", "float", True),
            ("system", f"c{URI_MAX}", True),
            ("code", f"c{CODE_MAX}", True),
            ("unit", f"c{CODE_MAX}", True),
        ],
        ["code", "low"],
    ),
    "search_number": ([("low", "float", False), ("high", "float", False)], ["low"]),
    "search_uri": ([("uri", f"c{URI_MAX}", False)], ["uri"]),
    "search_composite": (
        [
            ("c1_system", f"c{URI_MAX}", True),
            ("c1_code", f"c{CODE_MAX}", True),
            ("c2_system", f"c{URI_MAX}", True),
            ("c2_code", f"c{CODE_MAX}", True),
            ("c2_low", "float", True),
            ("c2_high", "float", True),
            ("c2_start", "date", True),
            ("c2_end", "date", True),
            ("c2_text", f"c{TEXT_MAX}", True),
        ],
        ["c1_code", "c2_code"],
    ),
}


def _type(kind: str, postgres: bool) -> sa.types.TypeEngine[object]:
    if kind == "text":
        return sa.Text()
    if kind == "float":
        return sa.Float()
    if kind == "date":
        return sa.DateTime(timezone=True)
    if kind.startswith("s"):
        return sa.String(int(kind[1:]))
    # "cNNN": compared bytewise (prefix ranges), see the module docstring.
    return sa.String(int(kind[1:]), collation="C" if postgres else None)


# SQLite plans without statistics until ANALYZE runs, and then guesses that an index with more
# equality columns is the better one: it would check a second condition of a search through
# the value index (every row with that code) instead of the resource's own rows. Statistics
# written by hand fix the plans from the first request (sqlite.org/lang_analyze.html, "Fixed
# results using sqlite_stat1"): they describe the shape of a large store (a value index row
# matches many resources, a resource has a few rows per parameter). A later ANALYZE or
# PRAGMA optimize replaces them with the real figures.
_ROWS = 1_000_000
_SQLITE_STATS = {
    "value": f"{_ROWS} {_ROWS // 20} {_ROWS // 200} 50 40 40 40",
    "resource": f"{_ROWS} {_ROWS // 20} 10 2",
}


def _sqlite_statistics() -> None:
    op.execute("ANALYZE sqlite_schema")  # creates sqlite_stat1 without scanning any table
    for name in _TABLES:
        op.execute(sa.text("DELETE FROM sqlite_stat1 WHERE tbl = :t").bindparams(t=name))
        for kind, stat in _SQLITE_STATS.items():
            # One figure per column of the index, after the row count.
            width = 3 if kind == "resource" else 2 + len(_TABLES[name][1])
            figures = " ".join(stat.split()[: width + 1])
            op.execute(
                sa.text("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (:t, :i, :s)").bindparams(
                    t=name, i=f"ix_{name}_{kind}", s=figures
                )
            )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, (columns, value_index) in _TABLES.items():
        op.create_table(
            name,
            sa.Column("resource_type", sa.String(64), nullable=False),
            sa.Column("resource_id", sa.String(64), nullable=False),
            sa.Column("param", sa.String(64), nullable=False),
            sa.Column("patient_key", sa.String(64), nullable=True),
            *[sa.Column(c, _type(kind, postgres), nullable=n) for c, kind, n in columns],
        )
        op.create_index(f"ix_{name}_value", name, ["resource_type", "param", *value_index])
        op.create_index(f"ix_{name}_resource", name, ["resource_type", "resource_id", "param"])
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_statistics()


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in _TABLES:
            op.execute(sa.text("DELETE FROM sqlite_stat1 WHERE tbl = :t").bindparams(t=name))
    for name in reversed(_TABLES):
        op.drop_index(f"ix_{name}_resource", table_name=name)
        op.drop_index(f"ix_{name}_value", table_name=name)
        op.drop_table(name)
