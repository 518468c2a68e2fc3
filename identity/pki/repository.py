"""Every query of the card PKI. Flushes, never commits (the caller owns the unit of work)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from identity.pki.models import (
    CaKey,
    CaRole,
    CaStatus,
    CertificateStatus,
    Crl,
    CrlKind,
    IssuedCertificate,
    as_utc,
)


async def get_ca(session: AsyncSession, *, kid: str) -> CaKey | None:
    return await session.get(CaKey, kid)


async def ca_with_status(session: AsyncSession, *, role: CaRole, status: CaStatus) -> CaKey | None:
    """The current (or next) CA of a role; the unique index allows at most one."""
    result = await session.exec(
        select(CaKey).where(col(CaKey.role) == role, col(CaKey.status) == status)
    )
    return result.first()


async def live_cas(session: AsyncSession, *, now: datetime) -> Sequence[CaKey]:
    """CAs not yet expired: roots first, then issuing CAs, current before next before retired."""
    result = await session.exec(select(CaKey).where(col(CaKey.not_after) > now))
    order = {CaStatus.CURRENT: 0, CaStatus.NEXT: 1, CaStatus.RETIRED: 2}
    return sorted(
        result.all(),
        key=lambda row: (
            row.role != CaRole.ROOT,
            order.get(CaStatus(row.status), 3),
            -as_utc(row.not_after).timestamp(),
        ),
    )


async def add(session: AsyncSession, row: CaKey | IssuedCertificate | Crl) -> None:
    """Insert and flush, so a unique-constraint race surfaces here as IntegrityError."""
    session.add(row)
    await session.flush()


async def move_ca_status(
    session: AsyncSession, *, kid: str, from_status: CaStatus, to_status: CaStatus
) -> bool:
    """Compare-and-set a CA's status; False when it was not ``from_status`` any more."""
    result = await session.exec(
        update(CaKey)
        .where(col(CaKey.kid) == kid, col(CaKey.status) == from_status)
        .values(status=to_status)
    )
    await session.flush()
    return result.rowcount == 1


async def bump_status_version(session: AsyncSession, *, kid: str) -> int:
    """Count a status change on the issuer; returns its current CRL number.

    The UPDATE comes first so that it takes the issuer's row lock (PostgreSQL) or the write
    lock (SQLite) before anything is read: a CRL being issued at the same moment either sees
    this change or is numbered before it, never neither.
    """
    await session.exec(
        update(CaKey)
        .where(col(CaKey.kid) == kid)
        .values(status_version=col(CaKey.status_version) + 1)
    )
    number, _ = await _counters(session, kid=kid)
    return number


async def next_crl_number(session: AsyncSession, *, kid: str) -> tuple[int, int]:
    """Take the issuer's next CRL number; returns it with the status version it covers."""
    await session.exec(
        update(CaKey).where(col(CaKey.kid) == kid).values(crl_number=col(CaKey.crl_number) + 1)
    )
    return await _counters(session, kid=kid)


async def _counters(session: AsyncSession, *, kid: str) -> tuple[int, int]:
    result = await session.exec(
        select(col(CaKey.crl_number), col(CaKey.status_version)).where(col(CaKey.kid) == kid)
    )
    number, version = result.one()
    return int(number), int(version)


async def get_certificate(
    session: AsyncSession, *, serial: str, for_update: bool = False
) -> IssuedCertificate | None:
    if not for_update:
        return await session.get(IssuedCertificate, serial)
    # Read again after the issuer's lock was taken, not from the identity map.
    result = await session.exec(
        select(IssuedCertificate)
        .where(col(IssuedCertificate.serial) == serial)
        .execution_options(populate_existing=True)
        .with_for_update()
    )
    return result.first()


async def listed_certificates(
    session: AsyncSession, *, issuer_kid: str
) -> Sequence[IssuedCertificate]:
    """The issuer's certificates on hold or revoked: the content of its full CRL."""
    result = await session.exec(
        select(IssuedCertificate).where(
            col(IssuedCertificate.issuer_kid) == issuer_kid,
            col(IssuedCertificate.status) != CertificateStatus.GOOD,
        )
    )
    return result.all()


async def changed_since(
    session: AsyncSession, *, issuer_kid: str, crl_number: int
) -> Sequence[IssuedCertificate]:
    """The issuer's certificates whose status changed after CRL ``crl_number`` was issued."""
    result = await session.exec(
        select(IssuedCertificate).where(
            col(IssuedCertificate.issuer_kid) == issuer_kid,
            col(IssuedCertificate.crl_number_at_change) >= crl_number,
        )
    )
    return result.all()


async def latest_crl(session: AsyncSession, *, issuer_kid: str, kind: CrlKind) -> Crl | None:
    result = await session.exec(
        select(Crl)
        .where(col(Crl.issuer_kid) == issuer_kid, col(Crl.kind) == kind)
        .order_by(col(Crl.number).desc())
        .limit(1)
    )
    return result.first()


async def prune_crls(session: AsyncSession, *, issuer_kid: str, keep: Sequence[int]) -> None:
    """Drop the issuer's superseded CRLs: only the newest full and delta are ever served."""
    await session.exec(
        delete(Crl).where(col(Crl.issuer_kid) == issuer_kid, col(Crl.id).not_in(keep))
    )
    await session.flush()
