"""Appending to the ledger: batched group commit, idempotent by entry id, durable on return.

Every caller awaits its own receipt, and a receipt exists only once the transaction holding
its entry has committed: a service that waits for it before answering never serves an
unaudited response (issue 4, "write-ahead, fail closed"). One writer task per process gathers
whatever is queued into one transaction (group commit), so the cost of a durable commit is
shared by every entry that arrived meanwhile. Sequence numbers (the Merkle leaf indices) are
assigned inside that transaction after locking the ledger's head row (an UPDATE, so a row lock
on PostgreSQL and the write lock on SQLite), so several ledger processes still build one
gap-free sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audit.merkle import HashAlgorithm, leaf_hash
from services.audit.models import AuditEntry
from services.audit.records import AuditRecord
from services.kit.database import Database
from services.kit.sqltypes import utcnow

log = logging.getLogger(__name__)

MAX_BATCH = 512


@dataclass(frozen=True, slots=True)
class Receipt:
    """Proof of durable storage the submitter can keep: where its entry stands, and its hash."""

    entry_id: str
    seq: int
    leaf_hash: bytes
    recorded_at: datetime
    duplicate: bool  # True when the entry was already stored by an earlier submission


class Ledger:
    def __init__(self, db: Database, *, algorithm: HashAlgorithm = HashAlgorithm.SHA256) -> None:
        self.db = db
        self.algorithm = algorithm
        self._queue: asyncio.Queue[tuple[AuditRecord, asyncio.Future[Receipt]]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    async def append(self, record: AuditRecord) -> Receipt:
        """Store one record; returns once it is durable (or raises: then it is not stored)."""
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_forever(), name="audit-ledger-writer")
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        await self._queue.put((record, future))
        return await future

    async def append_many(self, records: list[AuditRecord]) -> list[Receipt]:
        return list(await asyncio.gather(*(self.append(r) for r in records)))

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    async def _write_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [(r, f) for r, f in batch if not f.cancelled()]
            if not live:
                continue
            try:
                receipts = await self._commit([r for r, _ in live])
            except Exception as exc:  # the whole batch failed: nothing of it is stored
                log.exception("audit batch not stored", extra={"entries": len(live)})
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), receipt in zip(live, receipts, strict=True):
                if not future.done():
                    future.set_result(receipt)

    async def _commit(self, records: list[AuditRecord]) -> list[Receipt]:
        async with self.db.engine.begin() as conn:
            # Lock the head first: from here to the commit this batch is the only appender.
            size = await conn.scalar(
                text("UPDATE audit_head SET size = size WHERE id = 1 RETURNING size")
            )
            if size is None:
                raise RuntimeError("the ledger head row is missing (migration 0003)")
            next_seq = int(size)
            known = await _existing(conn, [r.entry_id for r in records])
            now = utcnow()
            rows: list[dict[str, object]] = []
            receipts: list[Receipt] = []
            fresh: dict[str, Receipt] = {}
            for record in records:
                if record.entry_id in known:
                    seq, leaf, at = known[record.entry_id]
                    receipts.append(Receipt(record.entry_id, seq, leaf, at, duplicate=True))
                    continue
                if record.entry_id in fresh:  # the same entry twice in one batch
                    first = fresh[record.entry_id]
                    receipts.append(
                        Receipt(
                            first.entry_id,
                            first.seq,
                            first.leaf_hash,
                            first.recorded_at,
                            duplicate=True,
                        )
                    )
                    continue
                data = record.canonical()
                leaf = leaf_hash(data, algorithm=self.algorithm)
                receipt = Receipt(record.entry_id, next_seq, leaf, now, duplicate=False)
                rows.append(
                    {
                        "seq": receipt.seq,
                        "entry_id": record.entry_id,
                        "recorded_at": now,
                        "record": data,
                        "leaf_hash": leaf,
                        "citizen": record.citizen,
                        "level": record.level,
                    }
                )
                fresh[record.entry_id] = receipt
                receipts.append(receipt)
                next_seq += 1
            if rows:
                await conn.execute(AuditEntry.__table__.insert(), rows)  # type: ignore[attr-defined]
                await conn.execute(
                    text("UPDATE audit_head SET size = :size WHERE id = 1"), {"size": next_seq}
                )
        return receipts


async def _existing(
    conn: AsyncConnection, entry_ids: list[str]
) -> dict[str, tuple[int, bytes, datetime]]:
    table = AuditEntry.__table__  # type: ignore[attr-defined]
    rows = await conn.execute(
        select(table.c.entry_id, table.c.seq, table.c.leaf_hash, table.c.recorded_at).where(
            table.c.entry_id.in_(bindparam("ids", expanding=True))
        ),
        {"ids": entry_ids},
    )
    return {r.entry_id: (r.seq, bytes(r.leaf_hash), r.recorded_at) for r in rows}
