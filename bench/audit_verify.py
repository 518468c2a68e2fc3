"""``onecard audit verify`` speed on 1,000,000 entries (issue 4).

The million entries are written straight into a fresh PostgreSQL schema with COPY (the
append path is measured by ``audit-append``; here only the verifier is), two checkpoints are
signed by the ledger's own checkpointer (at half and at the end), and the verifier then
recomputes every leaf hash from the stored records, the tree at each checkpoint, every
signature and the consistency between checkpoints, reading in chunks. Runs on SQLite with
fewer entries when PostgreSQL does not answer, and says so.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import text

from bench import BenchmarkError
from bench.audit_append import POSTGRES_URL, _postgres_answers, _record
from services.audit.app import create_app
from services.audit.checkpoints import Checkpointer, load_or_create_key
from services.audit.merkle import leaf_hash
from services.audit.settings import AuditSettings
from services.audit.verify import verify_ledger

ENTRIES = 1_000_000
SQLITE_ENTRIES = 100_000
CHUNK = 50_000


def _rows(start: int, count: int) -> list[tuple[object, ...]]:
    now = datetime.now(UTC)
    rows = []
    for seq in range(start, start + count):
        record = _record(seq)
        data = record.canonical()
        rows.append((seq, record.entry_id, now, data, leaf_hash(data), record.citizen, 3))
    return rows


async def _fill(settings: AuditSettings, total: int) -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        db = app.state.runtime.db
        key = await load_or_create_key(db, settings.checkpoint_key_secret())
        signer = Checkpointer(db, key, origin="bench/audit", algorithm=settings.hash_algorithm)
        columns = ["seq", "entry_id", "recorded_at", "record", "leaf_hash", "citizen", "level"]
        for start in range(0, total, CHUNK):
            rows = _rows(start, min(CHUNK, total - start))
            async with db.engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    raw = await conn.get_raw_connection()
                    await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
                        "audit_entries",
                        records=rows,
                        columns=columns,
                        schema_name=settings.database_schema,
                    )
                else:
                    await conn.execute(
                        text(
                            "INSERT INTO audit_entries VALUES "
                            "(:seq, :entry_id, :recorded_at, :record, :leaf_hash, :citizen, :level)"
                        ),
                        [dict(zip(columns, row, strict=True)) for row in rows],
                    )
                await conn.execute(
                    text("UPDATE audit_head SET size = :n WHERE id = 1"), {"n": start + len(rows)}
                )
            done = start + len(rows)
            if done == total or start < total // 2 <= done:  # at half, and at the end
                await signer.checkpoint_once()


async def _verify(settings: AuditSettings) -> tuple[float, int, int, bool]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        db = app.state.runtime.db
        started = time.perf_counter()
        report = await verify_ledger(db, algorithm=settings.hash_algorithm, chunk=CHUNK)
        elapsed = time.perf_counter() - started
        if db.schema:
            async with db.engine.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA "{db.schema}" CASCADE'))
    return elapsed, report.entries, report.checkpoints, report.ok


def run(console: Console) -> None:
    with tempfile.TemporaryDirectory(prefix="onecard-bench-verify-") as tmp:
        common = {
            "var_dir": Path(tmp) / "var",
            "environment": "test",
            "checkpoint_interval": 3600.0,  # the bench signs its own checkpoints
        }
        if _postgres_answers():
            total, where = ENTRIES, "PostgreSQL"
            settings = AuditSettings(
                database_url=POSTGRES_URL.rsplit("/", 1)[0] + "/onecard_bench",
                database_schema=f"verify_{secrets.token_hex(6)}",
                **common,
            )
        else:
            total, where = SQLITE_ENTRIES, "SQLite (PostgreSQL not reachable)"
            settings = AuditSettings(**common)
        started = time.perf_counter()
        asyncio.run(_fill(settings, total))
        filled = time.perf_counter() - started
        elapsed, entries, checkpoints, ok = asyncio.run(_verify(settings))
    if not ok or entries != total:
        raise BenchmarkError(f"verify found problems or read {entries} of {total} entries")
    table = Table(title=f"onecard audit verify on {where}")
    for column in ("entries", "checkpoints", "seconds", "entries/s"):
        table.add_column(column, justify="right")
    table.add_row(f"{entries:,}", str(checkpoints), f"{elapsed:.1f}", f"{entries / elapsed:,.0f}")
    console.print(table)
    console.print(f"(writing the {total:,} entries with COPY took {filled:.1f} s, not counted)")
