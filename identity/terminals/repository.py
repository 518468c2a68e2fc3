"""Queries of the terminal flows. Flushes, never commits (the caller owns the unit of work).

The card certificate rows belong to the PKI (``identity.pki``). Two reads of them live here
because a tap needs them in a shape the PKI's API does not offer: the status alone, read on
every tap (the truth behind Redis), and the newest certificate of a card serial (a QR payload
and an app session know only the card serial; indexed: ``ix_certificates_device_serial``).
"""

from __future__ import annotations

from sqlalchemy import bindparam
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from identity.clients.models import Client
from identity.pki.models import CertificateKind, IssuedCertificate
from services.kit.database import Database

# Built once: SQLAlchemy's compiled cache then serves every tap.
_STATUS_BY_SERIAL = select(col(IssuedCertificate.status)).where(
    col(IssuedCertificate.serial) == bindparam("serial")
)


async def get_client(session: AsyncSession, client_id: str) -> Client | None:
    return await session.get(Client, client_id)


async def latest_card_certificate(
    session: AsyncSession, *, card_serial: str
) -> IssuedCertificate | None:
    """The newest certificate issued for the card with this serial (a card has one, unless
    its key was re-certified)."""
    result = await session.exec(
        select(IssuedCertificate)
        .where(
            col(IssuedCertificate.device_serial) == card_serial,
            col(IssuedCertificate.kind) == CertificateKind.CARD,
        )
        .order_by(col(IssuedCertificate.created_at).desc())
        .limit(1)
    )
    return result.first()


async def certificate_status(db: Database, *, serial: str) -> str | None:
    """The PKI status of one certificate (primary-key lookup), None if it is not on record.

    On a pooled connection of its own, without an ORM session: this runs on every tap, and
    the row's DER and the identity map would only cost (about 165 us of CPU a tap, measured).
    """
    async with db.engine.connect() as conn:
        status = await conn.scalar(_STATUS_BY_SERIAL, {"serial": serial})
    return None if status is None else str(status)
