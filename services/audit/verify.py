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
  entries found (a truncated tail shows either way);
- after a purge (``services.audit.retention``): the purges chain from entry 0, the entries
  resume exactly at the last purge's boundary, the tree is recomputed from the frontier stored
  there, and a signed checkpoint at or beyond the boundary authenticates that frontier.
  Checkpoints below the boundary are checked on their own (signature, row) only: their entries
  are in the exports, which ``onecard audit verify-export`` checks.

Memory stays bounded: entries are read in chunks by keyset pagination and only compact trees
(at most 64 hashes each) are kept. Checkpoint rows are read up front (a few hundred bytes each).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audit.checkpoint import SignedCheckpoint, verify_checkpoint
from services.audit.checkpoints import public_keys
from services.audit.merkle import CompactTree, HashAlgorithm, leaf_hash
from services.audit.models import AuditCheckpoint, AuditEntry
from services.audit.retention import purge_history
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
    purged: int = 0  # entries below the last purge's boundary (in exports, not here)
    notes: list[str] = field(default_factory=list)  # what could not be checked, and why

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
    async with db.engine.connect() as conn:
        if not db.is_sqlite:
            # One snapshot for every read: appends or a purge committing meanwhile would
            # otherwise show as a head mismatch or a gap (PostgreSQL reads each statement
            # afresh under READ COMMITTED).
            await conn.execution_options(isolation_level="REPEATABLE READ")
        keys = dict(trusted_keys) if trusted_keys is not None else await public_keys(conn)
        checkpoints = await _checked_checkpoints(conn, keys, algorithm, report)
        kept = _checked_pins(pinned, keys, algorithm, report)
        head = await conn.scalar(text("SELECT size FROM audit_head WHERE id = 1"))
        prefix = await _checked_purges(conn, algorithm, report)
        if prefix is None:  # the last purge's frontier is unusable: nothing to build on
            report.seconds = time.perf_counter() - started
            return report
        start = report.purged = prefix.size
        if start:
            await _after_purge(conn, start, checkpoints, kept, report)
        walk = _Walk(
            prefix,
            [c for c in checkpoints if c.size >= start],
            {size: pins for size, pins in kept.items() if size >= start},
            algorithm,
            report,
        )
        if start:  # a checkpoint exactly at the purge boundary checks the frontier itself
            walk.reached()
        last_seq = start - 1
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
                walk.entry(int(row.seq), bytes(row.record), bytes(row.leaf_hash))
            last_seq = int(rows[-1].seq)
    walk.finish()
    if head is not None and int(head) != start + report.entries:
        stored = f"{report.entries} are stored"
        if start:
            stored = f"{start} purged and {stored}"
        report.findings.append(
            Finding("head", "ledger head", f"the head counts {int(head)} entries but {stored}")
        )
    report.seconds = time.perf_counter() - started
    return report


