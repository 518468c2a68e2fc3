"""The auditor's verifier: recompute the whole ledger from its entries and check every checkpoint.

What it checks, reporting every problem (not just the first):

- the sequence: entries are numbered 0, 1, 2 ... with no gap (a deleted row shows as a gap;
  the primary key rules out duplicates);
- each entry: its stored record bytes hash (RFC 9162 leaf hash) to its stored ``leaf_hash``
  (an edited byte of either shows);
- each checkpoint: it parses, its row agrees with its signed body, its signature verifies under
  a ledger key (a forged or edited checkpoint shows), and the root recomputed from the records
  at its size equals the signed root (swapped, reordered or replaced entries show);
- consecutive checkpoints: the stored compact frontier of the older one folds to its signed
  root, and extended with the entries in between it gives the newer root: the newer tree
  extends the older one (RFC 9162 consistency, checked without keeping any leaf);
- the end: no checkpoint lies beyond the last entry, and the ledger's head counts exactly the
  entries found (a truncated tail shows either way).

Memory stays bounded: entries are read in chunks by keyset pagination and only compact trees
(at most 64 hashes each) are kept. Checkpoint rows are read up front (a few hundred bytes each).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audit.checkpoint import SignedCheckpoint, verify_checkpoint
from services.audit.checkpoints import public_keys
from services.audit.merkle import CompactTree, HashAlgorithm, leaf_hash
from services.audit.models import AuditCheckpoint, AuditEntry
from services.kit.database import Database

_entries = AuditEntry.__table__  # type: ignore[attr-defined]
_checkpoints = AuditCheckpoint.__table__  # type: ignore[attr-defined]

DEFAULT_CHUNK = 10_000


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: ``where`` names the entry (``entry 12``) or checkpoint (``checkpoint 8``)."""

    kind: str
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.kind}: {self.detail}"


@dataclass(slots=True)
class Report:
    entries: int = 0
    checkpoints: int = 0
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def entries_per_second(self) -> float:
        return self.entries / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class _Checkpoint:
    size: int
    signed: SignedCheckpoint
    frontier: bytes


async def verify_ledger(
    db: Database,
    *,
    algorithm: HashAlgorithm,
    chunk: int = DEFAULT_CHUNK,
    trusted_keys: Mapping[str, ec.EllipticCurvePublicKey] | None = None,
    pinned: Sequence[SignedCheckpoint] = (),
) -> Report:
    """Verify the ledger in ``db``.

    ``trusted_keys`` (by key id) replaces the keys stored in the ledger's database; ``pinned``
    are checkpoints the auditor kept from earlier (``GET /audit/checkpoints/latest``): the
    ledger must still match them, even if its own checkpoint rows were rewritten.
    """
    started = time.perf_counter()
    report = Report()
    add = report.findings.append
    async with db.engine.connect() as conn:
        keys = dict(trusted_keys) if trusted_keys is not None else await public_keys(conn)
        checkpoints = await _checked_checkpoints(conn, keys, algorithm, report)
        kept = _checked_pins(pinned, keys, algorithm, report)
        head = await conn.scalar(text("SELECT size FROM audit_head WHERE id = 1"))

        tree = CompactTree(algorithm=algorithm)
        bridge: CompactTree | None = None  # from the previous checkpoint's stored frontier
        previous: _Checkpoint | None = None
        pending = iter(checkpoints)
        upcoming = next(pending, None)
        last_seq = -1
        while True:
            rows = (
                await conn.execute(
                    select(_entries.c.seq, _entries.c.record, _entries.c.leaf_hash)
                    .where(_entries.c.seq > last_seq)
                    .order_by(_entries.c.seq)
                    .limit(chunk)
                )
            ).all()
            if not rows:
                break
            for row in rows:
                seq = int(row.seq)
                expected = last_seq + 1
                if seq != expected:
                    missing = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
                    add(Finding("gap", f"entry {seq}", f"entries {missing} are missing"))
                last_seq = seq
                computed = leaf_hash(bytes(row.record), algorithm=algorithm)
                if computed != bytes(row.leaf_hash):
                    add(
                        Finding(
                            "leaf hash",
                            f"entry {seq}",
                            "the stored record does not hash to the stored leaf_hash "
                            "(record or hash edited)",
                        )
                    )
                tree.append(computed)
                if bridge is not None:
                    bridge.append(computed)
                report.entries += 1
                for pin in kept.pop(tree.size, ()):
                    if pin.checkpoint.root != tree.root():
                        add(
                            Finding(
                                "root",
                                f"pinned checkpoint {tree.size}",
                                "the root recomputed from the stored entries differs from "
                                "the checkpoint kept by the auditor",
                            )
                        )
                while upcoming is not None and upcoming.size == tree.size:
                    bridge = _at_checkpoint(upcoming, previous, tree, bridge, algorithm, report)
                    previous = upcoming
                    upcoming = next(pending, None)
    while upcoming is not None:
        add(
            Finding(
                "beyond the end",
                f"checkpoint {upcoming.size}",
                f"the ledger holds only {report.entries} entries: entries were removed",
            )
        )
        upcoming = next(pending, None)
    for size in sorted(kept):
        add(
            Finding(
                "beyond the end",
                f"pinned checkpoint {size}",
                f"the ledger holds only {report.entries} entries: entries were removed",
            )
        )
    if head is not None and int(head) != report.entries:
        add(
            Finding(
                "head",
                "ledger head",
                f"the head counts {int(head)} entries but {report.entries} are stored",
            )
        )
    report.seconds = time.perf_counter() - started
    return report


