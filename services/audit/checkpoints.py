"""The ledger's signed checkpoints: its signing key, signing them regularly, serving proofs.

The signing key is EC P-256 (what ``services.audit.checkpoint`` signs with), kept in the audit
database as encrypted PKCS#8 (RFC 5958, RFC 8018) under a passphrase derived with HKDF
(RFC 5869) from the ``checkpoint_key_encryption_key`` setting. The first ledger process to
start creates it; a second one racing it loses on the single-slot primary key and reads the
winner's.

Every checkpoint row stores the compact frontier of the tree at its size
(``CompactTree.to_bytes``), so the next checkpoint costs only the leaf hashes appended since,
never a reread of the whole ledger. Proofs need every node of a tree: ``TreeCache`` builds a
``MerkleTree`` of a checkpoint's size from the stored leaf hashes (one column, in order) and
keeps a few in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audit.checkpoint import Checkpoint, SignedCheckpoint, key_id_for, sign_checkpoint
from services.audit.merkle import CompactTree, HashAlgorithm, MerkleTree
from services.audit.models import AuditCheckpoint, AuditEntry, CheckpointKey
from services.audit.retention import PrunedMerkleTree, PurgedError, purged_prefix
from services.kit import keystore
from services.kit.database import Database
from services.kit.sqltypes import utcnow

log = logging.getLogger(__name__)

KEY_CONTEXT = b"onecard audit checkpoint-key v1"
READ_CHUNK = 10_000

_entries = AuditEntry.__table__  # type: ignore[attr-defined]
_checkpoints = AuditCheckpoint.__table__  # type: ignore[attr-defined]
_keys = CheckpointKey.__table__  # type: ignore[attr-defined]


class LedgerCorrupt(Exception):
    """The stored entries no longer match a signed checkpoint (tampering or damage)."""


def derive_passphrase(secret: SecretStr) -> bytes:
    """The checkpoint key's PKCS#8 passphrase, under the ledger's own HKDF label."""
    return keystore.derive_passphrase(secret, context=KEY_CONTEXT)


def public_pem(key: ec.EllipticCurvePublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_pem(pem: str) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from SPKI PEM; ValueError for anything else."""
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("a checkpoint key must be an EC P-256 public key")
    return key


@dataclass(frozen=True, slots=True)
class SigningKey:
    private_key: ec.EllipticCurvePrivateKey
    key_id: str

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()


async def load_or_create_key(db: Database, secret: SecretStr) -> SigningKey:
    """The ledger's checkpoint key, created (once, across processes) if there is none."""
    passphrase = derive_passphrase(secret)
    async with db.engine.connect() as conn:
        row = (await conn.execute(select(_keys).where(_keys.c.slot == 1))).first()
    if row is None:
        key = ec.generate_private_key(ec.SECP256R1())
        sealed = keystore.encrypt_private_key(key, passphrase)
        # Another process may insert first: then ours is refused and we read theirs.
        with contextlib.suppress(IntegrityError):
            async with db.engine.begin() as conn:
                await conn.execute(
                    _keys.insert().values(
                        slot=1,
                        key_id=key_id_for(key.public_key()),
                        public_key=public_pem(key.public_key()),
                        private_key=sealed,
                        created_at=utcnow(),
                    )
                )
        async with db.engine.connect() as conn:
            row = (await conn.execute(select(_keys).where(_keys.c.slot == 1))).one()
    try:
        private = keystore.decrypt_private_key(row.private_key, passphrase)
    except ValueError:
        raise RuntimeError(
            "the checkpoint key cannot be decrypted: wrong checkpoint_key_encryption_key "
            "or a corrupt row"
        ) from None
    if key_id_for(private.public_key()) != row.key_id:
        raise RuntimeError("the stored checkpoint key does not match its key id")
    return SigningKey(private, row.key_id)


async def public_keys(conn: AsyncConnection) -> dict[str, ec.EllipticCurvePublicKey]:
    """Every checkpoint key the ledger has used, by key id."""
    rows = await conn.execute(select(_keys.c.key_id, _keys.c.public_key))
    return {r.key_id: load_public_pem(r.public_key) for r in rows}


async def latest_checkpoint(conn: AsyncConnection) -> SignedCheckpoint | None:
    row = (
        await conn.execute(select(_checkpoints.c.signed).order_by(_checkpoints.c.size.desc()))
    ).first()
    return None if row is None else SignedCheckpoint.from_json(row.signed)


async def checkpoint_at(conn: AsyncConnection, size: int) -> SignedCheckpoint | None:
    row = (
        await conn.execute(select(_checkpoints.c.signed).where(_checkpoints.c.size == size))
    ).first()
    return None if row is None else SignedCheckpoint.from_json(row.signed)


