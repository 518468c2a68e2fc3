"""Audit appends per second, durable, at concurrency 16 (issue 4).

Sixteen workers each append AuditEvent-shaped records one after another and wait for the
receipt, which the ledger gives only after the commit that holds the entry: every counted
append is durable. The ledger batches whatever is queued into one transaction (group commit).
Runs on the real PostgreSQL when it answers (``ONECARD_BENCH_POSTGRES_URL``, default the local
server), in a schema of its own that is dropped afterwards; otherwise on the SQLite default,
and says so. The Merkle leaf hash of each entry is computed on append; roots are computed per
checkpoint, not per append. Target: >= 5,000 appends/s on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import text

from bench import BenchmarkError
from services.audit.app import create_app
from services.audit.ledger import Ledger
from services.audit.settings import AuditSettings
from services.kit.audit_record import Agent, AuditRecord

CONCURRENCY = 16
APPENDS = 20_000
WARMUP = 1_000
TARGET = 5_000.0
POSTGRES_URL = os.environ.get(
    "ONECARD_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _postgres_answers() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError:
        return False
    return True


def _record(i: int) -> AuditRecord:
    return AuditRecord(
        entry_id=secrets.token_hex(16),
        time=datetime.now(UTC),
        action="R",
        agent=Agent(who="hosp_bench", role="clinician", acting_via="term_bench"),
        entity_type="Observation",
        entity_id=f"obs-{i}",
        citizen=f"cz_{i % 1000:026d}",
        purpose="TREAT",
        outcome="success",
        request_id=f"req-{i:012d}",
        source="127.0.0.1",
        level=3,
    )


async def _append(ledger: Ledger, count: int) -> tuple[float, list[float]]:
    records = [_record(i) for i in range(count)]
    latencies: list[float] = []
    cursor = 0

    async def worker() -> None:
        nonlocal cursor
        while cursor < count:
            record = records[cursor]
            cursor += 1
            started = time.perf_counter()
            await ledger.append(record)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - started, latencies


async def _measure(settings: AuditSettings) -> tuple[float, list[float], int]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        db = app.state.runtime.db
        ledger = Ledger(db, algorithm=settings.hash_algorithm)
        try:
            await _append(ledger, WARMUP)
            elapsed, latencies = await _append(ledger, APPENDS)
        finally:
            await ledger.close()
        async with db.engine.connect() as conn:
            size = await conn.scalar(text("SELECT size FROM audit_head"))
        if db.schema:
            async with db.engine.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA "{db.schema}" CASCADE'))
    return elapsed, latencies, int(size or 0)


def run(console: Console) -> None:
    with tempfile.TemporaryDirectory(prefix="onecard-bench-audit-") as tmp:
        common = {"var_dir": Path(tmp) / "var", "environment": "test"}
        if _postgres_answers():
            where = "PostgreSQL (fsync on, one commit per batch)"
            settings = AuditSettings(
                database_url=POSTGRES_URL.rsplit("/", 1)[0] + "/onecard_bench",
                database_schema=f"bench_{secrets.token_hex(6)}",
                **common,
            )
        else:
            where = "SQLite (PostgreSQL not reachable)"
            settings = AuditSettings(**common)
        elapsed, latencies, size = asyncio.run(_measure(settings))
    if size != WARMUP + APPENDS:
        raise BenchmarkError(f"ledger holds {size} entries, expected {WARMUP + APPENDS}")
    latencies.sort()
    rate = APPENDS / elapsed
    table = Table(title=f"Durable audit appends, concurrency {CONCURRENCY}, on {where}")
    for column in ("appends", "appends/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{APPENDS:,}",
        f"{rate:,.0f}",
        f"{latencies[len(latencies) // 2] * 1000:.2f}",
        f"{latencies[int(len(latencies) * 0.99)] * 1000:.2f}",
    )
    console.print(table)
    verdict = "[green]PASS[/green]" if rate >= TARGET else "[red]MISS[/red]"
    console.print(f"{rate:,.0f} appends/s (target >= {TARGET:,.0f} on PostgreSQL)  {verdict}")
