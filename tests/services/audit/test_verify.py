"""``onecard audit verify`` detects every tampering of the stored ledger (issue 4, item 2).

The ledger under test has 20 entries and checkpoints at sizes 8 and 15 (entries 15..19 are not
yet in a checkpoint). Each case bypasses the append-only triggers, tampers, and verifies.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text
from typer.testing import CliRunner

from services.audit.app import create_app
from services.audit.checkpoint import SignedCheckpoint, sign_checkpoint
from services.audit.checkpoints import Checkpointer, load_or_create_key
from services.audit.cli import app as audit_cli
from services.audit.ledger import Ledger
from services.audit.merkle import HashAlgorithm, leaf_hash
from services.audit.settings import AuditSettings
from services.audit.verify import Report, verify_ledger
from services.kit.database import Database
from tests.harness import serve_asgi
from tests.services.audit.test_ledger import record

TABLES = ("audit_entries", "audit_checkpoints")


@dataclass
class Fixture:
    settings: AuditSettings
    db: Database

    async def verify(self) -> Report:
        return await verify_ledger(self.db, algorithm=self.settings.hash_algorithm, chunk=7)

    async def tamper(self, *statements: tuple[str, dict[str, Any]]) -> None:
        """Run ``statements`` with the append-only triggers out of the way."""
        async with self.db.engine.begin() as conn:
            for table in TABLES:
                if self.db.is_sqlite:
                    for action in ("update", "delete"):
                        await conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{action}"))
                else:
                    await conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            for sql, params in statements:
                await conn.execute(text(sql), params)
            if not self.db.is_sqlite:
                for table in TABLES:
                    await conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))

    async def column(self, name: str, seq: int) -> bytes:
        async with self.db.engine.connect() as conn:
            value = await conn.scalar(
                text(f"SELECT {name} FROM audit_entries WHERE seq = :s"), {"s": seq}
            )
        return bytes(value)


@pytest.fixture
async def ledger(make_settings: Callable[..., Any]) -> AsyncIterator[Fixture]:
    settings = make_settings(AuditSettings, checkpoint_interval=3600)
    app = create_app(settings)
    async with serve_asgi(app):
        appender: Ledger = app.state.ledger
        checkpointer: Checkpointer = app.state.checkpointer
        # Its background loop signs once at start-up: it could take the sizes signed below.
        await checkpointer.stop()
        for count in (8, 7, 5):
            await appender.append_many([record(citizen=f"cz_{i}") for i in range(count)])
            if count != 5:
                assert await checkpointer.checkpoint_once() is not None
        db = Database.for_settings(settings)
        yield Fixture(settings, db)
        await db.dispose()


def _cli_environment(settings: AuditSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``AuditSettings()`` in the command reads: this test's database."""
    monkeypatch.setenv("ONECARD_ENVIRONMENT", "test")
    monkeypatch.setenv("ONECARD_VAR_DIR", str(settings.var_dir))
    for name in ("database_url", "database_schema"):
        value = getattr(settings, name)
        if value is not None:
            monkeypatch.setenv(f"ONECARD_{name.upper()}", value)


def _where(report: Report) -> set[tuple[str, str]]:
    return {(f.where, f.kind) for f in report.findings}


async def test_an_untampered_ledger_verifies_clean(ledger: Fixture) -> None:
    report = await ledger.verify()
    assert report.ok, report.findings
    assert (report.entries, report.checkpoints) == (20, 2)


async def test_an_edited_byte_in_a_record_is_detected(ledger: Fixture) -> None:
    stored = bytearray(await ledger.column("record", 3))
    stored[stored.index(b"cz_3") + 3] ^= 0x01  # cz_3 -> cz_2: one bit of one byte
    await ledger.tamper(
        ("UPDATE audit_entries SET record = :r WHERE seq = 3", {"r": bytes(stored)})
    )
    found = _where(await ledger.verify())
    assert ("entry 3", "leaf hash") in found
    assert ("checkpoint 8", "root") in found
    assert ("checkpoint 15", "root") in found


async def test_an_edited_leaf_hash_is_detected(ledger: Fixture) -> None:
    leaf = bytearray(await ledger.column("leaf_hash", 10))
    leaf[0] ^= 0xFF
    await ledger.tamper(
        ("UPDATE audit_entries SET leaf_hash = :h WHERE seq = 10", {"h": bytes(leaf)})
    )
    assert _where(await ledger.verify()) == {("entry 10", "leaf hash")}


async def test_a_deleted_row_in_the_middle_is_detected(ledger: Fixture) -> None:
    await ledger.tamper(("DELETE FROM audit_entries WHERE seq = 5", {}))
    report = await ledger.verify()
    found = _where(report)
    assert ("entry 6", "gap") in found
    assert ("checkpoint 8", "root") in found
    assert ("ledger head", "head") in found
    assert "entries 5 are missing" in str(report.findings[0])


@pytest.mark.parametrize("seq", [14, 19], ids=["last-in-a-checkpoint", "last"])
async def test_a_deleted_last_row_is_detected(ledger: Fixture, seq: int) -> None:
    await ledger.tamper(("DELETE FROM audit_entries WHERE seq = :s", {"s": seq}))
    found = _where(await ledger.verify())
    assert ("ledger head", "head") in found
    if seq == 14:
        assert ("entry 15", "gap") in found
        assert ("checkpoint 15", "root") in found


