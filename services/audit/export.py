"""Verifiable export of the ledger's oldest entries: a self-contained segment, checked offline.

``onecard audit export --upto E --out FILE`` writes the oldest stored entries ``[S, E)`` (S is
0, or the boundary of the last purge) with everything needed to check them without the
database; ``onecard audit verify-export FILE [--key PEM]`` checks it. The file is gzip
(RFC 1952) of JSON lines (RFC 8259, UTF-8, one object per ``\\n``-terminated line); byte
strings are standard base64 with padding (RFC 4648 section 4).

Line 1, the header (keys sorted)::

    {"format": "onecard-audit-export", "version": 1,
     "origin": "<the ledger's checkpoint origin>", "algorithm": "sha256" | "sm3",
     "start": S, "end": E,
     "frontier": [...],      compact frontier at S: the RFC 9162 subtree roots of D[0:S],
                             largest first (CompactTree); [] when S = 0
     "keys": [{"key_id": ..., "public_key_pem": ...}],   the ledger's checkpoint keys (SPKI)
     "checkpoints": [...],   every checkpoint the ledger signed with S < size <= E, ascending
     "anchor": {...},        the ledger's first signed checkpoint with size >= E
     "consistency": [...],   RFC 9162 section 2.1.4 PROOF(E, D[anchor.size]); [] if equal
     "exported_at": "<RFC 3339 UTC>"}

Checkpoints are ``SignedCheckpoint.to_dict()`` objects (C2SP tlog-checkpoint body, ECDSA P-256).
Lines 2 .. E-S+1, one per entry, in order::

    {"seq": n, "recorded_at": "<RFC 3339>", "record": "<base64 of the stored canonical bytes>"}

How it verifies: the frontier at S extended with the leaf hashes of the records (RFC 9162
section 2.1.1) gives the tree at every size up to E; at each included checkpoint its root must
equal the signed root, and the root at E must be consistent (section 2.1.4.2) with the anchor's
signed root. Why an anchor with a consistency proof rather than only a checkpoint at E: the
ledger signs checkpoints on its own clock, so E rarely is a checkpoint size, and the proof makes
any E exportable while still tying every exported byte, and the frontier, to a signature. An
edited byte, a dropped, added or reordered entry, an edited frontier or a forged checkpoint
changes a root or breaks a signature. The signatures are only as good as the key: the key in
the file makes it self-contained, ``--key`` with the ledger's published key
(``GET /audit/checkpoints/key``) also rules out a file re-signed with another key.
``recorded_at`` is the ledger's clock and, unlike the record, is not under the tree.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import gzip
import hashlib
import os
import secrets
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audit.checkpoint import SignedCheckpoint, key_id_for, verify_checkpoint
from services.audit.checkpoints import load_public_pem
from services.audit.merkle import CompactTree, HashAlgorithm, leaf_hash, verify_consistency
from services.audit.models import AuditCheckpoint, AuditEntry, CheckpointKey
from services.audit.retention import PrunedMerkleTree, PurgedError, purged_prefix
from services.audit.verify import Finding
from services.kit.database import Database
from services.kit.sqltypes import utcnow

__all__ = ["FORMAT", "VERSION", "ExportRefused", "ExportReport", "verify_export", "write_export"]

FORMAT = "onecard-audit-export"
VERSION = 1
READ_CHUNK = 10_000

_entries = AuditEntry.__table__  # type: ignore[attr-defined]
_checkpoints = AuditCheckpoint.__table__  # type: ignore[attr-defined]
_keys = CheckpointKey.__table__  # type: ignore[attr-defined]


class ExportRefused(Exception):
    """An export that cannot be written; the message says why (nothing was written)."""


@dataclass(slots=True)
class ExportReport:
    """What ``verify_export`` found; ``ok`` only when every check passed."""

    path: Path
    sha256: str = ""
    origin: str = ""
    algorithm: HashAlgorithm = HashAlgorithm.SHA256
    start: int = 0
    end: int = 0
    entries: int = 0
    checkpoints: int = 0  # signed checkpoints checked against recomputed roots (anchor too)
    key_ids: tuple[str, ...] = ()
    trusted: bool = False  # checked against keys given by the caller, not the file's own
    anchor: SignedCheckpoint | None = None
    frontier_at_end: CompactTree | None = None  # the tree at ``end``, once everything checked
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings and self.frontier_at_end is not None


class _Bad(ValueError):
    """A malformed field; the message names it."""


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise _Bad(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _Bad(f"{what} is not valid base64") from None


def _int(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Bad(f"{name} must be a non-negative integer")
    return value


def _list(data: Mapping[str, Any], name: str) -> list[Any]:
    value = data.get(name)
    if not isinstance(value, list):
        raise _Bad(f"{name} must be a list")
    return value


def _str(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise _Bad(f"{name} must be a string")
    return value


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(slots=True)
class _Header:
    origin: str
    algorithm: HashAlgorithm
    start: int
    end: int
    frontier: CompactTree
    keys: dict[str, ec.EllipticCurvePublicKey]
    checkpoints: list[SignedCheckpoint]
    anchor: SignedCheckpoint
    consistency: list[bytes]


def _header(line: bytes) -> _Header:
    """The header line, checked field by field; _Bad naming the first wrong one."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise _Bad("the header line is not JSON") from None
    if not isinstance(data, dict):
        raise _Bad("the header line is not a JSON object")
    if data.get("format") != FORMAT:
        raise _Bad(f"not an {FORMAT} file")
    if data.get("version") != VERSION:
        raise _Bad(f"version {data.get('version')!r} is not supported (only {VERSION})")
    try:
        return _header_fields(data)
    except _Bad:
        raise
    except ValueError as exc:  # from the checkpoint, key and tree constructors
        raise _Bad(str(exc)) from None


