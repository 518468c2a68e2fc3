"""The token-signing key ring: one current key signs, the next is pre-published, old ones linger.

Rotation (``onecard identity rotate-keys``) makes the pre-published next key current, retires
the current one, and creates a new next key. Verifiers already hold the new current key from
the JWKS (it was published as "next"), and a retired key stays published until every token it
signed has expired, so rotation never invalidates a live token.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from identity.pki.keystore import decrypt_private_key, encrypt_private_key
from identity.tokens.models import KeyStatus, SigningKey
from services.kit.sqltypes import utcnow
from services.kit.tokens import MAX_ACCESS_TOKEN_SECONDS, public_jwk

# A retired key stays in the JWKS this long: the longest token lifetime plus clock leeway.
RETIRED_KEY_GRACE = timedelta(seconds=MAX_ACCESS_TOKEN_SECONDS + 60)


@dataclass(frozen=True)
class KeyRing:
    """The keys of one moment: the signing key (decrypted once) and the published set."""

    kid: str
    private_key: ec.EllipticCurvePrivateKey
    published: dict[str, ec.EllipticCurvePublicKey]

    def jwks(self) -> dict[str, Any]:
        # RFC 7517 section 5; current first, so naive clients pick the signing key.
        ordered = [self.kid, *sorted(k for k in self.published if k != self.kid)]
        return {"keys": [public_jwk(self.published[k], k) for k in ordered]}


def new_kid() -> str:
    return "k" + secrets.token_hex(8)


async def _new_key(session: AsyncSession, status: KeyStatus, passphrase: bytes) -> SigningKey:
    key = ec.generate_private_key(ec.SECP256R1())
    row = SigningKey(
        kid=new_kid(),
        status=status,
        private_key_pem=encrypt_private_key(key, passphrase),
        public_key_pem=key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
        created_at=utcnow(),
        activated_at=utcnow() if status == KeyStatus.CURRENT else None,
    )
    session.add(row)
    await session.flush()
    return row


async def ensure_keys(*, session: AsyncSession, passphrase: bytes) -> None:
    """Create the current and the next key if missing; a concurrent creator wins harmlessly."""
    for status in (KeyStatus.CURRENT, KeyStatus.NEXT):
        exists = await session.scalar(select(SigningKey.kid).where(SigningKey.status == status))
        if exists:
            continue
        try:
            async with session.begin_nested():
                await _new_key(session, status, passphrase)
        except IntegrityError:
            # Another process created it between our check and our insert; anything else
            # (a constraint we broke ourselves) must not pass silently.
            if not await session.scalar(select(SigningKey.kid).where(SigningKey.status == status)):
                raise


async def rotate(*, session: AsyncSession, passphrase: bytes) -> str:
    """Next becomes current, current retires, a new next is made; returns the new current kid."""
    rows = {
        row.status: row
        for row in (
            await session.exec(
                select(SigningKey)
                .where(col(SigningKey.status).in_([KeyStatus.CURRENT, KeyStatus.NEXT]))
                .with_for_update()
            )
        ).all()
    }
    current, upcoming = rows.get(KeyStatus.CURRENT), rows.get(KeyStatus.NEXT)
    if upcoming is None:
        upcoming = await _new_key(session, KeyStatus.NEXT, passphrase)
    if current is not None:
        current.status = KeyStatus.RETIRED
        current.retired_at = utcnow()
        await session.flush()  # free the "current" slot of the unique index first
    upcoming.status = KeyStatus.CURRENT
    upcoming.activated_at = utcnow()
    await session.flush()
    await _new_key(session, KeyStatus.NEXT, passphrase)
    return upcoming.kid


async def load(
    *, session: AsyncSession, passphrase: bytes, previous: KeyRing | None = None
) -> KeyRing:
    """Read the ring from the database (the truth), decrypting only the signing key, and only
    when it is not the one ``previous`` already holds (a periodic reload usually finds it)."""
    horizon = utcnow() - RETIRED_KEY_GRACE
    rows = (
        await session.exec(
            select(SigningKey).where(
                or_(
                    col(SigningKey.status) != KeyStatus.RETIRED,
                    col(SigningKey.retired_at) > horizon,
                )
            )
        )
    ).all()
    current = next((r for r in rows if r.status == KeyStatus.CURRENT), None)
    if current is None:
        raise RuntimeError("no current signing key; the identity service creates one at start")
    published = {}
    for row in rows:
        public = serialization.load_pem_public_key(row.public_key_pem.encode())
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise RuntimeError(f"signing key {row.kid} is not an EC key")
        published[row.kid] = public
    if previous is not None and previous.kid == current.kid:
        signing = previous.private_key
    else:
        signing = decrypt_private_key(current.private_key_pem, passphrase)
    return KeyRing(kid=current.kid, private_key=signing, published=published)