class Checkpointer:
    """Signs a checkpoint of the ledger whenever it grew (one process or several)."""

    def __init__(
        self, db: Database, key: SigningKey, *, origin: str, algorithm: HashAlgorithm
    ) -> None:
        self.db = db
        self.key = key
        self.origin = origin
        self.algorithm = algorithm
        self._task: asyncio.Task[None] | None = None

    async def checkpoint_once(self) -> SignedCheckpoint | None:
        """Sign the tree as it is now; None when it has not grown since the last checkpoint."""
        async with self.db.engine.connect() as conn:
            head = await conn.scalar(text("SELECT size FROM audit_head WHERE id = 1"))
            last = (
                await conn.execute(
                    select(_checkpoints.c.frontier).order_by(_checkpoints.c.size.desc()).limit(1)
                )
            ).first()
            tree = (
                CompactTree(algorithm=self.algorithm)
                if last is None
                else CompactTree.from_bytes(bytes(last.frontier), algorithm=self.algorithm)
            )
            size = int(head or 0)
            if size <= tree.size:
                return None
            # Rows below the committed head are committed (the head moves in their batch).
            while tree.size < size:
                rows = await conn.execute(
                    select(_entries.c.seq, _entries.c.leaf_hash)
                    .where(_entries.c.seq >= tree.size, _entries.c.seq < size)
                    .order_by(_entries.c.seq)
                    .limit(READ_CHUNK)
                )
                before = tree.size
                for row in rows:
                    if row.seq != tree.size:
                        raise LedgerCorrupt(f"entry {tree.size} is missing below the head {size}")
                    tree.append(bytes(row.leaf_hash))
                if tree.size == before:
                    raise LedgerCorrupt(f"entry {tree.size} is missing below the head {size}")
        now = utcnow()
        checkpoint = Checkpoint(
            origin=self.origin,
            size=tree.size,
            root=tree.root(),
            timestamp_ms=int(now.timestamp() * 1000),
            algorithm=self.algorithm,
        )
        signed = sign_checkpoint(checkpoint, self.key.private_key, self.key.key_id)
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(
                    _checkpoints.insert().values(
                        size=checkpoint.size,
                        root=checkpoint.root,
                        signed_at=now,
                        signed=signed.to_json(),
                        key_id=self.key.key_id,
                        frontier=tree.to_bytes(),
                    )
                )
        except IntegrityError:
            return None  # another ledger process signed this size first
        return signed

    async def run_forever(self, interval: float) -> None:
        while True:
            try:
                signed = await self.checkpoint_once()
            except Exception:  # keep signing later; the error is logged for the operator
                log.exception("audit checkpoint not signed")
            else:
                if signed is not None:
                    log.info("audit checkpoint signed", extra={"size": signed.checkpoint.size})
            await asyncio.sleep(interval)

    def start(self, interval: float) -> None:
        self._task = asyncio.create_task(self.run_forever(interval), name="audit-checkpointer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class TreeCache:
    """Full Merkle trees of checkpoint sizes, a few at a time, for cheap repeated proofs."""

    def __init__(
        self,
        db: Database,
        *,
        algorithm: HashAlgorithm,
        max_trees: int = 4,
        max_leaves: int = 4_000_000,
    ) -> None:
        self.db = db
        self.algorithm = algorithm
        self.max_trees = max_trees
        self.max_leaves = max_leaves
        self._trees: OrderedDict[int, MerkleTree] = OrderedDict()
        self._lock = asyncio.Lock()

    async def tree(self, checkpoint: SignedCheckpoint) -> MerkleTree:
        """The tree of ``checkpoint``'s size, checked against its signed root."""
        size = checkpoint.checkpoint.size
        async with self._lock:
            tree = self._trees.get(size)
            if tree is None:
                tree = await self._build(checkpoint)
                self._trees[size] = tree
                while len(self._trees) > 1 and (
                    len(self._trees) > self.max_trees
                    or sum(t.size for t in self._trees.values()) > self.max_leaves
                ):
                    self._trees.popitem(last=False)
            else:
                self._trees.move_to_end(size)
            return tree

    async def _build(self, checkpoint: SignedCheckpoint) -> MerkleTree:
        size = checkpoint.checkpoint.size
        leaves: list[bytes] = []
        async with self.db.engine.connect() as conn:
            # After a purge the tree stands on the purge's frontier (services.audit.retention).
            prefix = await purged_prefix(conn, algorithm=self.algorithm)
            start = 0 if prefix is None else prefix.size
            if size < start:
                raise PurgedError(f"checkpoint {size} lies in the purged prefix (below {start})")
            result = await conn.stream(
                select(_entries.c.leaf_hash)
                .where(_entries.c.seq >= start, _entries.c.seq < size)
                .order_by(_entries.c.seq)
            )
            async for partition in result.partitions(READ_CHUNK):
                leaves.extend(bytes(r.leaf_hash) for r in partition)
        tree: MerkleTree = await (
            asyncio.to_thread(MerkleTree, leaves, algorithm=self.algorithm)
            if prefix is None
            else asyncio.to_thread(PrunedMerkleTree, prefix.tree, leaves)
        )
        if tree.size != size or tree.root() != checkpoint.checkpoint.root:
            raise LedgerCorrupt(
                f"the stored entries no longer match signed checkpoint {size}; "
                "an auditor should run `onecard audit verify`"
            )
        return tree
