"""Refresh tokens a session has rotated past: presenting one again is reuse."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from services.kit.sqltypes import utc_column


class RotatedRefreshToken(SQLModel, table=True):
    __tablename__ = "rotated_refresh_tokens"

    # SHA-256 (hex) of a refresh token that was valid once; the token itself is never stored.
    token_hash: str = Field(primary_key=True, max_length=64)
    sid: str = Field(foreign_key="sessions.sid", index=True, max_length=64)
    generation: int
    rotated_at: datetime = Field(sa_column=utc_column())
