"""What crosses the wire at terminals: registration, challenges, the card's answer, tokens."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from identity.scopes import PURPOSES
from identity.terminals.cards import MAX_CERTIFICATE_CHARS, NONCE_PATTERN

APP_PURPOSE = "mobile_app"
# Base64 of a DER ECDSA P-256 signature (at most 72 bytes), either alphabet.
_SIGNATURE_PATTERN = r"^[A-Za-z0-9+/_-]{8,96}={0,2}$"


class TerminalCreate(BaseModel):
    """A terminal to register; its key pair was generated on the terminal (the CSR proves it)."""

    model_config = ConfigDict(extra="forbid")

    facility: str = Field(
        min_length=1,
        max_length=64,
        description="Where the terminal stands (becomes O= of its certificate)",
        examples=["Provincial People's Hospital"],
    )
    purpose: str = Field(
        description="What the counter is for: a key of the platform's purposes",
        examples=["registration_desk"],
    )
    csr: str = Field(
        min_length=1,
        max_length=16 * 1024,
        description="PEM PKCS#10 request (RFC 2986) for the terminal's EC P-256 key",
    )
    name: str | None = Field(
        default=None, min_length=1, max_length=200, description="Default: purpose at facility"
    )

    @field_validator("facility")
    @classmethod
    def _plain_facility(cls, facility: str) -> str:
        # As the certificate will carry it (O=), so the client record and the certificate agree.
        facility = facility.strip()
        if not facility or not facility.isprintable():
            raise ValueError("facility must be 1-64 printable characters")
        return facility

    @field_validator("purpose")
    @classmethod
    def _terminal_purpose(cls, purpose: str) -> str:
        if purpose == APP_PURPOSE:
            raise ValueError("mobile_app is the citizen's own phone, not a registered terminal")
        if purpose not in PURPOSES:
            allowed = ", ".join(sorted(p for p in PURPOSES if p != APP_PURPOSE))
            raise ValueError(f"unknown purpose; one of {allowed}")
        return purpose


class TerminalPublic(BaseModel):
    terminal_id: str = Field(description="The terminal's client id and certificate CN")
    name: str
    facility: str | None
    purpose: str
    application: str = Field(description="The card application a tap here needs")
    scopes: list[str] = Field(description="What the terminal's own token may hold")
    kid: str = Field(description="Key id of its registered key: the RFC 7638 thumbprint")
    certificate_serial: str | None
    certificate: str | None = Field(description="The terminal certificate, PEM")
    active: bool
    created_at: datetime


class Challenge(BaseModel):
    """A Web eID style challenge: the card signs a hash of domain, terminal id and nonce."""

    nonce: str = Field(description="256 random bits, unpadded base64url; single use")
    expires_in: int = Field(description="Seconds the nonce may be answered in")
    domain: str = Field(description="The origin the card binds its signature to")
    terminal_id: str = Field(description="The terminal id the card binds its signature to")


class CardAnswer(BaseModel):
    """The card's answer to a challenge, as the terminal forwards it."""

    model_config = ConfigDict(extra="forbid")

    nonce: str = Field(pattern=NONCE_PATTERN, description="The nonce of the challenge")
    certificate: str = Field(
        min_length=1,
        max_length=MAX_CERTIFICATE_CHARS,
        description="The card's certificate, PEM or base64 DER",
    )
    signature: str = Field(
        pattern=_SIGNATURE_PATTERN,
        description="Base64 DER ECDSA signature over identity.protocol.challenge_digest",
    )
    # Strict: "true" or 1 must not pass for the statement that grants two-factor assurance.
    pin_verified: StrictBool = Field(description="The card verified the holder's PIN")


class QrRedemption(BaseModel):
    model_config = ConfigDict(extra="forbid")

    qr: str = Field(min_length=1, max_length=4096, description="The scanned QR payload (a JWT)")


class TokenResponse(BaseModel):
    """RFC 6749 section 5.1."""

    access_token: str
    token_type: str = "Bearer"  # noqa: S105 - a token type name, not a secret
    expires_in: int
    scope: str
