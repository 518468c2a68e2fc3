"""The ledger's HTTP surface: platform services append; auditors and citizens read."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlmodel import col, select

from services.audit.checkpoint import SignedCheckpoint
from services.audit.checkpoints import (
    LedgerCorrupt,
    SigningKey,
    TreeCache,
    checkpoint_at,
    latest_checkpoint,
    public_pem,
)
from services.audit.ledger import Ledger, Receipt
from services.audit.merkle import MerkleTree
from services.audit.models import AuditEntry
from services.audit.retention import PurgedError
from services.kit.audit_record import AuditRecord
from services.kit.auth import require_token
from services.kit.deps import SessionDep
from services.kit.errors import Problem
from services.kit.protection import protection_guard
from services.kit.tokens import AccessToken, public_jwk

# Defence in depth: the same graded-protection table the gateway enforces (issue 4).
router = APIRouter(prefix="/audit", tags=["audit"], dependencies=[Depends(protection_guard())])

MAX_SUBMISSION = 500
# Only platform services hold this scope (their clients are registered with it): forged
# submissions from outside the platform are refused by the token check itself.
Appender = Annotated[AccessToken, Depends(require_token("audit.append"))]
Auditor = Annotated[AccessToken, Depends(require_token("audit.read"))]
Citizen = Annotated[AccessToken, Depends(require_token("audit.self"))]
# Inclusion proofs: an auditor (audit.read) for any entry, a citizen (audit.self) for their own.
AnyToken = Annotated[AccessToken, Depends(require_token())]


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


class SignedCheckpointPublic(BaseModel):
    """C2SP checkpoint fields; ``root`` and ``signature`` (DER ECDSA P-256) in base64."""

    origin: str
    size: int
    root: str
    timestamp_ms: int
    algorithm: str
    key_id: str
    signature: str

    @classmethod
    def of(cls, signed: SignedCheckpoint) -> SignedCheckpointPublic:
        return cls.model_validate(signed.to_dict())


class CheckpointKeyPublic(BaseModel):
    """The key that signs checkpoints: verify them offline with either form."""

    key_id: str
    algorithm: str = "ES256"
    public_key_pem: str
    jwk: dict[str, str]


class InclusionPublic(BaseModel):
    """RFC 9162 audit path of leaf ``seq`` (hex, leaf side first) in the checkpoint's tree."""

    seq: int
    leaf_hash: str
    tree_size: int
    proof: list[str]
    checkpoint: SignedCheckpointPublic


class ConsistencyPublic(BaseModel):
    """RFC 9162 consistency proof (hex) that checkpoint ``old`` is a prefix of ``new``."""

    old: SignedCheckpointPublic
    new: SignedCheckpointPublic
    proof: list[str]


class AccessLogEntry(EntryPublic):
    # None while the entry is not yet covered by a signed checkpoint (within seconds).
    inclusion: InclusionPublic | None = None


def _inclusion(
    tree: MerkleTree, signed: SignedCheckpoint, seq: int, leaf: bytes
) -> InclusionPublic:
    return InclusionPublic(
        seq=seq,
        leaf_hash=leaf.hex(),
        tree_size=tree.size,
        proof=[h.hex() for h in tree.inclusion_proof(seq)],
        checkpoint=SignedCheckpointPublic.of(signed),
    )


async def _tree(trees: TreeCache, signed: SignedCheckpoint) -> MerkleTree:
    try:
        return await trees.tree(signed)
    except PurgedError as exc:
        # Retention (services.audit.retention): that part of the tree now lives in an export.
        raise Problem(410, str(exc)) from None
    except LedgerCorrupt as exc:
        raise Problem(500, str(exc)) from None


