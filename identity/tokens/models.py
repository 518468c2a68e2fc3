"""Tables of the token server: signing keys, sessions, revoked tokens."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, Index, String, text
from sqlmodel import Field, SQLModel

from services.kit.sqltypes import utc_column


class KeyStatus(StrEnum):
    NEXT = "next"  # published in the JWKS before it signs, so verifiers already know it
    CURRENT = "current"  # signs every new token
    RETIRED = "retired"  # signs nothing; published until the last token it signed expires


class SigningKey(SQLModel, table=True):
    __tablename__ = "signing_keys"
    __table_args__ = (
        # At most one current and one next key, enforced by the database so that two identity
        # processes rotating at once cannot both win.
        Index(
            "uq_signing_keys_live_status",
            "status",
            unique=True,
            sqlite_where=text("status IN ('current', 'next')"),
            postgresql_where=text("status IN ('current', 'next')"),
        ),
    )

    kid: str = Field(primary_key=True, max_length=64)
    # Stored as its value (SQLModel would store an Enum's name), matching the CHECK constraint.
    status: KeyStatus = Field(sa_column=Column(String(16), nullable=False))
    # PKCS#8 PEM encrypted with the key-encryption key (never stored in clear).
    private_key_pem: str
    # SubjectPublicKeyInfo PEM, so publishing the JWKS needs no decryption.
    public_key_pem: str
    created_at: datetime = Field(sa_column=utc_column())
    activated_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    retired_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


class Session(SQLModel, table=True):
    """A mobile-app login: its refresh token rotates; reusing an old one ends the session."""

    __tablename__ = "sessions"

    sid: str = Field(primary_key=True, max_length=64)
    subject: str = Field(index=True, max_length=64)
    client_id: str = Field(max_length=64)
    card_serial: str | None = Field(default=None, max_length=64)
    scope: str
    acr: str = Field(max_length=4)
    amr: str = Field(max_length=64)
    # SHA-256 of the one refresh token that is valid now (the token itself is never stored).
    refresh_token_hash: str = Field(max_length=64, unique=True)
    generation: int = 0
    created_at: datetime = Field(sa_column=utc_column())
    expires_at: datetime = Field(sa_column=utc_column())
    ended_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    end_reason: str | None = Field(default=None, max_length=40)


class RevokedToken(SQLModel, table=True):
    """The durable truth behind the revoked-jti keys in Redis (RFC 7009)."""

    __tablename__ = "revoked_tokens"

    jti: str = Field(primary_key=True, max_length=64)
    expires_at: datetime = Field(sa_column=utc_column(index=True))
    revoked_at: datetime = Field(sa_column=utc_column())
