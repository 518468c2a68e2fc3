"""Appending to the ledger: batched group commit, idempotent by entry id, durable on return.

Every caller awaits its own receipt, and a receipt exists only once the transaction holding
its entry has committed: a service that waits for it before answering never serves an
unaudited response (issue 4, "write-ahead, fail closed"). One writer task per process gathers
whatever is queued into one transaction (group commit), so the cost of a durable commit is
shared by every entry that arrived meanwhile. Sequence numbers (the Merkle leaf indices) are
reserved inside that transaction by one UPDATE of the ledger's head row (a row lock on
PostgreSQL, the write lock on SQLite), so several ledger processes still build one gap-free
sequence. On PostgreSQL the usual batch is one statement, one round trip (reserve and insert,
committed on its own); elsewhere three: reserve, insert, commit.
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
        if not known_checked and self.db.engine.dialect.name == "postgresql":
            return await self._store_in_one_statement(hashed)
        async with self.db.engine.begin() as conn:
            known = (
                await _existing(conn, [r.entry_id for r, _, _ in hashed]) if known_checked else {}
            )
            batch = _Batch(hashed, known)
            if batch.new:
                # Lock the head and reserve the sequence numbers in one statement: from here to
                # the commit this batch is the only appender (row lock / SQLite's write lock).
                end = await conn.scalar(_RESERVE, {"n": len(batch.new)})
                if end is None:
                    raise RuntimeError(_NO_HEAD)
                first_seq = int(end) - len(batch.new)
                await conn.execute(
                    AuditEntry.__table__.insert(),  # type: ignore[attr-defined]
                    [
                        {
                            "seq": first_seq + i,
                            "entry_id": record.entry_id,
                            "recorded_at": batch.now,
                            "record": data,
                            "leaf_hash": leaf,
                            "citizen": record.citizen,
                            "level": record.level,
                        }
                        for i, (record, data, leaf) in enumerate(batch.new)
                    ],
                )
            else:
                first_seq = 0
        return batch.receipts(first_seq)

    async def _store_in_one_statement(
        self, hashed: list[tuple[AuditRecord, bytes, bytes]]
    ) -> list[Receipt]:
        """PostgreSQL: the reservation and the batch's rows in one statement, which is its own
        transaction (autocommit): one round trip instead of four or more (BEGIN, reserve,
        insert, COMMIT). The head's row lock is held from the UPDATE to the statement's commit,
        as in the transaction it replaces; a duplicate entry id fails the whole statement,
        reservation included, and the caller takes the checked path."""
        batch = _Batch(hashed, {})
        async with self.db.engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            result = await autocommit.execute(
                _APPEND_POSTGRESQL,
                {
                    "n": len(batch.new),
                    "recorded_at": batch.now,
                    "entry_ids": [record.entry_id for record, _, _ in batch.new],
                    "records": [data for _, data, _ in batch.new],
                    "leaves": [leaf for _, _, leaf in batch.new],
                    "citizens": [record.citizen for record, _, _ in batch.new],
                    "levels": [record.level for record, _, _ in batch.new],
                },
            )
            seqs = sorted(int(row[0]) for row in result)
        if len(seqs) != len(batch.new):
            raise RuntimeError(_NO_HEAD)
        return batch.receipts(seqs[0])


_NO_HEAD = "the ledger head row is missing (migration 0003)"
_RESERVE = text("UPDATE audit_head SET size = size + :n WHERE id = 1 RETURNING size")
# Row i of the arrays (1-based ordinality) gets sequence number (new size - n + i - 1).
_APPEND_POSTGRESQL = text(
    """
    WITH head AS (
        UPDATE audit_head SET size = size + CAST(:n AS bigint) WHERE id = 1 RETURNING size
    )
    INSERT INTO audit_entries (seq, entry_id, recorded_at, record, leaf_hash, citizen, level)
    SELECT head.size - CAST(:n AS bigint) + e.position - 1, e.entry_id,
           CAST(:recorded_at AS timestamptz), e.record, e.leaf_hash, e.citizen, e.level
    FROM head, unnest(
        CAST(:entry_ids AS varchar[]), CAST(:records AS bytea[]), CAST(:leaves AS bytea[]),
        CAST(:citizens AS varchar[]), CAST(:levels AS smallint[])
    ) WITH ORDINALITY AS e(entry_id, record, leaf_hash, citizen, level, position)
    RETURNING seq
    """
)


class _Batch:
    """A batch's entries sorted out: those stored before (``known``: id -> seq, leaf, time),
    a repeat of an earlier one in the same batch, and the new ones to insert, in order."""

    def __init__(
        self,
        hashed: list[tuple[AuditRecord, bytes, bytes]],
        known: dict[str, tuple[int, bytes, datetime]],
    ) -> None:
        self.hashed = hashed
        self.now = utcnow()
        self.stored: list[Receipt | None] = []
        self.fresh: dict[str, int] = {}  # entry id -> position among the new rows
        self.new: list[tuple[AuditRecord, bytes, bytes]] = []
        for record, data, leaf in hashed:
            if record.entry_id in known:
                seq, stored_leaf, at = known[record.entry_id]
                self.stored.append(Receipt(record.entry_id, seq, stored_leaf, at, duplicate=True))
            else:
                if record.entry_id not in self.fresh:
                    self.fresh[record.entry_id] = len(self.new)
                    self.new.append((record, data, leaf))
                self.stored.append(None)

    def receipts(self, first_seq: int) -> list[Receipt]:
        """Every entry's receipt, the new ones numbered from ``first_seq``."""
        result: list[Receipt] = []
        answered: set[str] = set()
        for (record, _, _), stored in zip(self.hashed, self.stored, strict=True):
            if stored is None:
                position = self.fresh[record.entry_id]
                stored = Receipt(  # noqa: PLW2901 - filling in the new entry's receipt
                    record.entry_id,
                    first_seq + position,
                    self.new[position][2],
                    self.now,
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
