"""The ledger's table (created by migration 0002, append-only by trigger)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, LargeBinary, SmallInteger, String
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
