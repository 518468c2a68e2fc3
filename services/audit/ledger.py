"""Appending to the ledger: batched group commit, idempotent by entry id, durable on return.

Every caller awaits its own receipt, and a receipt exists only once the transaction holding
its entry has committed: a service that waits for it before answering never serves an
unaudited response (issue 4, "write-ahead, fail closed"). One writer task per process gathers
whatever is queued into one transaction (group commit), so the cost of a durable commit is
shared by every entry that arrived meanwhile. Sequence numbers (the Merkle leaf indices) are
reserved inside that transaction by one UPDATE of the ledger's head row (a row lock on
PostgreSQL, the write lock on SQLite), so several ledger processes still build one gap-free
sequence. The usual batch costs three round trips: reserve, insert, commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audit.merkle import HashAlgorithm, leaf_hash
from services.audit.models import AuditEntry
from services.kit.audit_record import AuditRecord
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
        # Hash outside the transaction: the head row is locked only for the database's work.
        prepared = [(r, r.canonical()) for r in records]
        hashed = [(r, data, leaf_hash(data, algorithm=self.algorithm)) for r, data in prepared]
        try:
            return await self._store(hashed, known_checked=False)
        except IntegrityError:
            # An entry id was stored before (a retried submission): the rare path looks them
            # up first. The failed attempt rolled back whole, its sequence numbers with it.
            return await self._store(hashed, known_checked=True)

    async def _store(
        self, hashed: list[tuple[AuditRecord, bytes, bytes]], *, known_checked: bool
    ) -> list[Receipt]:
        async with self.db.engine.begin() as conn:
            known = (
                await _existing(conn, [r.entry_id for r, _, _ in hashed]) if known_checked else {}
            )
            now = utcnow()
            receipts: list[Receipt | None] = []
            fresh: dict[str, int] = {}  # entry id -> position among the new rows
            new: list[tuple[AuditRecord, bytes, bytes]] = []
            for record, data, leaf in hashed:
                if record.entry_id in known:
                    seq, stored_leaf, at = known[record.entry_id]
                    receipts.append(Receipt(record.entry_id, seq, stored_leaf, at, duplicate=True))
                elif record.entry_id in fresh:  # the same entry twice in one batch
                    receipts.append(None)
                else:
                    fresh[record.entry_id] = len(new)
                    new.append((record, data, leaf))
                    receipts.append(None)
            if new:
                # Lock the head and reserve the sequence numbers in one statement: from here to
                # the commit this batch is the only appender (row lock / SQLite's write lock).
                end = await conn.scalar(
                    text("UPDATE audit_head SET size = size + :n WHERE id = 1 RETURNING size"),
                    {"n": len(new)},
                )
                if end is None:
                    raise RuntimeError("the ledger head row is missing (migration 0003)")
                first_seq = int(end) - len(new)
                await conn.execute(
                    AuditEntry.__table__.insert(),  # type: ignore[attr-defined]
                    [
                        {
                            "seq": first_seq + i,
                            "entry_id": record.entry_id,
                            "recorded_at": now,
                            "record": data,
                            "leaf_hash": leaf,
                            "citizen": record.citizen,
                            "level": record.level,
                        }
                        for i, (record, data, leaf) in enumerate(new)
                    ],
                )
            result: list[Receipt] = []
            answered: set[str] = set()
            for (record, _, _), stored in zip(hashed, receipts, strict=True):
                if stored is None:
                    position = fresh[record.entry_id]
                    stored = Receipt(  # noqa: PLW2901 - filling in the new entry's receipt
                        record.entry_id,
                        first_seq + position,
                        new[position][2],
                        now,
                        duplicate=record.entry_id in answered,
                    )
                answered.add(record.entry_id)
                result.append(stored)
        return result


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
