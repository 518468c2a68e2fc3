"""The ledger's HTTP surface: platform services append; auditors and citizens read."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlmodel import col, select

from services.audit.ledger import Ledger, Receipt
from services.audit.models import AuditEntry
from services.audit.records import AuditRecord
from services.kit.auth import require_token
from services.kit.deps import SessionDep
from services.kit.errors import Problem
from services.kit.tokens import AccessToken

router = APIRouter(prefix="/audit", tags=["audit"])

MAX_SUBMISSION = 500
# Only platform services hold this scope (their clients are registered with it): forged
# submissions from outside the platform are refused by the token check itself.
Appender = Annotated[AccessToken, Depends(require_token("audit.append"))]
Auditor = Annotated[AccessToken, Depends(require_token("audit.read"))]
Citizen = Annotated[AccessToken, Depends(require_token("audit.self"))]


class Submission(BaseModel):
    entries: list[AuditRecord] = Field(min_length=1, max_length=MAX_SUBMISSION)


class ReceiptPublic(BaseModel):
    entry_id: str
    seq: int
    leaf_hash: str
    recorded_at: datetime
    duplicate: bool

    @classmethod
    def of(cls, receipt: Receipt) -> ReceiptPublic:
        return cls(
            entry_id=receipt.entry_id,
            seq=receipt.seq,
            leaf_hash=receipt.leaf_hash.hex(),
            recorded_at=receipt.recorded_at,
            duplicate=receipt.duplicate,
        )


class Receipts(BaseModel):
    receipts: list[ReceiptPublic]


class EntryPublic(BaseModel):
    seq: int
    recorded_at: datetime
    leaf_hash: str
    record: dict[str, Any]

    @classmethod
    def of(cls, entry: AuditEntry) -> EntryPublic:
        return cls(
            seq=entry.seq,
            recorded_at=entry.recorded_at,
            leaf_hash=bytes(entry.leaf_hash).hex(),
            record=orjson.loads(entry.record),
        )


def _ledger(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


LedgerDep = Annotated[Ledger, Depends(_ledger)]


@router.post("/entries", status_code=201, summary="Append audit entries; returns once durable")
async def append_entries(submission: Submission, ledger: LedgerDep, _: Appender) -> Receipts:
    receipts = await ledger.append_many(submission.entries)
    return Receipts(receipts=[ReceiptPublic.of(r) for r in receipts])


@router.get("/entries/{seq}", summary="One entry, as stored and hashed (auditors)")
async def read_entry(seq: int, session: SessionDep, _: Auditor) -> EntryPublic:
    entry = await session.get(AuditEntry, seq)
    if entry is None:
        raise Problem(404, f"no audit entry {seq}")
    return EntryPublic.of(entry)


@router.get("/me", summary="Who accessed my data: the citizen's own access log, newest first")
async def my_access_log(
    session: SessionDep,
    token: Citizen,
    before: Annotated[int | None, Query(ge=0, description="entries before this seq")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[EntryPublic]:
    query = select(AuditEntry).where(col(AuditEntry.citizen) == token.sub)
    if before is not None:
        query = query.where(col(AuditEntry.seq) < before)
    rows = await session.exec(query.order_by(col(AuditEntry.seq).desc()).limit(limit))
    return [EntryPublic.of(e) for e in rows.all()]
