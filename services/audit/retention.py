"""Retention of the audit ledger: purging its oldest entries, and its Merkle tree afterwards.

Issue 4, item 8: "Entries younger than 180 days cannot be purged; an export of old segments
with their checkpoints stays verifiable." A purge removes the oldest entries ``[start, end)``
in one transaction, and only when

(a) every one of them was recorded by the ledger at least the retention period ago
    (``audit_retention_days``, 180 by default and never less in production);
(b) an export of exactly that range (``services.audit.export``) exists and verifies against the
    ledger's own checkpoint keys, and holds exactly the entries stored (its tree at ``end``
    equals the one recomputed from the database);
(c) a signed checkpoint of size ``end`` or more covers the boundary (the export's anchor, which
    must be one of the ledger's stored checkpoints).

Its row in ``audit_purges`` (migration 0005) keeps the compact frontier at ``end``: the roots of
the perfect subtrees that make up the purged prefix (RFC 9162 section 2.1.1 splits every tree
at powers of two, so a prefix of ``end`` leaves is popcount(end) such subtrees). From it, and
the entries that remain, the tree's roots and every inclusion and consistency proof about the
remaining entries are computed exactly as before (``PrunedMerkleTree``); the ledger keeps
appending on top. The database's DELETE trigger allows the purge's deletions and nothing else
(see the migration).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import BigInteger, Column, Integer, LargeBinary, String, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import Field, SQLModel

from services.audit.merkle import CompactTree, HashAlgorithm, MerkleTree, node_hash
from services.audit.models import AuditEntry
from services.audit.settings import MIN_RETENTION_DAYS
from services.kit.database import Database
from services.kit.sqltypes import utc_column, utcnow

__all__ = [
    "MIN_RETENTION_DAYS",
    "AuditPurge",
    "PrunedMerkleTree",
    "PurgeRefused",
    "PurgeResult",
    "PurgedError",
    "PurgedPrefix",
    "RetentionStatus",
    "purge",
    "purge_history",
    "purged_prefix",
    "retention_status",
]

# PostgreSQL's transaction-local setting that names the purge to the DELETE trigger (0005).
PURGE_SETTING = "onecard.audit_purge"

_entries = AuditEntry.__table__  # type: ignore[attr-defined]


class AuditPurge(SQLModel, table=True):
    """One purge of the oldest entries ``[start_seq, end_seq)`` (migration 0005)."""

    __tablename__ = "audit_purges"

    end_seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    start_seq: int = Field(sa_column=Column(BigInteger, nullable=False, unique=True))
    frontier: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    purged_at: datetime = Field(sa_column=utc_column())
    cutoff: datetime = Field(sa_column=utc_column())
    retention_days: int = Field(sa_column=Column(Integer, nullable=False))
    checkpoint_size: int = Field(sa_column=Column(BigInteger, nullable=False))
    export_sha256: str = Field(sa_column=Column(String(64), nullable=False))


_purges = AuditPurge.__table__  # type: ignore[attr-defined]


class PurgedError(LookupError):
    """What was asked for lies in the purged prefix of the ledger (its export holds it)."""


class PurgeRefused(Exception):
    """A purge that may not happen; the message says which condition failed."""


@dataclass(frozen=True, slots=True)
class PurgedPrefix:
    """The ledger's purged prefix: entries below ``size`` are gone, ``tree`` stands for them."""

    tree: CompactTree

    @property
    def size(self) -> int:
        """The purge boundary: the number of entries purged so far."""
        return self.tree.size


async def purged_prefix(conn: AsyncConnection, *, algorithm: HashAlgorithm) -> PurgedPrefix | None:
    """The latest purge's boundary and frontier; None when nothing was ever purged."""
    row = (
        await conn.execute(
            select(_purges.c.end_seq, _purges.c.frontier).order_by(_purges.c.end_seq.desc())
        )
    ).first()
    if row is None:
        return None
    tree = CompactTree.from_bytes(bytes(row.frontier), algorithm=algorithm)
    if tree.size != row.end_seq:
        raise ValueError(f"the frontier of purge {row.end_seq} is of a tree of {tree.size}")
    return PurgedPrefix(tree)