async def test_two_records_swapped_are_detected(ledger: Fixture) -> None:
    two, four = await ledger.column("record", 2), await ledger.column("record", 4)
    await ledger.tamper(
        ("UPDATE audit_entries SET record = :r WHERE seq = 2", {"r": four}),
        ("UPDATE audit_entries SET record = :r WHERE seq = 4", {"r": two}),
    )
    found = _where(await ledger.verify())
    assert {("entry 2", "leaf hash"), ("entry 4", "leaf hash")} <= found


async def test_a_reordered_pair_of_whole_entries_is_detected(ledger: Fixture) -> None:
    # Records and their hashes moved together: every entry is self-consistent, only the
    # order changed, which the signed roots expose.
    rows = {
        seq: (await ledger.column("record", seq), await ledger.column("leaf_hash", seq))
        for seq in (9, 12)
    }
    statements = [
        (
            "UPDATE audit_entries SET record = :r, leaf_hash = :h WHERE seq = :s",
            {"r": rows[other][0], "h": rows[other][1], "s": seq},
        )
        for seq, other in ((9, 12), (12, 9))
    ]
    await ledger.tamper(*statements)
    # Entries 8..14 no longer lead from checkpoint 8 to checkpoint 15 either.
    assert _where(await ledger.verify()) == {
        ("checkpoint 15", "root"),
        ("checkpoint 15", "consistency"),
    }


async def test_a_truncated_tail_after_the_last_checkpoint_is_detected(ledger: Fixture) -> None:
    await ledger.tamper(("DELETE FROM audit_entries WHERE seq >= 15", {}))
    report = await ledger.verify()
    assert _where(report) == {("ledger head", "head")}
    assert "counts 20 entries but 15 are stored" in str(report.findings[0])


async def test_a_tail_truncated_below_the_last_checkpoint_is_detected(ledger: Fixture) -> None:
    await ledger.tamper(("DELETE FROM audit_entries WHERE seq >= 10", {}))
    found = _where(await ledger.verify())
    assert ("checkpoint 15", "beyond the end") in found
    assert ("ledger head", "head") in found


async def test_a_forged_checkpoint_is_detected(ledger: Fixture) -> None:
    async with ledger.db.engine.connect() as conn:
        stored = await conn.scalar(text("SELECT signed FROM audit_checkpoints WHERE size = 8"))
    genuine = SignedCheckpoint.from_json(stored)
    # Signed by someone else's key under the ledger's key id.
    forged = sign_checkpoint(
        genuine.checkpoint, ec.generate_private_key(ec.SECP256R1()), genuine.key_id
    )
    await ledger.tamper(
        ("UPDATE audit_checkpoints SET signed = :j WHERE size = 8", {"j": forged.to_json()})
    )
    report = await ledger.verify()
    assert _where(report) == {("checkpoint 8", "signature")}


async def test_the_command_reports_every_problem_and_exits_non_zero(
    ledger: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cli_environment(ledger.settings, monkeypatch)
    runner = CliRunner()
    clean = await asyncio.to_thread(runner.invoke, audit_cli, ["verify"])
    assert clean.exit_code == 0, clean.output
    assert "OK: 20 entries, 2 checkpoints" in clean.output
    assert "entries/s" in clean.output
    await ledger.tamper(
        ("DELETE FROM audit_entries WHERE seq = 5", {}),
        ("DELETE FROM audit_entries WHERE seq = 19", {}),
    )
    tampered = await asyncio.to_thread(runner.invoke, audit_cli, ["verify", "--chunk", "4"])
    assert tampered.exit_code == 1
    assert "TAMPERED entry 6: gap: entries 5 are missing" in tampered.output
    assert "TAMPERED checkpoint 8: root" in tampered.output
    assert "TAMPERED ledger head: head: the head counts 20 entries but 18" in tampered.output
    print(tampered.output)


async def test_a_rewritten_history_is_caught_by_a_checkpoint_the_auditor_kept(
    ledger: Fixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with ledger.db.engine.connect() as conn:
        kept = await conn.scalar(text("SELECT signed FROM audit_checkpoints WHERE size = 15"))
    (tmp_path / "kept.json").write_text(kept)
    # Whoever holds the database and the signing key rewrites an entry consistently (record
    # and hash), drops the checkpoints and signs the new history afresh.
    stored = (await ledger.column("record", 3)).replace(b"cz_3", b"cz_9")
    await ledger.tamper(
        (
            "UPDATE audit_entries SET record = :r, leaf_hash = :h WHERE seq = 3",
            {"r": stored, "h": leaf_hash(stored)},
        ),
        ("DELETE FROM audit_checkpoints", {}),
    )
    settings = ledger.settings
    key = await load_or_create_key(ledger.db, settings.checkpoint_key_secret())
    resigner = Checkpointer(
        ledger.db, key, origin=settings.origin(), algorithm=HashAlgorithm.SHA256
    )
    assert await resigner.checkpoint_once() is not None
    assert (await ledger.verify()).ok  # the database alone now tells a consistent story
    _cli_environment(settings, monkeypatch)
    caught = await asyncio.to_thread(
        CliRunner().invoke, audit_cli, ["verify", "--checkpoint", str(tmp_path / "kept.json")]
    )
    assert caught.exit_code == 1
    assert "TAMPERED pinned checkpoint 15: root" in caught.output