async def _ledger(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


LedgerDep = Annotated[Ledger, Depends(_ledger)]


async def _trees(request: Request) -> TreeCache:
    trees: TreeCache = request.app.state.trees
    return trees


async def _key(request: Request) -> SigningKey:
    key: SigningKey = request.app.state.checkpoint_key
    return key


TreesDep = Annotated[TreeCache, Depends(_trees)]
KeyDep = Annotated[SigningKey, Depends(_key)]


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


@router.get(
    "/entries/{seq}/proof",
    summary="Inclusion proof of an entry in a signed checkpoint (auditors; a citizen: own)",
)
async def entry_proof(
    seq: int,
    session: SessionDep,
    trees: TreesDep,
    token: AnyToken,
    size: Annotated[
        int | None, Query(ge=1, description="checkpoint size; default the latest")
    ] = None,
) -> InclusionPublic:
    entry = await session.get(AuditEntry, seq)
    if token.missing_scopes(("audit.read",)):
        if token.missing_scopes(("audit.self",)):
            raise Problem(403, "token lacks scope audit.read (or audit.self for your own entries)")
        if entry is None or entry.citizen != token.sub:
            raise Problem(403, f"audit entry {seq} is not about you")
    if entry is None:
        raise Problem(404, f"no audit entry {seq}")
    conn = await session.connection()
    signed = await (latest_checkpoint(conn) if size is None else checkpoint_at(conn, size))
    if signed is None:
        raise Problem(404, "no checkpoint yet" if size is None else f"no checkpoint of size {size}")
    if seq >= signed.checkpoint.size:
        raise Problem(
            404,
            f"audit entry {seq} is not in the checkpoint of size {signed.checkpoint.size}; "
            "a later checkpoint will cover it",
        )
    tree = await _tree(trees, signed)
    return _inclusion(tree, signed, seq, bytes(entry.leaf_hash))


@router.get("/consistency", summary="Consistency proof between two checkpoints (public)")
async def consistency(
    session: SessionDep,
    trees: TreesDep,
    old: Annotated[int, Query(ge=1, description="size of the older checkpoint")],
    new: Annotated[int, Query(ge=1, description="size of the newer checkpoint")],
) -> ConsistencyPublic:
    if old > new:
        raise Problem(400, f"old ({old}) must not be larger than new ({new})")
    old_signed = await checkpoint_at(await session.connection(), old)
    if old_signed is None:
        raise Problem(404, f"no checkpoint of size {old}")
    new_signed = await checkpoint_at(await session.connection(), new)
    if new_signed is None:
        raise Problem(404, f"no checkpoint of size {new}")
    tree = await _tree(trees, new_signed)
    try:
        proof = tree.consistency_proof(old)
    except PurgedError:
        raise Problem(
            410, f"checkpoint {old} precedes the purged entries; their export proves it"
        ) from None
    return ConsistencyPublic(
        old=SignedCheckpointPublic.of(old_signed),
        new=SignedCheckpointPublic.of(new_signed),
        proof=[h.hex() for h in proof],
    )


@router.get("/checkpoints/key", summary="The public key that signs checkpoints (public)")
async def checkpoint_key(key: KeyDep) -> CheckpointKeyPublic:
    return CheckpointKeyPublic(
        key_id=key.key_id,
        public_key_pem=public_pem(key.public_key),
        jwk=public_jwk(key.public_key, key.key_id),
    )


@router.get("/checkpoints/latest", summary="The latest signed checkpoint (public)")
async def checkpoint_latest(session: SessionDep) -> SignedCheckpointPublic:
    signed = await latest_checkpoint(await session.connection())
    if signed is None:
        raise Problem(404, "no checkpoint yet")
    return SignedCheckpointPublic.of(signed)


@router.get("/checkpoints/{size}", summary="The signed checkpoint of a tree size (public)")
async def checkpoint_of_size(size: int, session: SessionDep) -> SignedCheckpointPublic:
    signed = await checkpoint_at(await session.connection(), size)
    if signed is None:
        raise Problem(404, f"no checkpoint of size {size}")
    return SignedCheckpointPublic.of(signed)


@router.get(
    "/me",
    summary="Who accessed my data: the citizen's own access log, newest first, with proofs",
)
async def my_access_log(
    session: SessionDep,
    trees: TreesDep,
    token: Citizen,
    before: Annotated[int | None, Query(ge=0, description="entries before this seq")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[AccessLogEntry]:
    query = select(AuditEntry).where(col(AuditEntry.citizen) == token.sub)
    if before is not None:
        query = query.where(col(AuditEntry.seq) < before)
    rows = (await session.exec(query.order_by(col(AuditEntry.seq).desc()).limit(limit))).all()
    signed = await latest_checkpoint(await session.connection())
    covered = signed is not None and any(e.seq < signed.checkpoint.size for e in rows)
    tree = await _tree(trees, signed) if covered and signed is not None else None
    log = []
    for entry in rows:
        item = AccessLogEntry(**EntryPublic.of(entry).model_dump())
        if tree is not None and signed is not None and entry.seq < tree.size:
            item.inclusion = _inclusion(tree, signed, entry.seq, bytes(entry.leaf_hash))
        log.append(item)
    return log
