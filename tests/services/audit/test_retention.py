"""Retention: only old, exported, checkpointed entries are purged; the rest keeps verifying.

Issue 4, item 8. The ledger under test (``aged``, from ``test_export``) has entries 0..11
recorded 200 days ago and 12..18 now, with checkpoints at 5, 12 and 16.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from services.audit.checkpoint import (
    SignedCheckpoint,
    key_id_for,
    sign_checkpoint,
    verify_checkpoint,
)
from services.audit.checkpoints import TreeCache, checkpoint_at, latest_checkpoint, public_pem
from services.audit.cli import app as audit_cli
from services.audit.merkle import (
    CompactTree,
    MerkleTree,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from services.audit.retention import (
    MIN_RETENTION_DAYS,
    AuditPurge,
    PrunedMerkleTree,
    PurgedError,
    PurgeRefused,
    PurgeResult,
    purge,
    retention_status,
)
from services.audit.settings import AuditSettings
from services.audit.verify import verify_ledger
from services.kit.sqltypes import utcnow
from tests.harness import serve_asgi
from tests.services.audit.test_export import Aged, populate, read_lines, write_lines
from tests.services.audit.test_proofs import _app, auditor
from tests.services.audit.test_routes import ISSUER
from tests.services.audit.test_verify import _cli_environment

PURGES = AuditPurge.__table__  # type: ignore[attr-defined]


@pytest.fixture
async def aged(make_settings: Callable[..., Any], tmp_path: Path) -> AsyncIterator[Aged]:
    # The audit app with test tokens, so proofs can also be read over HTTP after a purge.
    settings = make_settings(AuditSettings, public_url=ISSUER, checkpoint_interval=3600)
    app = _app(settings)
    async with serve_asgi(app) as http:
        await app.state.checkpointer.stop()  # the test signs checkpoints itself
        folder = tmp_path / "exports"
        folder.mkdir()
        yield await populate(Aged(settings, app, folder, http))


async def _purge(aged: Aged, upto: int, export: Path, *, days: int = 180) -> PurgeResult:
    return await purge(
        aged.db,
        upto=upto,
        export=export,
        retention_days=days,
        algorithm=aged.settings.hash_algorithm,
    )


async def _stored(aged: Aged) -> list[int]:
    async with aged.db.engine.connect() as conn:
        return [
            r.seq for r in await conn.execute(text("SELECT seq FROM audit_entries ORDER BY seq"))
        ]


async def test_a_purge_removes_exported_old_entries_and_the_rest_still_verifies(
    aged: Aged,
) -> None:
    export = await aged.export(10)
    result = await _purge(aged, 10, export.path)
    assert (result.start, result.end, result.checkpoint_size) == (0, 10, 12)
    assert result.export_sha256 == export.sha256
    assert await _stored(aged) == list(range(10, 19))

    report = await aged.verify()
    assert report.ok, report.findings
    assert (report.purged, report.entries, report.checkpoints) == (10, 9, 3)
    assert report.notes == [
        "1 checkpoint(s) below the purge boundary 10: signatures checked, their entries are in "
        "the exports (onecard audit verify-export)"
    ]

    # The ledger goes on: appends, a checkpoint from the stored frontier, verify again.
    assert await aged.append_new(5) == [19, 20, 21, 22, 23]
    assert await aged.checkpoint() == 24
    after = await aged.verify()
    assert after.ok, after.findings
    assert (after.purged, after.entries) == (10, 14)

    # A second purge continues from the first one's boundary (its export carries the frontier).
    second = await aged.export(12)
    assert len(read_lines(second.path)[0]["frontier"]) == 2  # 10 = 8 + 2: two subtrees
    await _purge(aged, 12, second.path)
    assert await _stored(aged) == list(range(12, 24))
    final = await aged.verify()
    assert final.ok, final.findings
    assert (final.purged, final.entries) == (12, 12)


async def test_proofs_for_the_remaining_entries_still_verify_after_a_purge(aged: Aged) -> None:
    await _purge(aged, 10, (await aged.export(10)).path)
    await aged.append_new(3)
    assert await aged.checkpoint() == 22
    key = aged.public_key()
    http = aged.http
    assert http is not None
    for size in (12, 16, 22):
        for seq in range(10, size):
            response = await http.get(f"/audit/entries/{seq}/proof?size={size}", headers=auditor())
            assert response.status_code == 200, response.text
            body = response.json()
            signed = SignedCheckpoint.from_dict(body["checkpoint"])
            assert verify_checkpoint(signed, key)
            assert verify_inclusion(
                index=seq,
                size=size,
                leaf_hash=bytes.fromhex(body["leaf_hash"]),
                proof=[bytes.fromhex(h) for h in body["proof"]],
                root=signed.checkpoint.root,
            )
    gone = await http.get("/audit/entries/3/proof", headers=auditor())
    assert gone.status_code == 404
    consistent = await http.get("/audit/consistency?old=12&new=22")
    assert consistent.status_code == 200, consistent.text
    body = consistent.json()
    assert verify_consistency(
        old_size=12,
        new_size=22,
        old_root=SignedCheckpoint.from_dict(body["old"]).checkpoint.root,
        new_root=SignedCheckpoint.from_dict(body["new"]).checkpoint.root,
        proof=[bytes.fromhex(h) for h in body["proof"]],
    )
    # Below the boundary there is nothing to prove from: said as such, not as corruption.
    trees = TreeCache(aged.db, algorithm=aged.settings.hash_algorithm)
    async with aged.db.engine.connect() as conn:
        old, latest = await checkpoint_at(conn, 5), await latest_checkpoint(conn)
    assert old is not None
    assert latest is not None
    with pytest.raises(PurgedError, match="purged prefix"):
        await trees.tree(old)
    with pytest.raises(PurgedError, match="purged"):
        (await trees.tree(latest)).consistency_proof(5)


async def test_entries_younger_than_the_retention_period_are_not_purged(aged: Aged) -> None:
    export = await aged.export(14)  # 12 and 13 were recorded today
    assert export.ok
    with pytest.raises(PurgeRefused, match=r"entry 1[23] was recorded at .*less than 180 days ago"):
        await _purge(aged, 14, export.path)
    older = await aged.export(10)
    with pytest.raises(PurgeRefused, match="less than 365 days ago"):
        await _purge(aged, 10, older.path, days=365)
    assert await _stored(aged) == list(range(19))
    assert (await aged.verify()).ok


async def test_a_purge_needs_a_verified_export_of_exactly_its_range(aged: Aged) -> None:
    with pytest.raises(PurgeRefused, match="does not verify: file: unreadable"):
        await _purge(aged, 10, aged.folder / "missing.jsonl.gz")

    shorter = await aged.export(8)
    with pytest.raises(PurgeRefused, match=r"holds entries \[0, 8\), not \[.., 10\)"):
        await _purge(aged, 10, shorter.path)

    genuine = await aged.export(10)
    lines = read_lines(genuine.path)
    del lines[4]
    dropped = write_lines(aged.folder / "dropped.jsonl.gz", lines)
    with pytest.raises(PurgeRefused, match="does not verify"):
        await _purge(aged, 10, dropped)

    # Signed, consistently, by a key that is not the ledger's (the file carries it).
    lines = read_lines(genuine.path)
    other = ec.generate_private_key(ec.SECP256R1())
    other_id = key_id_for(other.public_key())
    lines[0]["keys"] = [{"key_id": other_id, "public_key_pem": public_pem(other.public_key())}]
    resign = SignedCheckpoint.from_dict
    lines[0]["checkpoints"] = [
        sign_checkpoint(resign(c).checkpoint, other, other_id).to_dict()
        for c in lines[0]["checkpoints"]
    ]
    lines[0]["anchor"] = sign_checkpoint(
        resign(lines[0]["anchor"]).checkpoint, other, other_id
    ).to_dict()
    foreign = write_lines(aged.folder / "foreign.jsonl.gz", lines)
    with pytest.raises(PurgeRefused, match="signed by unknown key"):
        await _purge(aged, 10, foreign)

    assert await _stored(aged) == list(range(19))
    assert (await aged.verify()).ok


async def test_a_purge_must_start_at_the_oldest_stored_entry(aged: Aged) -> None:
    first = await aged.export(5)
    later = await aged.export(10)
    await _purge(aged, 5, first.path)
    # The export of [0, 10) no longer matches: entries 0..4 are gone, export [5, 10).
    with pytest.raises(PurgeRefused, match=r"starts at entry 0 .* oldest entry is 5"):
        await _purge(aged, 10, later.path)
    with pytest.raises(PurgeRefused, match=r"starts at entry 0 .* oldest entry is 5"):
        await _purge(aged, 5, first.path)  # the same purge twice
    assert await _stored(aged) == list(range(5, 19))


def _delete_refused() -> Any:
    return pytest.raises(DBAPIError, match="append-only")


async def _name_purge(conn: Any, aged: Aged, end: int) -> None:
    """What the purge does to tell the trigger its name (migration 0005)."""
    if aged.db.is_sqlite:
        await conn.execute(text("INSERT INTO audit_purge_active (end_seq) VALUES (:e)"), {"e": end})
    else:
        await conn.execute(
            text("SELECT set_config('onecard.audit_purge', :e, true)"), {"e": str(end)}
        )


async def test_every_other_delete_is_still_refused(aged: Aged) -> None:
    # Old entries, deleted directly: refused.
    with _delete_refused():
        async with aged.db.engine.begin() as conn:
            await conn.execute(text("DELETE FROM audit_entries WHERE seq < 5"))
    await _purge(aged, 10, (await aged.export(10)).path)
    # Naming the earlier purge in another transaction opens nothing beyond its (gone) range.
    with _delete_refused():
        async with aged.db.engine.begin() as conn:
            await _name_purge(conn, aged, 10)
            await conn.execute(text("DELETE FROM audit_entries WHERE seq = 10"))
    # A purge row written by hand for young entries: the trigger checks their age itself.
    now = utcnow()
    with _delete_refused():
        async with aged.db.engine.begin() as conn:
            await conn.execute(
                PURGES.insert().values(
                    end_seq=19,
                    start_seq=10,
                    frontier=b"",
                    purged_at=now,
                    cutoff=now - timedelta(days=1),
                    retention_days=1,
                    checkpoint_size=19,
                    export_sha256="0" * 64,
                )
            )
            await _name_purge(conn, aged, 19)
            await conn.execute(text("DELETE FROM audit_entries WHERE seq >= 12"))
    # The purge record itself is append-only.
    for statement in ("DELETE FROM audit_purges", "UPDATE audit_purges SET start_seq = 3"):
        with pytest.raises(DBAPIError, match="audit purges are append-only"):
            async with aged.db.engine.begin() as conn:
                await conn.execute(text(statement))
    assert await _stored(aged) == list(range(10, 19))
    assert (await aged.verify()).ok


async def test_verify_reports_a_deletion_disguised_as_a_purge(aged: Aged) -> None:
    """Rows removed with the triggers out of the way, and a purge row forged to explain them:
    the stored frontier does not lead to the signed roots, or the purges do not chain."""
    await _purge(aged, 5, (await aged.export(5)).path)
    forged = CompactTree()
    for i in range(8):
        forged.append(leaf_hash(f"not entry {i}".encode()))
    async with aged.db.engine.begin() as conn:
        if aged.db.is_sqlite:
            await conn.execute(text("DROP TRIGGER audit_entries_no_delete"))
        else:
            await conn.execute(text("ALTER TABLE audit_entries DISABLE TRIGGER USER"))
        await conn.execute(text("DELETE FROM audit_entries WHERE seq < 8"))
        await conn.execute(
            PURGES.insert().values(
                end_seq=8,
                start_seq=6,
                frontier=forged.to_bytes(),
                purged_at=utcnow(),
                cutoff=utcnow() - timedelta(days=180),
                retention_days=180,
                checkpoint_size=12,
                export_sha256="0" * 64,
            )
        )
        if not aged.db.is_sqlite:
            await conn.execute(text("ALTER TABLE audit_entries ENABLE TRIGGER USER"))
    found = {(f.where, f.kind) for f in (await aged.verify()).findings}
    # The purges do not chain (5 then 6), and the forged frontier leads to no signed root.
    assert found == {("purge 8", "purge"), ("checkpoint 12", "root"), ("checkpoint 16", "root")}


def test_the_retention_period_is_never_below_180_days_in_production() -> None:
    assert MIN_RETENTION_DAYS == 180
    assert AuditSettings().audit_retention_days == 180
    with pytest.raises(ValidationError, match="ONECARD_AUDIT_RETENTION_DAYS is 30"):
        AuditSettings(environment="production", audit_retention_days=30)  # type: ignore[arg-type]
    assert (
        AuditSettings(environment="production", audit_retention_days=400).audit_retention_days  # type: ignore[arg-type]
        == 400
    )
    assert AuditSettings(environment="test", audit_retention_days=30).audit_retention_days == 30  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        AuditSettings(audit_retention_days=0)


def _hashes(n: int) -> list[bytes]:
    return [leaf_hash(f"leaf {i}".encode()) for i in range(n)]


def test_a_pruned_tree_gives_the_full_trees_roots_and_proofs() -> None:
    """Every root, audit path and consistency proof about the remaining leaves is the one the
    whole tree gives (RFC 9162 sections 2.1.3, 2.1.4), for every size and boundary up to 33."""
    for size, start in itertools.chain.from_iterable(
        ((n, s) for s in range(n + 1)) for n in range(34)
    ):
        leaves = _hashes(size)
        full = MerkleTree(leaves)
        prefix = CompactTree()
        prefix.extend(leaves[:start])
        pruned = PrunedMerkleTree(prefix, leaves[start:])
        assert (pruned.size, pruned.root()) == (size, full.root()), (size, start)
        for index in range(size):
            if index < start:
                with pytest.raises(PurgedError):
                    pruned.inclusion_proof(index)
            else:
                assert pruned.inclusion_proof(index) == full.inclusion_proof(index)
        for old in range(start, size + 1):
            assert pruned.consistency_proof(old) == full.consistency_proof(old), (size, start, old)


async def test_the_commands_export_purge_and_verify(
    aged: Aged, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cli_environment(aged.settings, monkeypatch)
    runner = CliRunner()
    young = aged.folder / "young.jsonl.gz"
    old = aged.folder / "old.jsonl.gz"

    async def run(*args: str) -> Any:
        return await asyncio.to_thread(runner.invoke, audit_cli, list(args))

    status = await run("retention")
    assert status.exit_code == 0, status.output
    assert "entries [0, 19) kept, 0 purged; latest checkpoint 16; retention 180 days" in (
        status.output
    )
    assert "onecard audit export --upto 12 --out FILE" in status.output

    assert (await run("export", "--upto", "14", "--out", str(young))).exit_code == 0
    refused = await run("purge", "--upto", "14", "--export", str(young), "--yes")
    assert refused.exit_code == 1
    assert "REFUSED entry 1" in refused.output
    assert "less than 180 days ago" in refused.output

    assert (await run("export", "--upto", "10", "--out", str(old))).exit_code == 0
    unconfirmed = await run("purge", "--upto", "10", "--export", str(old))
    assert unconfirmed.exit_code == 1  # no confirmation on stdin: nothing removed
    assert await _stored(aged) == list(range(19))
    purged = await run("purge", "--upto", "10", "--export", str(old), "--yes")
    assert purged.exit_code == 0, purged.output
    assert "purged entries [0, 10)" in purged.output
    verified = await run("verify")
    assert verified.exit_code == 0, verified.output
    assert "OK: 9 entries (10 purged)" in verified.output


async def test_checkpoints_an_auditor_kept_are_checked_or_said_to_be_out_of_reach(
    aged: Aged,
) -> None:
    async with aged.db.engine.connect() as conn:
        kept = [await checkpoint_at(conn, size) for size in (5, 12, 16)]
    await _purge(aged, 10, (await aged.export(10)).path)
    report = await verify_ledger(
        aged.db,
        algorithm=aged.settings.hash_algorithm,
        pinned=[k for k in kept if k is not None],
    )
    assert report.ok, report.findings
    assert (
        "pinned checkpoint 5 lies below the purge boundary 10: check it against the export "
        "that holds it"
    ) in report.notes


async def test_the_status_says_how_far_a_purge_could_go_today(aged: Aged) -> None:
    algorithm = aged.settings.hash_algorithm
    status = await retention_status(aged.db, retention_days=180, algorithm=algorithm)
    # 12 is the first entry recorded today; checkpoint 16 covers it.
    assert (status.start, status.size, status.checkpoint, status.purgeable) == (0, 19, 16, 12)
    longer = await retention_status(aged.db, retention_days=365, algorithm=algorithm)
    assert longer.purgeable == 0
    await _purge(aged, status.purgeable, (await aged.export(status.purgeable)).path)
    after = await retention_status(aged.db, retention_days=180, algorithm=algorithm)
    assert (after.start, after.purgeable) == (12, 12)