def _header_fields(data: dict[str, Any]) -> _Header:
    algorithm = HashAlgorithm(_str(data, "algorithm"))
    start, end = _int(data, "start"), _int(data, "end")
    if end <= start:
        raise _Bad(f"end ({end}) must be larger than start ({start})")
    frontier = [_b64(h, "frontier") for h in _list(data, "frontier")]
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    for item in _list(data, "keys"):
        if not isinstance(item, dict):
            raise _Bad("keys must be objects")
        key, key_id = load_public_pem(_str(item, "public_key_pem")), _str(item, "key_id")
        if key_id_for(key) != key_id:
            raise _Bad(f"key id {key_id!r} does not name its key")
        keys[key_id] = key
    return _Header(
        origin=_str(data, "origin"),
        algorithm=algorithm,
        start=start,
        end=end,
        frontier=CompactTree.restore(start, frontier, algorithm=algorithm),
        keys=keys,
        checkpoints=[SignedCheckpoint.from_dict(c) for c in _list(data, "checkpoints")],
        anchor=SignedCheckpoint.from_dict(data.get("anchor")),
        consistency=[_b64(h, "consistency") for h in _list(data, "consistency")],
    )


def verify_export(
    path: Path, *, trusted_keys: Mapping[str, ec.EllipticCurvePublicKey] | None = None
) -> ExportReport:
    """Check an export file offline; every problem becomes a finding, nothing raises.

    ``trusted_keys`` (by key id) replaces the keys the file carries.
    """
    report = ExportReport(path=path, trusted=trusted_keys is not None)
    try:
        report.sha256 = _file_sha256(path)
        with gzip.open(path, "rb") as stream:
            _check(report, stream, trusted_keys)
    except (OSError, EOFError, zlib.error) as exc:
        report.findings.append(Finding("unreadable", "file", f"not a readable gzip file: {exc}"))
        report.anchor = report.frontier_at_end = None
    return report