class _Walk:
    """The tree recomputed entry by entry, checked at every checkpoint and kept checkpoint."""

    def __init__(
        self,
        tree: CompactTree,
        checkpoints: Sequence[_Checkpoint],
        kept: dict[int, list[SignedCheckpoint]],
        algorithm: HashAlgorithm,
        report: Report,
    ) -> None:
        self.tree = tree
        self.kept = kept
        self.algorithm = algorithm
        self.report = report
        self.bridge: CompactTree | None = None  # from the previous checkpoint's stored frontier
        self.previous: _Checkpoint | None = None
        self.pending = iter(checkpoints)
        self.upcoming = next(self.pending, None)
        self.expected = tree.size

    def entry(self, seq: int, record: bytes, stored_leaf: bytes) -> None:
        add = self.report.findings.append
        if seq != self.expected:
            expected = self.expected
            missing = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
            add(Finding("gap", f"entry {seq}", f"entries {missing} are missing"))
        self.expected = seq + 1
        computed = leaf_hash(record, algorithm=self.algorithm)
        if computed != stored_leaf:
            add(
                Finding(
                    "leaf hash",
                    f"entry {seq}",
                    "the stored record does not hash to the stored leaf_hash "
                    "(record or hash edited)",
                )
            )
        self.tree.append(computed)
        if self.bridge is not None:
            self.bridge.append(computed)
        self.report.entries += 1
        self.reached()

    def reached(self) -> None:
        """Check what was signed or kept at the tree's current size."""
        _check_pins(self.kept.pop(self.tree.size, ()), self.tree, self.report)
        while self.upcoming is not None and self.upcoming.size == self.tree.size:
            self.bridge = _at_checkpoint(
                self.upcoming, self.previous, self.tree, self.bridge, self.algorithm, self.report
            )
            self.previous = self.upcoming
            self.upcoming = next(self.pending, None)

    def finish(self) -> None:
        """Whatever was signed or kept beyond the last entry means entries were removed."""
        beyond = [] if self.upcoming is None else [self.upcoming.size]
        beyond += [c.size for c in self.pending]
        where = [f"checkpoint {size}" for size in beyond]
        where += [f"pinned checkpoint {size}" for size in sorted(self.kept)]
        for name in where:
            self.report.findings.append(
                Finding(
                    "beyond the end",
                    name,
                    f"the ledger holds only {self.tree.size} entries: entries were removed",
                )
            )


def _check_pins(pins: Sequence[SignedCheckpoint], tree: CompactTree, report: Report) -> None:
    for pin in pins:
        if pin.checkpoint.root != tree.root():
            report.findings.append(
                Finding(
                    "root",
                    f"pinned checkpoint {tree.size}",
                    "the root recomputed from the stored entries differs from "
                    "the checkpoint kept by the auditor",
                )
            )


async def _checked_purges(
    conn: AsyncConnection, algorithm: HashAlgorithm, report: Report
) -> CompactTree | None:
    """The tree at the last purge's boundary (empty if none); None when it is unusable.

    Each purge must start where the previous one ended (the first at 0): a purge row cannot
    hide a deletion elsewhere in the ledger.
    """
    tree = CompactTree(algorithm=algorithm)
    for purge in await purge_history(conn):
        where = f"purge {purge.end_seq}"
        if purge.start_seq != tree.size:
            report.findings.append(
                Finding(
                    "purge",
                    where,
                    f"starts at entry {purge.start_seq}, not where the ledger then began "
                    f"({tree.size})",
                )
            )
        try:
            tree = CompactTree.from_bytes(bytes(purge.frontier), algorithm=algorithm)
        except ValueError as exc:
            report.findings.append(Finding("frontier", where, f"unusable: {exc}"))
            return None
        if tree.size != purge.end_seq:
            report.findings.append(
                Finding("frontier", where, f"is the frontier of {tree.size} entries")
            )
            return None
    return tree


async def _after_purge(
    conn: AsyncConnection,
    start: int,
    checkpoints: Sequence[_Checkpoint],
    kept: Mapping[int, Sequence[SignedCheckpoint]],
    report: Report,
) -> None:
    """What a purge up to ``start`` leaves to check, and what it takes out of reach."""
    below = await conn.scalar(
        select(func.count()).select_from(_entries).where(_entries.c.seq < start)
    )
    if below:
        report.findings.append(
            Finding("purge", f"purge {start}", f"{below} entries remain below its boundary")
        )
    if not any(c.size >= start for c in checkpoints):
        report.findings.append(
            Finding(
                "purge",
                f"purge {start}",
                "no signed checkpoint at or beyond the boundary authenticates its frontier",
            )
        )
    purged = sum(1 for c in checkpoints if c.size < start)
    if purged:
        report.notes.append(
            f"{purged} checkpoint(s) below the purge boundary {start}: signatures checked, "
            "their entries are in the exports (onecard audit verify-export)"
        )
    for size in sorted(s for s in kept if s < start):
        report.notes.append(
            f"pinned checkpoint {size} lies below the purge boundary {start}: check it against "
            "the export that holds it"
        )


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