async def purge_history(conn: AsyncConnection) -> list[AuditPurge]:
    """Every purge, oldest first."""
    rows = await conn.execute(select(_purges).order_by(_purges.c.end_seq))
    return [AuditPurge.model_validate(dict(r._mapping)) for r in rows]


def _parent_level(level: Sequence[bytes], algorithm: HashAlgorithm) -> list[bytes]:
    """Pair up one level (left-aligned); an odd last node is promoted, as in RFC 9162."""
    parents = [
        node_hash(level[i], level[i + 1], algorithm=algorithm) for i in range(0, len(level) - 1, 2)
    ]
    if len(level) % 2:
        parents.append(level[-1])
    return parents


class PrunedMerkleTree(MerkleTree):
    """A ``MerkleTree`` whose first ``prefix.size`` leaves are gone, known by their frontier.

    Every node of the tree either lies wholly in the purged prefix or contains a remaining
    leaf. A node of the second kind is computed from the remaining leaves and, where it reaches
    into the prefix, from the frontier: a node of height h that straddles the boundary ``s``
    covers the prefix's last ``s mod 2**h`` leaves, which are exactly the frontier subtrees of
    the set bits of ``s`` below h. Of the first kind only the frontier subtrees themselves are
    kept. That is enough for every audit path of a remaining leaf (RFC 9162 section 2.1.3.1:
    a path's left siblings in the prefix are frontier subtrees) and every consistency proof
    from a size of at least ``s`` (section 2.1.4.1); anything else raises ``PurgedError``.

    ``levels[h]`` holds the nodes of height h from index ``offsets[h]`` on.
    """

    def __init__(self, prefix: CompactTree, leaf_hashes: Sequence[bytes]) -> None:
        algorithm = prefix.algorithm
        self.algorithm = algorithm
        self.start = prefix.size
        self.size = prefix.size + len(leaf_hashes)
        # Frontier subtrees are listed largest first; their heights are start's set bits.
        heights = [h for h in range(self.start.bit_length() - 1, -1, -1) if self.start >> h & 1]
        by_height = dict(zip(heights, prefix.frontier, strict=True))
        self.levels = []
        self.offsets: list[int] = []
        level, offset, height = list(leaf_hashes), self.start, 0
        while True:
            if offset & 1:
                # The level starts right of a purged subtree of this height: put it in, so
                # pairs line up with the full tree's (left child at an even index).
                level.insert(0, by_height[height])
                offset -= 1
            self.levels.append(level)
            self.offsets.append(offset)
            if offset == 0 and len(level) <= 1:
                break
            level, offset, height = _parent_level(level, algorithm), offset >> 1, height + 1

    def root(self) -> bytes:
        if self.size == 0:
            return self.algorithm.empty_root()
        return self.levels[-1][0]

    def _node(self, start: int, end: int) -> bytes:
        height = (end - start - 1).bit_length()
        width = 1 << height
        if start % width or end != min(start + width, self.size) or height >= len(self.levels):
            raise ValueError(f"[{start}, {end}) is not a node of a tree of {self.size} leaves")
        index = (start >> height) - self.offsets[height]
        if index < 0:
            raise PurgedError(
                f"leaves [{start}, {end}) were purged (the ledger keeps entries from {self.start})"
            )
        return self.levels[height][index]

    def inclusion_proof(self, index: int) -> list[bytes]:
        if 0 <= index < self.start:
            raise PurgedError(
                f"entry {index} was purged (the ledger keeps entries from {self.start})"
            )
        return super().inclusion_proof(index)


@dataclass(frozen=True, slots=True)
class RetentionStatus:
    """Where the ledger stands for retention: what is kept, and how far a purge could go now."""

    start: int  # the oldest stored entry (the last purge's boundary)
    size: int  # entries ever appended (the head)
    checkpoint: int  # the latest signed checkpoint's size (0: none)
    cutoff: datetime  # entries recorded after it are within the retention period
    purgeable: int  # export and purge up to here now: all older, covered by a checkpoint