def _check(
    report: ExportReport,
    stream: Iterable[bytes],
    trusted_keys: Mapping[str, ec.EllipticCurvePublicKey] | None,
) -> None:
    lines = iter(stream)
    try:
        header = _header(next(lines, b""))
    except _Bad as exc:
        report.findings.append(Finding("header", "header", str(exc)))
        return
    report.origin, report.algorithm = header.origin, header.algorithm
    report.start, report.end = header.start, header.end
    report.key_ids = tuple(sorted(header.keys))
    keys = dict(header.keys) if trusted_keys is None else dict(trusted_keys)
    for key_id, key in header.keys.items():
        if key_id in keys and key_id_for(keys[key_id]) != key_id_for(key):
            report.findings.append(
                Finding("key", "header", f"key {key_id} in the file is not the trusted key")
            )
    inside, anchor_ok = _checked_signatures(header, keys, report)
    tree = _recomputed(lines, header, inside, report)
    wanted = header.end - header.start
    if report.entries != wanted:
        report.findings.append(
            Finding(
                "count",
                "entries",
                f"the header announces {wanted} entries [{header.start}, {header.end}), "
                f"the file holds {report.entries}",
            )
        )
        return
    anchor = header.anchor
    if anchor_ok:
        report.checkpoints += 1
        if not verify_consistency(
            old_size=header.end,
            new_size=anchor.checkpoint.size,
            old_root=tree.root(),
            new_root=anchor.checkpoint.root,
            proof=header.consistency,
            algorithm=header.algorithm,
        ):
            report.findings.append(
                Finding(
                    "consistency",
                    f"anchor checkpoint {anchor.checkpoint.size}",
                    f"the tree of the exported entries at {header.end} is not a prefix of the "
                    "signed tree (entries or frontier edited, dropped or reordered, or a "
                    "forged proof)",
                )
            )
    if not report.findings:
        report.anchor = anchor
        report.frontier_at_end = tree


def _checked_signatures(
    header: _Header, keys: Mapping[str, ec.EllipticCurvePublicKey], report: ExportReport
) -> tuple[dict[int, SignedCheckpoint], bool]:
    """The checkpoints inside the segment that verify, by size; whether the anchor does."""
    add = report.findings.append

    def signed_ok(signed: SignedCheckpoint, where: str) -> bool:
        body = signed.checkpoint
        if body.origin != header.origin or body.algorithm is not header.algorithm:
            add(Finding("checkpoint", where, "signed for another ledger or hash algorithm"))
            return False
        key = keys.get(signed.key_id)
        if key is None:
            add(Finding("signature", where, f"signed by unknown key {signed.key_id!r}"))
            return False
        if not verify_checkpoint(signed, key):
            add(Finding("signature", where, "the signature does not verify: forged or edited"))
            return False
        return True

    inside: dict[int, SignedCheckpoint] = {}
    previous = header.start
    for signed in header.checkpoints:
        size = signed.checkpoint.size
        where = f"checkpoint {size}"
        if not previous < size <= header.end:
            add(Finding("checkpoint", where, f"not in ({previous}, {header.end}], ascending"))
            continue
        previous = size
        if signed_ok(signed, where):
            inside[size] = signed
    anchor = header.anchor
    anchor_ok = signed_ok(anchor, f"anchor checkpoint {anchor.checkpoint.size}")
    if anchor.checkpoint.size < header.end:
        add(Finding("checkpoint", "anchor", f"size {anchor.checkpoint.size} is below the end"))
        anchor_ok = False
    return inside, anchor_ok


