"""Tables of the card PKI: CA keys, issued certificates (the truth about status), CRLs."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import text as sql_text
from sqlmodel import Field, SQLModel


def as_utc(value: datetime) -> datetime:
    """SQLite hands timestamps back naive; every one we store is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class CaRole(StrEnum):
    ROOT = "root"
    ISSUING = "issuing"


class CaStatus(StrEnum):
    CURRENT = "current"  # signs new certificates
    NEXT = "next"  # published ahead of a rollover, signs nothing yet
    RETIRED = "retired"  # signs no new certificates; still signs CRL/OCSP for its own cards


class CertificateKind(StrEnum):
    CARD = "card"
    TERMINAL = "terminal"


class CertificateStatus(StrEnum):
    GOOD = "good"
    SUSPENDED = "suspended"  # RFC 5280 section 5.3.1 certificateHold: may be resumed
    REVOKED = "revoked"  # final


class CrlKind(StrEnum):
    FULL = "full"
    DELTA = "delta"


def _timestamp(*, nullable: bool = False, index: bool = False) -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=nullable, index=index)


class CaKey(SQLModel, table=True):
    """A CA certificate and its private key, encrypted at rest (PKCS#8, see keystore.py)."""

    __tablename__: ClassVar[str] = "ca_keys"
    __table_args__ = (
        # At most one current and one next CA per role. This index is what makes first start-up
        # race-safe on PostgreSQL and SQLite alike: the loser's INSERT fails and it loads the
        # winner's CA instead of minting a second root.
        Index(
            "uq_ca_keys_role_live_status",
            "role",
            "status",
            unique=True,
            sqlite_where=sql_text("status IN ('current', 'next')"),
            postgresql_where=sql_text("status IN ('current', 'next')"),
        ),
    )

    # Hex SubjectKeyIdentifier (RFC 5280 section 4.2.1.2 method 1): the AuthorityKeyIdentifier
    # of every certificate this CA signs, so a chain is built by one lookup.
    kid: str = Field(sa_column=Column(String(64), primary_key=True))
    role: CaRole = Field(sa_column=Column(String(16), nullable=False))
    status: CaStatus = Field(sa_column=Column(String(16), nullable=False))
    subject: str = Field(sa_column=Column(String(512), nullable=False))
    issuer_kid: str | None = Field(
        default=None, sa_column=Column(String(64), ForeignKey("ca_keys.kid"), nullable=True)
    )
    certificate_pem: str = Field(sa_column=Column(Text, nullable=False))
    encrypted_key_pem: str = Field(sa_column=Column(Text, nullable=False))
    not_before: datetime = Field(sa_column=_timestamp())
    not_after: datetime = Field(sa_column=_timestamp())
    created_at: datetime = Field(sa_column=_timestamp())
    # Number of the last CRL (full or delta) this CA issued; one sequence for both kinds
    # (RFC 5280 section 5.2.4).
    crl_number: int = 0
    # Bumped by every status change of a certificate this CA issued: a stored CRL whose
    # snapshot is older than this is stale.
    status_version: int = 0

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.certificate_pem.encode())


class IssuedCertificate(SQLModel, table=True):
    """Every card and terminal certificate we issued; the source of truth for its status."""

    __tablename__: ClassVar[str] = "certificates"
    __table_args__ = (
        Index("ix_certificates_issuer_change", "issuer_kid", "crl_number_at_change"),
        Index("ix_certificates_issuer_status", "issuer_kid", "status"),
    )

    # Lower-case hex, zero-padded to 40 digits (serials are at most 20 octets, RFC 5280
    # section 4.1.2.2).
    serial: str = Field(sa_column=Column(String(40), primary_key=True))
    kind: CertificateKind = Field(sa_column=Column(String(16), nullable=False))
    # The citizen's pseudonymous id (never a national ID number) or the terminal id.
    subject_id: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    # The card serial, or the terminal id for a terminal.
    device_serial: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    issuer_kid: str = Field(sa_column=Column(String(64), ForeignKey("ca_keys.kid"), nullable=False))
    not_before: datetime = Field(sa_column=_timestamp())
    not_after: datetime = Field(sa_column=_timestamp())
    der: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    status: CertificateStatus = Field(sa_column=Column(String(16), nullable=False))
    # An x509.ReasonFlags value (RFC 5280 section 5.3.1), e.g. "certificateHold".
    revocation_reason: str | None = Field(default=None, sa_column=Column(String(32)))
    revoked_at: datetime | None = Field(default=None, sa_column=_timestamp(nullable=True))
    # The issuer's CRL number when the status last changed: a delta CRL on base N looks only
    # at certificates whose number is >= N (changed after, or while, N was being issued).
    crl_number_at_change: int | None = None
    created_at: datetime = Field(sa_column=_timestamp())
    updated_at: datetime = Field(sa_column=_timestamp())

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def serial_number(self) -> int:
        return int(self.serial, 16)


class Crl(SQLModel, table=True):
    """A CRL as issued and signed; served again until a status change makes it stale."""

    __tablename__: ClassVar[str] = "crls"
    __table_args__ = (
        # Two processes issuing at once cannot both publish number N (the loser retries).
        UniqueConstraint("issuer_kid", "number", name="uq_crls_issuer_number"),
        Index("ix_crls_issuer_kind_number", "issuer_kid", "kind", "number"),
    )

    id: int | None = Field(default=None, primary_key=True)
    issuer_kid: str = Field(sa_column=Column(String(64), ForeignKey("ca_keys.kid"), nullable=False))
    kind: CrlKind = Field(sa_column=Column(String(8), nullable=False))
    number: int
    # For a delta CRL, the number of the full CRL it is relative to (DeltaCRLIndicator).
    base_number: int | None = None
    # The issuer's status_version this CRL reflects.
    status_version: int
    this_update: datetime = Field(sa_column=_timestamp())
    next_update: datetime = Field(sa_column=_timestamp())
    der: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
