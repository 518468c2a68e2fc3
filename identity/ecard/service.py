"""Signing the QR payload (the checks at redemption run in ``identity.terminals.service``)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from identity.tokens.issuer import TokenIssuer
from services.kit.tokens import sign_jwt

# RFC 8725 section 3.11: a type of its own, so a QR payload never verifies as an access token
# (at+jwt) nor an access token as a QR payload.
QR_TYPE = "onecard-qr+jwt"
QR_SECONDS = 60
# Every claim a redeemable payload must carry.
QR_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti", "card")


@dataclass(frozen=True, slots=True)
class QrPayload:
    qr: str
    jti: str
    expires_in: int


def sign_qr(*, issuer: TokenIssuer, subject: str, card: str, now: float) -> QrPayload:
    """A fresh payload for the holder ``subject`` of card ``card``, valid QR_SECONDS."""
    issued_at = int(now)
    jti = secrets.token_urlsafe(16)
    claims = {
        "iss": issuer.issuer,
        "sub": subject,
        # Addressed to the platform itself: only our terminals' redemption accepts it.
        "aud": issuer.issuer,
        "card": card,
        "jti": jti,
        "iat": issued_at,
        "exp": issued_at + QR_SECONDS,
    }
    ring = issuer.ring
    token = sign_jwt(claims, private_key=ring.private_key, kid=ring.kid, typ=QR_TYPE)
    return QrPayload(qr=token, jti=jti, expires_in=QR_SECONDS)