def _recomputed(
    lines: Iterator[bytes],
    header: _Header,
    inside: Mapping[int, SignedCheckpoint],
    report: ExportReport,
) -> CompactTree:
    """The tree at the end, from the frontier and the entry lines; roots checked on the way."""
    add = report.findings.append
    tree = header.frontier
    expected = header.start
    misordered = False
    for number, line in enumerate(lines, start=2):
        try:
            entry = orjson.loads(line)
            if not isinstance(entry, dict):
                raise _Bad("not a JSON object")
            seq, record = _int(entry, "seq"), _b64(entry.get("record"), "record")
            _str(entry, "recorded_at")
        except (orjson.JSONDecodeError, _Bad) as exc:
            add(Finding("unreadable", f"line {number}", f"not an entry: {exc}"))
            continue
        report.entries += 1
        if tree.size >= header.end:
            continue  # counted by the caller as entries beyond the announced range
        if seq != expected and not misordered:
            misordered = True  # one finding: every later seq is off too
            add(
                Finding(
                    "order",
                    f"entry {seq}",
                    f"found where entry {expected} belongs: entries dropped, added or reordered",
                )
            )
        expected = seq + 1
        tree.append(leaf_hash(record, algorithm=header.algorithm))
        checkpoint = inside.get(tree.size)
        if checkpoint is None:
            continue
        report.checkpoints += 1
        if tree.root() != checkpoint.checkpoint.root:
            add(
                Finding(
                    "root",
                    f"checkpoint {tree.size}",
                    "the root recomputed from the exported entries differs from the signed "
                    "root (entries or frontier edited, dropped or reordered)",
                )
            )
    return tree


def _check_target(out: Path) -> None:
    if out.exists():
        raise ExportRefused(f"{out} exists; an export never overwrites a file")
    if not out.parent.is_dir():
        raise ExportRefused(f"{out.parent} is not a directory")