async def retention_status(
    db: Database, *, retention_days: int, algorithm: HashAlgorithm
) -> RetentionStatus:
    """How far the oldest entries may be exported and purged today."""
    cutoff = utcnow() - timedelta(days=retention_days)
    async with db.engine.connect() as conn:
        prefix = await purged_prefix(conn, algorithm=algorithm)
        start = 0 if prefix is None else prefix.size
        size = int(await conn.scalar(text("SELECT size FROM audit_head WHERE id = 1")) or 0)
        checkpoint = int(
            await conn.scalar(text("SELECT coalesce(max(size), 0) FROM audit_checkpoints")) or 0
        )
        # The first entry still within the retention period bounds the purge (sequence order
        # and recording order may differ by a batch: a seq below it is older all the same).
        young = await conn.scalar(
            select(func.min(_entries.c.seq)).where(
                _entries.c.seq >= start, _entries.c.recorded_at > cutoff
            )
        )
    limit = size if young is None else int(young)
    return RetentionStatus(start, size, checkpoint, cutoff, max(start, min(limit, checkpoint)))


@dataclass(frozen=True, slots=True)
class PurgeResult:
    start: int
    end: int
    checkpoint_size: int
    export_sha256: str
    purged_at: datetime
    cutoff: datetime


async def purge(
    db: Database,
    *,
    upto: int,
    export: Path,
    retention_days: int,
    algorithm: HashAlgorithm,
) -> PurgeResult:
    """Remove the entries below ``upto`` under conditions (a)-(c) of the module docstring.

    All or nothing: one transaction; PurgeRefused (nothing removed) when a condition fails.
    """
    # Imported here: export and checkpoints build on this module (the pruned tree).
    from services.audit.checkpoints import checkpoint_at, public_keys
    from services.audit.export import verify_export

    if retention_days < 1:
        raise PurgeRefused(f"a retention period of {retention_days} days is not a period")
    async with db.engine.connect() as conn:
        keys = await public_keys(conn)
    # (b) The export verifies offline, against the ledger's own keys (never the file's).
    report = await asyncio.to_thread(verify_export, export, trusted_keys=keys)
    if not report.ok or report.anchor is None or report.frontier_at_end is None:
        first = report.findings[0] if report.findings else "incomplete"
        raise PurgeRefused(f"the export {export} does not verify: {first}")
    if report.algorithm is not algorithm:
        raise PurgeRefused(f"the export is of a {report.algorithm} tree, the ledger {algorithm}")
    if report.end != upto:
        raise PurgeRefused(
            f"the export holds entries [{report.start}, {report.end}), not [.., {upto}): "
            "export exactly the range to purge"
        )
    anchor = report.anchor
    now = utcnow()
    cutoff = now - timedelta(days=retention_days)
    async with db.engine.begin() as conn:
        try:
            prefix = await purged_prefix(conn, algorithm=algorithm)
        except ValueError as exc:
            raise PurgeRefused(f"{exc}; run `onecard audit verify`") from None
        start = 0 if prefix is None else prefix.size
        if report.start != start:
            raise PurgeRefused(
                f"the export starts at entry {report.start} but the ledger's oldest entry is "
                f"{start}: export [{start}, {upto})"
            )
        # (c) The export's anchor is the ledger's own checkpoint at or beyond the boundary.
        stored = await checkpoint_at(conn, anchor.checkpoint.size)
        if stored is None or stored.to_json() != anchor.to_json():
            raise PurgeRefused(
                f"the export's checkpoint {anchor.checkpoint.size} is not one the ledger signed"
            )
        await _check_ages(conn, start=start, end=upto, cutoff=cutoff, days=retention_days)
        # The stored entries are exactly the exported ones: same leaves, so the same frontier.
        tree = await _stored_frontier(conn, prefix, end=upto, algorithm=algorithm)
        if tree.to_bytes() != report.frontier_at_end.to_bytes():
            raise PurgeRefused(
                f"the stored entries [{start}, {upto}) differ from the exported ones: "
                "run `onecard audit verify`"
            )
        try:
            await conn.execute(
                _purges.insert().values(
                    end_seq=upto,
                    start_seq=start,
                    frontier=tree.to_bytes(),
                    purged_at=now,
                    cutoff=cutoff,
                    retention_days=retention_days,
                    checkpoint_size=anchor.checkpoint.size,
                    export_sha256=report.sha256,
                )
            )
        except IntegrityError:
            raise PurgeRefused(f"another purge from entry {start} ran first") from None
        deleted = await _delete_range(conn, db=db, start=start, end=upto)
        if deleted != upto - start:  # the whole range or nothing (the transaction rolls back)
            raise PurgeRefused(f"{deleted} of the {upto - start} entries could be removed")
    return PurgeResult(start, upto, anchor.checkpoint.size, report.sha256, now, cutoff)


