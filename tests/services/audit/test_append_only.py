"""The audit table refuses every change but an insert, even to its owner (issue 4, item 1)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services.audit.app import create_app
from services.audit.settings import AuditSettings
from services.kit.database import Database
from tests.conftest import Backend
from tests.harness import serve_asgi

INSERT = text(
    "INSERT INTO audit_entries (seq, entry_id, recorded_at, record, leaf_hash, citizen, level) "
    "VALUES (:seq, :entry_id, :at, :record, :leaf, 'cz_x', 3)"
)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_entries SET record = :b WHERE seq = 0",
        "UPDATE audit_entries SET level = 2",
        "DELETE FROM audit_entries WHERE seq = 0",
        "DELETE FROM audit_entries",
        "TRUNCATE audit_entries",
    ],
)
async def test_updates_deletes_and_truncates_are_refused(
    make_settings: Callable[..., Any], backend: Backend, statement: str
) -> None:
    if statement.startswith("TRUNCATE") and backend.name == "embedded":
        pytest.skip("SQLite has no TRUNCATE statement")
    settings = make_settings(AuditSettings)
    async with serve_asgi(create_app(settings)):
        pass  # migrated
    db = Database.for_settings(settings)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(
                INSERT,
                {
                    "seq": 0,
                    "entry_id": "e0",
                    "at": datetime.now(UTC),
                    "record": b"{}",
                    "leaf": b"\x00" * 32,
                },
            )
        with pytest.raises(DBAPIError, match="append-only"):
            async with db.engine.begin() as conn:
                await conn.execute(text(statement), {"b": b'{"edited": true}'})
        async with db.engine.connect() as conn:
            rows = (await conn.execute(text("SELECT seq, record FROM audit_entries"))).all()
        assert [(r.seq, bytes(r.record)) for r in rows] == [(0, b"{}")]
    finally:
        await db.dispose()
