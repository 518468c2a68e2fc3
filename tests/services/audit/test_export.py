"""Exports of the ledger's oldest entries verify offline, and every tampering shows (issue 4, 8).

The ledger under test (``aged``) has 19 entries: 0..11 recorded 200 days ago, 12..18 now;
checkpoints at sizes 5, 12 and 16. An export of ``[0, 10)`` carries checkpoint 5 inside the
segment and checkpoint 12 as its anchor, with a consistency proof from 10 to 12.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from sqlalchemy import text
from typer.testing import CliRunner

from services.audit.app import create_app
from services.audit.checkpoint import SignedCheckpoint, key_id_for, sign_checkpoint
from services.audit.checkpoints import Checkpointer, public_pem
from services.audit.cli import app as audit_cli
from services.audit.export import ExportRefused, ExportReport, verify_export, write_export
from services.audit.ledger import Ledger
from services.audit.merkle import CompactTree, leaf_hash
from services.audit.models import AuditEntry
from services.audit.settings import AuditSettings
from services.audit.verify import Report, verify_ledger
from services.kit.database import Database
from services.kit.sqltypes import utcnow
from tests.harness import serve_asgi
from tests.services.audit.test_ledger import record
from tests.services.audit.test_verify import _cli_environment

OLD_DAYS = 200


@dataclass
class Aged:
    """A running ledger whose oldest entries were recorded long ago."""

    settings: AuditSettings
    app: FastAPI
    folder: Path
    http: httpx.AsyncClient | None = None

    @property
    def db(self) -> Database:
        db: Database = self.app.state.runtime.db
        return db

    async def append_old(self, count: int, *, days: int = OLD_DAYS) -> None:
        """Append as the ledger does (one batch, head moved with it), with an older clock."""
        records = [record(citizen=f"cz_{i}") for i in range(count)]
        at = utcnow() - timedelta(days=days)
        async with self.db.engine.begin() as conn:
            end = await conn.scalar(
                text("UPDATE audit_head SET size = size + :n WHERE id = 1 RETURNING size"),
                {"n": count},
            )
            first = int(end) - count
            await conn.execute(
                AuditEntry.__table__.insert(),  # type: ignore[attr-defined]
                [
                    {
                        "seq": first + i,
                        "entry_id": r.entry_id,
                        "recorded_at": at,
                        "record": r.canonical(),
                        "leaf_hash": leaf_hash(r.canonical()),
                        "citizen": r.citizen,
                        "level": r.level,
                    }
                    for i, r in enumerate(records)
                ],
            )

    async def append_new(self, count: int) -> list[int]:
        ledger: Ledger = self.app.state.ledger
        receipts = await ledger.append_many([record(citizen=f"cz_{i}") for i in range(count)])
        return [r.seq for r in receipts]

    async def checkpoint(self) -> int:
        checkpointer: Checkpointer = self.app.state.checkpointer
        signed = await checkpointer.checkpoint_once()
        assert signed is not None
        return signed.checkpoint.size

    async def export(self, upto: int, name: str | None = None) -> ExportReport:
        out = self.folder / (name or f"export-{upto}-{secrets.token_hex(3)}.jsonl.gz")
        return await write_export(
            self.db, upto=upto, out=out, algorithm=self.settings.hash_algorithm
        )

    async def verify(self) -> Report:
        return await verify_ledger(self.db, algorithm=self.settings.hash_algorithm, chunk=4)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        key: ec.EllipticCurvePublicKey = self.app.state.checkpoint_key.public_key
        return key

    def trusted(self) -> dict[str, ec.EllipticCurvePublicKey]:
        return {key_id_for(self.public_key()): self.public_key()}


@pytest.fixture
async def aged(make_settings: Callable[..., Any], tmp_path: Path) -> AsyncIterator[Aged]:
    settings = make_settings(AuditSettings, checkpoint_interval=3600)
    app = create_app(settings)
    async with serve_asgi(app):
        # The test signs checkpoints itself, at the sizes it wants.
        await app.state.checkpointer.stop()
        folder = tmp_path / "exports"
        folder.mkdir()
        yield await populate(Aged(settings, app, folder))


async def populate(ledger: Aged) -> Aged:
    """Entries 0..11 recorded 200 days ago, 12..18 now; checkpoints at 5, 12 and 16."""
    await ledger.append_old(5)
    assert await ledger.checkpoint() == 5
    await ledger.append_old(7)
    assert await ledger.checkpoint() == 12
    await ledger.append_new(4)
    assert await ledger.checkpoint() == 16
    await ledger.append_new(3)
    return ledger


def read_lines(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rb") as f:
        return [orjson.loads(line) for line in f]


def write_lines(path: Path, lines: list[dict[str, Any]]) -> Path:
    """Write (re-gzipped) JSON lines, as a forger who knows the format would."""
    with gzip.open(path, "wb") as f:
        f.writelines(orjson.dumps(line) + b"\n" for line in lines)
    return path


def kinds(report: ExportReport) -> set[tuple[str, str]]:
    return {(f.where, f.kind) for f in report.findings}


async def test_an_export_is_self_contained_and_verifies_offline(aged: Aged) -> None:
    report = await aged.export(10, "segment.jsonl.gz")
    assert report.ok, report.findings
    path = aged.folder / "segment.jsonl.gz"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in aged.folder.iterdir()] == ["segment.jsonl.gz"]  # no leftovers

    header, *entries = read_lines(path)
    assert header["format"] == "onecard-audit-export"
    assert (header["start"], header["end"], header["frontier"]) == (0, 10, [])
    assert [c["size"] for c in header["checkpoints"]] == [5]
    assert header["anchor"]["size"] == 12
    assert len(header["consistency"]) > 0
    assert header["keys"] == [
        {"key_id": key_id_for(aged.public_key()), "public_key_pem": public_pem(aged.public_key())}
    ]
    assert [e["seq"] for e in entries] == list(range(10))
    async with aged.db.engine.connect() as conn:
        stored = await conn.scalar(text("SELECT record FROM audit_entries WHERE seq = 3"))
    assert base64.b64decode(entries[3]["record"]) == bytes(stored)  # the bytes as stored

    # Offline: no database, with the file's key or with the ledger's published key.
    again = await asyncio.to_thread(verify_export, path)
    assert again.ok
    assert not again.trusted
    trusted = await asyncio.to_thread(verify_export, path, trusted_keys=aged.trusted())
    assert trusted.ok
    assert trusted.trusted
    assert (trusted.start, trusted.end, trusted.entries, trusted.checkpoints) == (0, 10, 10, 2)
    assert trusted.sha256 == report.sha256


async def test_an_export_ending_at_a_checkpoint_needs_no_proof(aged: Aged) -> None:
    report = await aged.export(12, "at-12.jsonl.gz")
    assert report.ok, report.findings
    header = read_lines(aged.folder / "at-12.jsonl.gz")[0]
    assert (header["anchor"]["size"], header["consistency"]) == (12, [])


async def test_two_exports_of_a_segment_hold_the_same_entries_and_proofs(aged: Aged) -> None:
    first, second = await aged.export(10), await aged.export(10)
    a, b = read_lines(first.path), read_lines(second.path)
    a[0].pop("exported_at")
    b[0].pop("exported_at")
    assert a == b


@pytest.mark.parametrize(
    ("upto", "reason"),
    [
        (20, "holds 19 entries"),
        (17, "no signed checkpoint covers entry 16 yet"),
    ],
)
async def test_an_export_out_of_range_or_uncovered_is_refused(
    aged: Aged, upto: int, reason: str
) -> None:
    with pytest.raises(ExportRefused, match=reason):
        await aged.export(upto, "refused.jsonl.gz")
    assert list(aged.folder.iterdir()) == []


async def test_an_export_never_overwrites_a_file(aged: Aged) -> None:
    (aged.folder / "kept.jsonl.gz").write_bytes(b"an earlier archive")
    with pytest.raises(ExportRefused, match="never overwrites"):
        await aged.export(10, "kept.jsonl.gz")
    assert (aged.folder / "kept.jsonl.gz").read_bytes() == b"an earlier archive"


def _flip_record_byte(lines: list[dict[str, Any]]) -> None:
    data = bytearray(base64.b64decode(lines[4]["record"]))
    data[data.index(b"cz_")] ^= 0x01
    lines[4]["record"] = base64.b64encode(bytes(data)).decode()


def _drop_entry(lines: list[dict[str, Any]]) -> None:
    del lines[7]


def _swap_lines(lines: list[dict[str, Any]]) -> None:
    lines[2], lines[3] = lines[3], lines[2]


def _swap_records_keep_numbers(lines: list[dict[str, Any]]) -> None:
    lines[2]["record"], lines[3]["record"] = lines[3]["record"], lines[2]["record"]


def _add_entry(lines: list[dict[str, Any]]) -> None:
    lines.append(dict(lines[-1], seq=10))


def _change_the_end(lines: list[dict[str, Any]]) -> None:
    lines[0]["end"] = 9
    del lines[-1]


def _edit_a_proof_hash(lines: list[dict[str, Any]]) -> None:
    proof = lines[0]["consistency"]
    proof[0] = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (_flip_record_byte, {("checkpoint 5", "root"), ("anchor checkpoint 12", "consistency")}),
        (_drop_entry, {("entry 7", "order"), ("entries", "count")}),
        (
            _swap_lines,
            {
                ("entry 2", "order"),
                ("checkpoint 5", "root"),
                ("anchor checkpoint 12", "consistency"),
            },
        ),
        (
            _swap_records_keep_numbers,
            {("checkpoint 5", "root"), ("anchor checkpoint 12", "consistency")},
        ),
        (_add_entry, {("entries", "count")}),
        (_change_the_end, {("anchor checkpoint 12", "consistency")}),
        (_edit_a_proof_hash, {("anchor checkpoint 12", "consistency")}),
    ],
    ids=[
        "edited-byte",
        "dropped-entry",
        "reordered-pair",
        "reordered-records-renumbered",
        "added-entry",
        "shortened-segment",
        "edited-proof",
    ],
)
async def test_each_tampering_of_an_export_is_detected(
    aged: Aged, tamper: Callable[[list[dict[str, Any]]], None], expected: set[tuple[str, str]]
) -> None:
    report = await aged.export(10)
    lines = read_lines(report.path)
    tamper(lines)
    forged = write_lines(aged.folder / "forged.jsonl.gz", lines)
    found = await asyncio.to_thread(verify_export, forged, trusted_keys=aged.trusted())
    assert not found.ok
    assert kinds(found) == expected


async def test_a_forged_checkpoint_in_an_export_is_detected(aged: Aged) -> None:
    report = await aged.export(10)
    lines = read_lines(report.path)
    genuine = SignedCheckpoint.from_dict(lines[0]["checkpoints"][0])
    mallory = ec.generate_private_key(ec.SECP256R1())
    # Signed by another key under the ledger's key id: the file's own key refutes it.
    lines[0]["checkpoints"][0] = sign_checkpoint(
        genuine.checkpoint, mallory, genuine.key_id
    ).to_dict()
    forged = write_lines(aged.folder / "forged.jsonl.gz", lines)
    found = await asyncio.to_thread(verify_export, forged)
    assert kinds(found) == {("checkpoint 5", "signature")}


async def test_a_re_signed_export_is_caught_by_the_published_key(aged: Aged) -> None:
    # Mallory edits an entry, recomputes every root and re-signs with a key of hers, which she
    # puts in the file: the file is consistent in itself, not with the ledger's key.
    report = await aged.export(12, "genuine.jsonl.gz")
    lines = read_lines(report.path)
    _flip_record_byte(lines)
    mallory = ec.generate_private_key(ec.SECP256R1())
    key_id = key_id_for(mallory.public_key())
    lines[0]["keys"] = [{"key_id": key_id, "public_key_pem": public_pem(mallory.public_key())}]
    tree = CompactTree()
    roots = {}
    for line in lines[1:]:
        tree.append(leaf_hash(base64.b64decode(line["record"])))
        roots[tree.size] = tree.root()
    for name in ("checkpoints", "anchor"):
        values = lines[0][name] if name == "checkpoints" else [lines[0][name]]
        signed = []
        for value in values:
            body = SignedCheckpoint.from_dict(value).checkpoint
            edited = type(body)(
                body.origin, body.size, roots[body.size], body.timestamp_ms, body.algorithm
            )
            signed.append(sign_checkpoint(edited, mallory, key_id).to_dict())
        lines[0][name] = signed if name == "checkpoints" else signed[0]
    forged = write_lines(aged.folder / "re-signed.jsonl.gz", lines)
    assert (await asyncio.to_thread(verify_export, forged)).ok  # self-consistent...
    caught = await asyncio.to_thread(verify_export, forged, trusted_keys=aged.trusted())
    assert kinds(caught) == {
        ("checkpoint 5", "signature"),
        ("checkpoint 12", "signature"),
        ("anchor checkpoint 12", "signature"),
    }


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],  # truncated file
        lambda raw: raw[:-6] + bytes([raw[-6] ^ 0xFF]) + raw[-5:],  # CRC-32 / length trailer
        lambda raw: b"not gzip at all",
        lambda raw: b"",
    ],
    ids=["truncated", "flipped-trailer-byte", "not-gzip", "empty"],
)
async def test_a_damaged_file_is_reported_not_raised(
    aged: Aged, damage: Callable[[bytes], bytes]
) -> None:
    report = await aged.export(10)
    damaged = aged.folder / "damaged.jsonl.gz"
    damaged.write_bytes(damage(report.path.read_bytes()))
    found = await asyncio.to_thread(verify_export, damaged)
    assert not found.ok
    assert {f.kind for f in found.findings} <= {"unreadable", "header"}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda h: h.update(format="something-else"), "not an onecard-audit-export file"),
        (lambda h: h.update(version=2), "version 2 is not supported"),
        (lambda h: h.update(algorithm="md5"), "md5"),
        (lambda h: h.update(start=3), "3 leaves has 2 frontier hashes"),
        (lambda h: h.update(frontier=["%%%"]), "frontier is not valid base64"),
        (lambda h: h.pop("anchor"), "signed checkpoint must be a JSON object"),
        (lambda h: h["keys"][0].update(key_id="0011223344556677"), "does not name its key"),
    ],
)
async def test_a_malformed_header_is_named(
    aged: Aged, edit: Callable[[dict[str, Any]], Any], message: str
) -> None:
    report = await aged.export(10)
    lines = read_lines(report.path)
    edit(lines[0])
    found = await asyncio.to_thread(verify_export, write_lines(aged.folder / "h.jsonl.gz", lines))
    assert [f.kind for f in found.findings] == ["header"]
    assert message in found.findings[0].detail


async def test_the_commands_export_and_verify_offline(
    aged: Aged, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cli_environment(aged.settings, monkeypatch)
    runner = CliRunner()
    out = aged.folder / "cli.jsonl.gz"
    exported = await asyncio.to_thread(
        runner.invoke, audit_cli, ["export", "--upto", "10", "--out", str(out)]
    )
    assert exported.exit_code == 0, exported.output
    assert "exported entries [0, 10)" in exported.output
    refused = await asyncio.to_thread(
        runner.invoke, audit_cli, ["export", "--upto", "10", "--out", str(out)]
    )
    assert refused.exit_code == 1
    assert "never overwrites" in refused.output

    key = aged.folder / "key.pem"
    key.write_text(public_pem(aged.public_key()))
    checked = await asyncio.to_thread(
        runner.invoke, audit_cli, ["verify-export", str(out), "--key", str(key)]
    )
    assert checked.exit_code == 0, checked.output
    assert "OK: entries [0, 10)" in checked.output
    assert "NOTE" not in checked.output
    unkeyed = await asyncio.to_thread(runner.invoke, audit_cli, ["verify-export", str(out)])
    assert unkeyed.exit_code == 0
    assert "NOTE signatures checked with the key in the file" in unkeyed.output

    lines = read_lines(out)
    _drop_entry(lines)
    write_lines(out, lines)
    tampered = await asyncio.to_thread(runner.invoke, audit_cli, ["verify-export", str(out)])
    assert tampered.exit_code == 1
    assert "TAMPERED entries: count: the header announces 10 entries" in tampered.output
