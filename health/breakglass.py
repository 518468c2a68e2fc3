"""Break-glass: emergency access to a patient's records by a hospital that has no consent.

A clinician states a reason (``POST /fhir/Patient/{id}/$break-glass``); the hospital's system
may then read that patient's records, including sensitive (level 4) ones, until the grant
expires (``break_glass_minutes``, default 4 hours). Every such access is flagged in the audit
ledger with purpose of use ``BTG`` (HL7 v3 ActReason "break the glass"), and the citizen is told
at once by a ``Communication`` in their own record (read in the mobile app).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import Column, DateTime, String
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from health.search.clauses import equals
from services.kit.sqltypes import utc_column, utcnow

# HL7 v3 ActReason (http://terminology.hl7.org/CodeSystem/v3-ActReason): "break the glass".
BREAK_THE_GLASS = "BTG"


class BreakGlassGrant(SQLModel, table=True):
    __tablename__ = "break_glass_grants"

    id: str = Field(sa_column=Column(String(32), primary_key=True))
    client_id: str = Field(sa_column=Column(String(64), nullable=False))
    requested_by: str = Field(sa_column=Column(String(128), nullable=False))
    patient_key: str = Field(sa_column=Column(String(64), nullable=False))
    reason: str = Field(sa_column=Column(String(500), nullable=False))
    granted_at: datetime = Field(sa_column=utc_column())
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


async def grant(
    session: AsyncSession,
    *,
    client_id: str,
    requested_by: str,
    patient_key: str,
    reason: str,
    minutes: int,
) -> BreakGlassGrant:
    now = utcnow()
    row = BreakGlassGrant(
        id=secrets.token_hex(16),
        client_id=client_id,
        requested_by=requested_by,
        patient_key=patient_key,
        reason=reason,
        granted_at=now,
        expires_at=now + timedelta(minutes=minutes),
    )
    session.add(row)
    await session.flush()
    return row


async def active_grant(
    session: AsyncSession, *, client_id: str, patient_key: str
) -> BreakGlassGrant | None:
    """The hospital's unexpired grant for the patient, if any."""
    query = (
        select(BreakGlassGrant)
        .where(
            col(BreakGlassGrant.client_id) == client_id,
            col(BreakGlassGrant.patient_key) == patient_key,
            col(BreakGlassGrant.expires_at) > utcnow(),
        )
        .order_by(col(BreakGlassGrant.expires_at).desc())
        .limit(1)
    )
    return (await session.exec(query)).first()


def granted_patients(client_id: str) -> SelectOfScalar[str]:
    """The patients whose records the hospital may read under break-glass right now, as a
    query: a search runs it as a subquery of its own statements (no round trip of its own)."""
    # On the table's columns: built for every search, and ORM attributes cost more to build.
    grants = BreakGlassGrant.__table__.c  # type: ignore[attr-defined]
    return select(grants.patient_key).where(
        equals(grants.client_id, client_id), grants.expires_at > utcnow()
    )
