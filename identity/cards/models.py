"""The ``cards`` table (created by migration 0005) and the card's states.

A card is the durable truth about one physical citizen card or one electronic card on a phone;
its certificate (``certificate_serial``) is the PKI's record, whose status this module keeps in
step (see :mod:`identity.cards.service` for the state machine).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy import text as sql_text
from sqlmodel import Field, SQLModel

from identity.citizens.models import Citizen
from identity.pki.models import IssuedCertificate
from services.kit.sqltypes import utc_column

# The foreign keys below name these tables, so their models must be in the metadata too.
_REFERENCED = (Citizen, IssuedCertificate)

SERIAL_LENGTH = 14  # "C" or "E", 3-digit region, 9 random digits, 1 check digit


class CardKind(StrEnum):
    PHYSICAL = "physical"  # the plastic card with its chip
    ELECTRONIC = "electronic"  # the e-card on the holder's phone, issued against a physical one


class CardStatus(StrEnum):
    ISSUED = "issued"  # personalised and handed over; unusable until the holder activates it
    ACTIVE = "active"
    SUSPENDED = "suspended"  # reported lost (or following its physical card); may be resumed
    REVOKED = "revoked"  # replaced by a new card (final)
    CANCELLED = "cancelled"  # withdrawn for good (final)
    EXPIRED = "expired"  # past its certificate's notAfter (final)


# Statuses a card can leave again. At most one live card of each kind per citizen.
LIVE: tuple[CardStatus, ...] = (CardStatus.ISSUED, CardStatus.ACTIVE, CardStatus.SUSPENDED)
LIVE_SQL = "status IN ('issued', 'active', 'suspended')"


class Card(SQLModel, table=True):
    __tablename__: ClassVar[str] = "cards"
    __table_args__ = (
        CheckConstraint(
            "status IN ('issued', 'active', 'suspended', 'revoked', 'cancelled', 'expired')",
            name="ck_cards_status",
        ),
        CheckConstraint("kind IN ('physical', 'electronic')", name="ck_cards_kind"),
        # An electronic card always follows a physical one; a physical card follows none.
        CheckConstraint(
            "(kind = 'physical' AND parent_serial IS NULL)"
            " OR (kind = 'electronic' AND parent_serial IS NOT NULL)",
            name="ck_cards_parent",
        ),
        # At most one live physical card and one live e-card per citizen, enforced by the
        # database so two desks issuing at once cannot both succeed (partial index: PostgreSQL
        # and SQLite alike).
        Index(
            "uq_cards_citizen_kind_live",
            "citizen_pseudonym",
            "kind",
            unique=True,
            sqlite_where=sql_text(LIVE_SQL),
            postgresql_where=sql_text(LIVE_SQL),
        ),
        UniqueConstraint("certificate_serial", name="uq_cards_certificate_serial"),
        # A key pair is certified for one card only, so a lost card's key can never come back.
        UniqueConstraint("key_id", name="uq_cards_key_id"),
        Index("ix_cards_citizen_pseudonym", "citizen_pseudonym"),
        Index("ix_cards_parent_serial", "parent_serial"),
        # The expiry sweep: live cards by notAfter.
        Index("ix_cards_status_not_after", "status", "not_after"),
        Index("ix_cards_status_changed_at", "status_changed_at"),
    )

    # See service.new_serial: C (physical) or E (electronic), region, random digits, Luhn digit.
    serial: str = Field(sa_column=Column(String(16), primary_key=True))
    # The citizen's pseudonymous id (never the national ID number).
    citizen_pseudonym: str = Field(
        sa_column=Column(String(64), ForeignKey("citizens.pseudonym"), nullable=False)
    )
    # Stored as values (SQLModel would store an Enum's name), matching the CHECK constraints.
    kind: CardKind = Field(sa_column=Column(String(16), nullable=False))
    parent_serial: str | None = Field(
        default=None, sa_column=Column(String(16), ForeignKey("cards.serial"), nullable=True)
    )
    status: CardStatus = Field(sa_column=Column(String(16), nullable=False))
    # The applications the card is enabled for, sorted, space-separated (as in the certificate).
    applications: str = Field(sa_column=Column(Text, nullable=False))
    certificate_serial: str = Field(
        sa_column=Column(String(40), ForeignKey("certificates.serial"), nullable=False)
    )
    # Hex SubjectKeyIdentifier of the card's public key (RFC 5280 section 4.2.1.2 method 1).
    key_id: str = Field(sa_column=Column(String(64), nullable=False))
    # The certificate's notAfter: the card expires with it.
    not_after: datetime = Field(sa_column=utc_column())
    created_at: datetime = Field(sa_column=utc_column())
    activated_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    status_changed_at: datetime = Field(sa_column=utc_column())
    replaced_by: str | None = Field(
        default=None, sa_column=Column(String(16), ForeignKey("cards.serial"), nullable=True)
    )
    # An e-card suspended because its physical card was: it comes back when that card does,
    # unlike an e-card suspended on its own account (the phone was lost).
    held_by_parent: bool = Field(
        default=False,
        sa_column=Column(Boolean, nullable=False, server_default=false()),
    )

    @property
    def application_list(self) -> list[str]:
        return self.applications.split()