async def _check_ages(
    conn: AsyncConnection, *, start: int, end: int, cutoff: datetime, days: int
) -> None:
    """(a): refuse when any entry in ``[start, end)`` was recorded after ``cutoff``."""
    youngest = (
        await conn.execute(
            select(_entries.c.seq, _entries.c.recorded_at)
            .where(_entries.c.seq >= start, _entries.c.seq < end)
            .order_by(_entries.c.recorded_at.desc())
            .limit(1)
        )
    ).first()
    if youngest is not None and youngest.recorded_at > cutoff:
        purgeable = youngest.recorded_at + timedelta(days=days)
        raise PurgeRefused(
            f"entry {youngest.seq} was recorded at {youngest.recorded_at.isoformat()}, less "
            f"than {days} days ago: it may be purged from {purgeable.isoformat()}"
        )


async def _stored_frontier(
    conn: AsyncConnection, prefix: PurgedPrefix | None, *, end: int, algorithm: HashAlgorithm
) -> CompactTree:
    """The tree at ``end`` from the stored leaf hashes; PurgeRefused when one is missing."""
    tree = CompactTree.restore(
        0 if prefix is None else prefix.size,
        () if prefix is None else prefix.tree.frontier,
        algorithm=algorithm,
    )
    result = await conn.stream(
        select(_entries.c.seq, _entries.c.leaf_hash)
        .where(_entries.c.seq >= tree.size, _entries.c.seq < end)
        .order_by(_entries.c.seq)
    )
    async for partition in result.partitions(10_000):
        for row in partition:
            if row.seq != tree.size:
                raise PurgeRefused(
                    f"entry {tree.size} is missing from the ledger: run `onecard audit verify`"
                )
            tree.append(bytes(row.leaf_hash))
    if tree.size != end:
        raise PurgeRefused(f"the ledger holds entries up to {tree.size - 1} only, not {end - 1}")
    return tree


async def _delete_range(conn: AsyncConnection, *, db: Database, start: int, end: int) -> int:
    """DELETE the purge's range, named to the trigger for this transaction only (0005)."""
    if db.is_sqlite:
        await conn.execute(text("INSERT INTO audit_purge_active (end_seq) VALUES (:e)"), {"e": end})
    else:
        await conn.execute(
            text("SELECT set_config(:name, :value, true)"),
            {"name": PURGE_SETTING, "value": str(end)},
        )
    try:
        deleted = await conn.execute(
            _entries.delete().where(_entries.c.seq >= start, _entries.c.seq < end)
        )
    except DBAPIError as exc:
        raise PurgeRefused(f"the database refused the purge: {exc.orig}") from None
    if db.is_sqlite:
        await conn.execute(text("DELETE FROM audit_purge_active"))
    else:
        await conn.execute(text("SELECT set_config(:name, '', true)"), {"name": PURGE_SETTING})
    return int(deleted.rowcount)
