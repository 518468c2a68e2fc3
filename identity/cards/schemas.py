"""What crosses the wire for cards: requests carry a CSR made on the card, never a key."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from identity.cards.models import CardKind, CardStatus
from identity.pki.certificates import MAX_CSR_BYTES
from identity.scopes import APPLICATIONS

Application = Literal[
    "health", "medical_insurance", "social_security", "pension", "transit", "library"
]
# One list of applications (identity.scopes); this Literal only gives the OpenAPI enum.
assert set(get_args(Application)) == set(APPLICATIONS)

# C (physical) or E (electronic), 3-digit region, 9 random digits, Luhn check digit.
SERIAL_PATTERN = r"^[CE][0-9]{13}$"
_CSR_EXAMPLE = (
    "-----BEGIN CERTIFICATE REQUEST-----\nMIIBDjCBtQIBADBT...\n-----END CERTIFICATE REQUEST-----\n"
)
_CSR_DESCRIPTION = (
    "PEM PKCS#10 request (RFC 2986) made by the card (or phone) with the key pair it generated; "
    "EC P-256, ECDSA with SHA-2, subject CN = the citizen's pseudonymous id"
)


def _unique_sorted(applications: list[str]) -> list[str]:
    return sorted(set(applications))


class CardIssue(BaseModel):
    """A registration desk issuing a physical card to a citizen."""

    model_config = ConfigDict(extra="forbid")

    citizen: str = Field(
        min_length=1, max_length=64, description="The citizen's pseudonymous id (token `sub`)"
    )
    applications: list[Application] = Field(
        min_length=1, max_length=16, description="The applications the card is enabled for"
    )
    csr: str = Field(
        min_length=1,
        max_length=MAX_CSR_BYTES,
        description=_CSR_DESCRIPTION,
        examples=[_CSR_EXAMPLE],
    )

    @field_validator("applications")
    @classmethod
    def _unique(cls, applications: list[str]) -> list[str]:
        return _unique_sorted(applications)


class CardReplace(BaseModel):
    """A new card for a lost, stolen or damaged one; the old one is revoked."""

    model_config = ConfigDict(extra="forbid")

    csr: str = Field(min_length=1, max_length=MAX_CSR_BYTES, description=_CSR_DESCRIPTION)
    applications: list[Application] | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        description="The new card's applications; default: the old card's",
    )

    @field_validator("applications")
    @classmethod
    def _unique(cls, applications: list[str] | None) -> list[str] | None:
        return None if applications is None else _unique_sorted(applications)


class ElectronicCardIssue(BaseModel):
    """An electronic card for the holder's phone, against an active physical card."""

    model_config = ConfigDict(extra="forbid")

    csr: str = Field(
        min_length=1,
        max_length=MAX_CSR_BYTES,
        description=_CSR_DESCRIPTION.replace("the card (or phone)", "the phone"),
    )


class CardPublic(BaseModel):
    """A card as the desk, the mobile app and the services see it."""

    serial: str = Field(examples=["C0001234567897"])
    kind: CardKind
    citizen: str = Field(description="The holder's pseudonymous id")
    parent: str | None = Field(description="For an electronic card: the physical card it follows")
    status: CardStatus = Field(
        description="As of now: a card past its expiry reads expired even before the sweep"
    )
    held_by_parent: bool = Field(
        description="Suspended only because its physical card is (comes back with it)"
    )
    applications: list[str]
    certificate_serial: str = Field(description="Hex serial of the card's certificate")
    not_after: datetime = Field(description="Expiry (the certificate's notAfter)")
    created_at: datetime
    activated_at: datetime | None
    status_changed_at: datetime
    replaced_by: str | None = Field(description="The card that replaced this one, if any")


class CardIssued(CardPublic):
    """A card just issued, with the certificate to write onto it."""

    certificate: str = Field(description="The card's X.509 certificate, PEM")
