"""Appending to the ledger: durable on return, gap-free, idempotent, shared by processes."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from services.audit.app import create_app
from services.audit.ledger import Ledger
from services.audit.merkle import HashAlgorithm, leaf_hash
from services.audit.settings import AuditSettings
from services.kit.audit_record import Agent, AuditRecord
from services.kit.database import Database
from tests.harness import serve_asgi


def record(*, citizen: str = "cz_demo", entry_id: str | None = None, **fields: Any) -> AuditRecord:
    values: dict[str, Any] = {
        "entry_id": entry_id or secrets.token_hex(16),
        "time": datetime.now(UTC),
        "action": "R",
        "agent": Agent(who="hosp_1", role="clinician", acting_via="term_1"),
        "entity_type": "Observation",
        "entity_id": "obs-1",
        "citizen": citizen,
        "purpose": "TREAT",
        "outcome": "success",
        "request_id": "req-00000001",
        "level": 3,
    }
    values.update(fields)
    return AuditRecord(**values)


@pytest.fixture
async def database(make_settings: Callable[..., Any]) -> AsyncIterator[Database]:
    settings = make_settings(AuditSettings)
    async with serve_asgi(create_app(settings)):
        pass  # the service migrated its database
    db = Database.for_settings(settings)
    yield db
    await db.dispose()


async def _rows(db: Database) -> list[Any]:
    async with db.engine.connect() as conn:
        return list(await conn.execute(text("SELECT * FROM audit_entries ORDER BY seq")))


async def test_an_append_returns_only_once_the_entry_is_stored(database: Database) -> None:
    ledger = Ledger(database)
    try:
        entry = record()
        receipt = await ledger.append(entry)
    finally:
        await ledger.close()
    [row] = await _rows(database)
    assert (receipt.seq, receipt.duplicate) == (0, False)
    assert bytes(row.record) == entry.canonical()
    assert bytes(row.leaf_hash) == receipt.leaf_hash == leaf_hash(entry.canonical())
    assert row.citizen == "cz_demo"


async def test_concurrent_appends_get_a_gap_free_sequence_in_few_commits(
    database: Database,
) -> None:
    ledger = Ledger(database)
    try:
        receipts = await ledger.append_many([record() for _ in range(300)])
    finally:
        await ledger.close()
    assert sorted(r.seq for r in receipts) == list(range(300))
    assert [r.seq for r in await _rows(database)] == list(range(300))


async def test_a_resubmitted_entry_is_stored_once(database: Database) -> None:
    ledger = Ledger(database)
    try:
        entry = record()
        first = await ledger.append(entry)
        again = await ledger.append(entry)
        twice_in_a_batch = await ledger.append_many([record(entry_id="x" * 32)] * 2)
    finally:
        await ledger.close()
    assert again.seq == first.seq
    assert again.duplicate
    assert twice_in_a_batch[0].seq == twice_in_a_batch[1].seq
    assert [r.duplicate for r in twice_in_a_batch] == [False, True]
    assert len(await _rows(database)) == 2


async def test_two_ledger_processes_share_one_sequence(database: Database) -> None:
    # Two Ledger objects with engines of their own stand for two processes.
    other = Database(database.url.render_as_string(hide_password=False), schema=database.schema)
    first, second = Ledger(database), Ledger(other)
    try:
        receipts = await asyncio.gather(
            first.append_many([record() for _ in range(100)]),
            second.append_many([record() for _ in range(100)]),
        )
    finally:
        await first.close()
        await second.close()
        await other.dispose()
    seqs = sorted(r.seq for batch in receipts for r in batch)
    assert seqs == list(range(200))


async def test_sm3_leaves_can_be_chosen(database: Database) -> None:
    ledger = Ledger(database, algorithm=HashAlgorithm.SM3)
    try:
        entry = record()
        receipt = await ledger.append(entry)
    finally:
        await ledger.close()
    assert receipt.leaf_hash == leaf_hash(entry.canonical(), algorithm=HashAlgorithm.SM3)
    assert receipt.leaf_hash != leaf_hash(entry.canonical())


def test_records_refuse_unknown_fields_and_personal_data_shapes() -> None:
    with pytest.raises(ValueError, match="extra"):
        AuditRecord(**{**record().model_dump(), "national_id": "11010519491231002X"})
    with pytest.raises(ValueError, match="level"):
        record(level=9)
    with pytest.raises(ValueError, match="citizen"):
        record(citizen="张三 with spaces")