def _at_checkpoint(
    checkpoint: _Checkpoint,
    previous: _Checkpoint | None,
    tree: CompactTree,
    bridge: CompactTree | None,
    algorithm: HashAlgorithm,
    report: Report,
) -> CompactTree | None:
    """Compare the recomputed tree with ``checkpoint``; return the bridge to the next one."""
    where = f"checkpoint {checkpoint.size}"
    signed_root = checkpoint.signed.checkpoint.root
    if tree.root() != signed_root:
        report.findings.append(
            Finding(
                "root",
                where,
                "the root recomputed from the stored entries differs from the signed root "
                "(entries edited, removed or reordered at or below this size)",
            )
        )
    if previous is not None and bridge is not None and bridge.root() != signed_root:
        report.findings.append(
            Finding(
                "consistency",
                where,
                f"it does not extend checkpoint {previous.size} with the stored entries "
                f"{previous.size}..{checkpoint.size - 1}",
            )
        )
    try:
        resumed = CompactTree.from_bytes(checkpoint.frontier, algorithm=algorithm)
    except ValueError as exc:
        report.findings.append(
            Finding("frontier", where, f"the stored frontier is unusable: {exc}")
        )
        return None
    if resumed.size != checkpoint.size or resumed.root() != signed_root:
        report.findings.append(
            Finding("frontier", where, "the stored frontier does not fold to the signed root")
        )
        return None
    return resumed


def _checked_pins(
    pinned: Sequence[SignedCheckpoint],
    keys: Mapping[str, ec.EllipticCurvePublicKey],
    algorithm: HashAlgorithm,
    report: Report,
) -> dict[int, list[SignedCheckpoint]]:
    """The auditor's kept checkpoints that carry a valid signature, by size."""
    kept: dict[int, list[SignedCheckpoint]] = {}
    for signed in pinned:
        where = f"pinned checkpoint {signed.checkpoint.size}"
        key = keys.get(signed.key_id)
        if signed.checkpoint.algorithm is not algorithm:
            report.findings.append(Finding("algorithm", where, f"not a {algorithm} tree"))
        elif key is None or not verify_checkpoint(signed, key):
            report.findings.append(
                Finding("signature", where, "not signed by a key of this ledger")
            )
        elif signed.checkpoint.size > 0:
            kept.setdefault(signed.checkpoint.size, []).append(signed)
    return kept


async def _checked_checkpoints(
    conn: AsyncConnection,
    keys: Mapping[str, ec.EllipticCurvePublicKey],
    algorithm: HashAlgorithm,
    report: Report,
) -> list[_Checkpoint]:
    """Every checkpoint row, checked on its own; those with a valid signature, by size."""
    from sqlalchemy.ext.asyncio import AsyncConnection

    assert isinstance(conn, AsyncConnection)
    add = report.findings.append
    rows = await conn.execute(
        select(
            _checkpoints.c.size,
            _checkpoints.c.root,
            _checkpoints.c.signed,
            _checkpoints.c.key_id,
            _checkpoints.c.frontier,
        ).order_by(_checkpoints.c.size)
    )
    good: list[_Checkpoint] = []
    last_time = -1
    for row in rows:
        report.checkpoints += 1
        where = f"checkpoint {row.size}"
        try:
            signed = SignedCheckpoint.from_json(row.signed)
        except ValueError as exc:
            add(Finding("unreadable", where, str(exc)))
            continue
        body = signed.checkpoint
        if body.size != row.size or body.root != bytes(row.root) or signed.key_id != row.key_id:
            add(Finding("row", where, "the row's size, root or key id differ from its signed body"))
        if body.algorithm is not algorithm:
            add(Finding("algorithm", where, f"signed for {body.algorithm}, not {algorithm}"))
            continue
        key = keys.get(signed.key_id)
        if key is None:
            add(Finding("signature", where, f"signed by unknown key {signed.key_id!r}"))
            continue
        if not verify_checkpoint(signed, key):
            add(Finding("signature", where, "the signature does not verify: forged or edited"))
            continue
        if body.timestamp_ms < last_time:
            add(Finding("time", where, "signed earlier than the previous, smaller checkpoint"))
        last_time = body.timestamp_ms
        good.append(_Checkpoint(body.size, signed, bytes(row.frontier)))
    return good
