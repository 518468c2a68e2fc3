"""Registered clients: hospital systems, card terminals, administrators (RFC 7591 metadata)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Column, String
from sqlmodel import Field, SQLModel

from services.kit.sqltypes import utc_column


class ClientKind(StrEnum):
    HOSPITAL = "hospital"  # SMART Backend Services: a hospital system acting as an institution
    TERMINAL = "terminal"  # a registered card terminal (registration desk, pharmacy, bus, ...)
    ADMIN = "admin"  # an administrator's client (system, security or audit administrator)
    SERVICE = "service"  # a platform service (gateway, health, ...): appends to the audit ledger


class Client(SQLModel, table=True):
    __tablename__ = "clients"

    client_id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    kind: ClientKind = Field(sa_column=Column(String(16), nullable=False))
    # The client's public key as an EC P-256 JWK (RFC 7517); it signs its assertions (RFC 7523).
    jwk: dict[str, str] = Field(sa_column=Column(JSON, nullable=False))
    # Space-separated scopes this client may be granted (SMART v2 and platform scopes).
    allowed_scopes: str
    facility: str | None = Field(default=None, max_length=200)
    # For terminals: what they are for (registration_desk, pharmacy, bus, ...).
    purpose: str | None = Field(default=None, max_length=40)
    certificate_serial: str | None = Field(default=None, max_length=64)
    active: bool = True
    created_at: datetime = Field(sa_column=utc_column())
