"""The ledger's table (created by migration 0002, append-only by trigger)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, LargeBinary, SmallInteger, String, Text
from sqlmodel import Field, SQLModel

from services.kit.sqltypes import utc_column


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_entries"

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    entry_id: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    recorded_at: datetime = Field(sa_column=utc_column())
    record: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    leaf_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    citizen: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    level: int = Field(sa_column=Column(SmallInteger, nullable=False))


class AuditCheckpoint(SQLModel, table=True):
    """A signed tree head (migration 0004); ``frontier`` resumes the tree at this size."""

    __tablename__ = "audit_checkpoints"

    size: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    root: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    signed_at: datetime = Field(sa_column=utc_column())
    signed: str = Field(sa_column=Column(Text, nullable=False))
    key_id: str = Field(sa_column=Column(String(32), nullable=False))
    frontier: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class CheckpointKey(SQLModel, table=True):
    """The ledger's checkpoint-signing key; the private half is encrypted PKCS#8 PEM."""

    __tablename__ = "audit_checkpoint_keys"

    slot: int = Field(sa_column=Column(SmallInteger, primary_key=True, autoincrement=False))
    key_id: str = Field(sa_column=Column(String(32), nullable=False, unique=True))
    public_key: str = Field(sa_column=Column(Text, nullable=False))
    private_key: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=utc_column())