class _Writer:
    """A gzip file written under a temporary name, made visible whole (rename) or not at all."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.temporary = out.with_name(f".{out.name}.{secrets.token_hex(4)}.partial")
        # 0600: entries name pseudonymous citizens; the export is for the auditors' archive.
        fd = os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._raw: BinaryIO = os.fdopen(fd, "wb")
        # mtime 0 and no file name: the same segment gives the same bytes (and digest).
        self._gzip = gzip.GzipFile(
            filename="", mode="wb", fileobj=self._raw, compresslevel=6, mtime=0
        )

    def write(self, lines: list[bytes]) -> None:
        self._gzip.write(b"".join(lines))

    def close(self) -> None:
        self._gzip.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()

    def publish(self) -> None:
        # A hard link appears whole and never replaces a file (unlike a rename).
        try:
            os.link(self.temporary, self.out)
        except FileExistsError:
            raise ExportRefused(f"{self.out} appeared meanwhile; not overwritten") from None
        self.temporary.unlink()

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self._gzip.close()
            self._raw.close()
        self.temporary.unlink(missing_ok=True)


def _line(value: object) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS) + b"\n"


def _encode(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


async def _signed_rows(conn: AsyncConnection, *, above: int, upto: int) -> list[SignedCheckpoint]:
    rows = await conn.execute(
        select(_checkpoints.c.signed)
        .where(_checkpoints.c.size > above, _checkpoints.c.size <= upto)
        .order_by(_checkpoints.c.size)
    )
    return [SignedCheckpoint.from_json(r.signed) for r in rows]


async def write_export(
    db: Database, *, upto: int, out: Path, algorithm: HashAlgorithm
) -> ExportReport:
    """Write the oldest stored entries below ``upto`` to ``out``; the verified report.

    ExportRefused (and no file) when the range is empty or not yet covered by a checkpoint, or
    when the stored entries do not match the signed checkpoints.
    """
    await asyncio.to_thread(_check_target, out)
    async with db.engine.connect() as conn:
        if not db.is_sqlite:  # one snapshot: a purge committing meanwhile changes nothing here
            await conn.execution_options(isolation_level="REPEATABLE READ")
        try:
            prefix = await purged_prefix(conn, algorithm=algorithm)
        except ValueError as exc:
            raise ExportRefused(f"{exc}; run `onecard audit verify`") from None
        start = 0 if prefix is None else prefix.size
        head = int(await conn.scalar(text("SELECT size FROM audit_head WHERE id = 1")) or 0)
        if upto <= start:
            raise ExportRefused(
                f"nothing to export below {upto}: the ledger keeps entries from {start} on"
            )
        if upto > head:
            raise ExportRefused(f"the ledger holds {head} entries; there is no entry {upto - 1}")
        anchor_row = (
            await conn.execute(
                select(_checkpoints.c.signed)
                .where(_checkpoints.c.size >= upto)
                .order_by(_checkpoints.c.size)
                .limit(1)
            )
        ).first()
        if anchor_row is None:
            raise ExportRefused(
                f"no signed checkpoint covers entry {upto - 1} yet; export after the next one"
            )
        anchor = SignedCheckpoint.from_json(anchor_row.signed)
        inside = await _signed_rows(conn, above=start, upto=upto)
        key_rows = (await conn.execute(select(_keys.c.key_id, _keys.c.public_key))).all()
        keys = {r.key_id: load_public_pem(r.public_key) for r in key_rows}
        leaves: list[bytes] = []
        stream = await conn.stream(
            select(_entries.c.leaf_hash)
            .where(_entries.c.seq >= start, _entries.c.seq < anchor.checkpoint.size)
            .order_by(_entries.c.seq)
        )
        async for partition in stream.partitions(READ_CHUNK):
            leaves.extend(bytes(r.leaf_hash) for r in partition)
        base = prefix.tree if prefix is not None else CompactTree(algorithm=algorithm)
        tree = await asyncio.to_thread(PrunedMerkleTree, base, leaves)
        if tree.size != anchor.checkpoint.size or tree.root() != anchor.checkpoint.root:
            raise ExportRefused(
                f"the stored entries no longer match signed checkpoint {anchor.checkpoint.size}; "
                "run `onecard audit verify`"
            )
        try:
            proof = tree.consistency_proof(upto)
        except PurgedError as exc:  # cannot happen for upto > start; said plainly if it does
            raise ExportRefused(str(exc)) from None
        header = {
            "format": FORMAT,
            "version": VERSION,
            "origin": anchor.checkpoint.origin,
            "algorithm": algorithm.value,
            "start": start,
            "end": upto,
            "frontier": [_encode(h) for h in base.frontier],
            "keys": [{"key_id": r.key_id, "public_key_pem": r.public_key} for r in key_rows],
            "checkpoints": [c.to_dict() for c in inside],
            "anchor": anchor.to_dict(),
            "consistency": [_encode(h) for h in proof],
            "exported_at": utcnow().isoformat().replace("+00:00", "Z"),
        }
        writer = await asyncio.to_thread(_Writer, out)
        try:
            await asyncio.to_thread(writer.write, [_line(header)])
            entries = await conn.stream(
                select(_entries.c.seq, _entries.c.recorded_at, _entries.c.record)
                .where(_entries.c.seq >= start, _entries.c.seq < upto)
                .order_by(_entries.c.seq)
            )
            async for partition in entries.partitions(READ_CHUNK):
                lines = [
                    _line(
                        {
                            "seq": r.seq,
                            "recorded_at": r.recorded_at.isoformat(),
                            "record": _encode(bytes(r.record)),
                        }
                    )
                    for r in partition
                ]
                await asyncio.to_thread(writer.write, lines)
            await asyncio.to_thread(writer.close)
            # What is published verifies: checked as an auditor would, against the ledger's keys.
            report = await asyncio.to_thread(verify_export, writer.temporary, trusted_keys=keys)
            if not report.ok:
                raise ExportRefused(
                    f"the ledger's entries [{start}, {upto}) do not verify "
                    f"({report.findings[0] if report.findings else 'incomplete'}); "
                    "run `onecard audit verify`"
                )
            await asyncio.to_thread(writer.publish)
        except BaseException:
            await asyncio.to_thread(writer.discard)
            raise
    report.path = out
    return report
