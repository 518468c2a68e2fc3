"""What a card sends at a tap, read and checked: its certificate and its signature.

Nothing here touches storage: the service decides on status, nonces and locks. The certificate
arrives as PEM or as base64 DER (a terminal forwards what it read from the card); its
SHA-256 fingerprint keys the cache of verified certificates. The signature is the card's DER
ECDSA signature over :func:`identity.protocol.challenge_digest` (Web eID: the card signs a hash
binding the nonce to our domain and to the terminal that asked, never the bare nonce).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from identity.pki.certificates import (
    card_applications,
    card_pseudonym,
    card_serial_of,
    certificate_kind,
    serial_hex,
)
from identity.pki.models import CertificateKind
from identity.protocol import NONCE_BYTES, challenge_digest
from services.kit.tokens import public_jwk

# A card certificate is about 800 bytes of DER; 8 KiB of text is generous for PEM.
MAX_CERTIFICATE_CHARS = 8 * 1024
# DER ECDSA P-256: SEQUENCE { INTEGER r, INTEGER s }, each at most 33 octets: 72 in all.
MAX_SIGNATURE_BYTES = 72
NONCE_CHARS = 43  # 32 bytes in unpadded base64url
NONCE_PATTERN = r"^[A-Za-z0-9_-]{43}$"
_PEM = re.compile(
    r"-----BEGIN CERTIFICATE-----(?P<body>[A-Za-z0-9+/=\s]*)-----END CERTIFICATE-----"
)
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
_FROM_URLSAFE = str.maketrans("-_", "+/")
_PREHASHED_SHA256 = ec.ECDSA(Prehashed(hashes.SHA256()))


class CardDataError(Exception):
    """What the card sent cannot be used; ``code`` names the problem for machines."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class CardCertificate:
    """The facts of a card certificate that a tap needs, read once per certificate."""

    fingerprint: str  # SHA-256 of the DER, hex
    serial: str  # certificate serial, as the PKI stores it (40 hex digits)
    card_serial: str  # the card's own serial (subject serialNumber)
    pseudonym: str  # the citizen's pseudonymous id (subject CN): the token's sub
    applications: frozenset[str]
    public_key: ec.EllipticCurvePublicKey
    not_before: datetime
    not_after: datetime


def _b64decode(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not (terminals differ); strict alphabet."""
    if not _BASE64.fullmatch(text):
        raise ValueError("not base64")
    data = text.rstrip("=").translate(_FROM_URLSAFE)
    return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)


def certificate_der(text: str) -> bytes:
    """The DER bytes of a certificate sent as PEM (RFC 7468) or as base64 DER."""
    text = text.strip()
    if len(text) > MAX_CERTIFICATE_CHARS:
        raise CardDataError(
            "certificate_malformed", f"the certificate is over {MAX_CERTIFICATE_CHARS} characters"
        )
    match = _PEM.fullmatch(text)
    body = "".join(match.group("body").split()) if match else text
    try:
        return _b64decode(body)
    except (ValueError, binascii.Error):
        raise CardDataError(
            "certificate_malformed",
            "the certificate is neither PEM nor base64 DER",
        ) from None


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def read_card_certificate(der: bytes) -> tuple[x509.Certificate, CardCertificate]:
    """Parse a card certificate and read what a tap needs; its chain is NOT checked here."""
    try:
        cert = x509.load_der_x509_certificate(der)
        kind = certificate_kind(cert)  # reads the extensions: a broken one fails here
        public = cert.public_key()
        not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    except (ValueError, UnsupportedAlgorithm):
        raise CardDataError(
            "certificate_malformed", "the certificate is not a well-formed X.509 certificate"
        ) from None
    if kind is CertificateKind.TERMINAL:
        raise CardDataError("not_a_card", "a terminal certificate was presented, not a card's")
    if kind is not CertificateKind.CARD:
        raise CardDataError("not_a_card", "the certificate is not a card certificate")
    pseudonym, card_serial = card_pseudonym(cert), card_serial_of(cert)
    if not pseudonym or not card_serial:
        raise CardDataError("not_a_card", "the card certificate names no holder or card serial")
    if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(
        public.curve, ec.SECP256R1
    ):
        raise CardDataError("not_a_card", "a card key is EC P-256")
    return cert, CardCertificate(
        fingerprint=fingerprint(der),
        serial=serial_hex(cert.serial_number),
        card_serial=card_serial,
        pseudonym=pseudonym,
        applications=card_applications(cert),
        public_key=public,
        not_before=not_before,
        not_after=not_after,
    )


def nonce_bytes(nonce: str) -> bytes:
    """The 32 bytes of a nonce we issued (unpadded base64url, see ``NONCE_PATTERN``)."""
    raw = base64.urlsafe_b64decode(nonce + "=")
    if len(raw) != NONCE_BYTES:
        raise ValueError(f"a nonce is {NONCE_BYTES} bytes")
    return raw


def decode_signature(text: str) -> bytes:
    """The card's DER signature from base64 (either alphabet)."""
    try:
        signature = _b64decode(text.strip())
    except (ValueError, binascii.Error):
        raise CardDataError("signature_malformed", "the signature is not base64") from None
    if not 8 <= len(signature) <= MAX_SIGNATURE_BYTES:
        raise CardDataError(
            "signature_malformed", "the signature is not a DER ECDSA P-256 signature"
        )
    return signature


def signature_valid(
    card: CardCertificate,
    signature: bytes,
    *,
    domain: str,
    terminal_id: str,
    nonce: bytes,
    pin_verified: bool,
) -> bool:
    """Whether the card's key signed exactly this challenge (identity.protocol)."""
    digest = challenge_digest(
        domain=domain, terminal_id=terminal_id, nonce=nonce, pin_verified=pin_verified
    )
    try:
        card.public_key.verify(signature, digest, _PREHASHED_SHA256)
    except (InvalidSignature, ValueError):
        return False
    return True


def jwk_thumbprint(key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 JWK thumbprint of a P-256 key: the kid a terminal's key is registered under.

    Both sides compute it from the key alone, so the terminal knows its kid without being told.
    """
    jwk = public_jwk(key, "")
    # Section 3.2: the required members only, lexicographic order, no whitespace.
    canonical = f'{{"crv":"{jwk["crv"]}","kty":"{jwk["kty"]}","x":"{jwk["x"]}","y":"{jwk["y"]}"}}'
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
