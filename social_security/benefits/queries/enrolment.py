"""The citizen's standing in each scheme."""

from __future__ import annotations

from datetime import date

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from social_security.benefits.schemas import Enrolments, EnrolmentStatus
from social_security.models import EnrolmentRow
from social_security.schemes import Scheme


async def enrolments(*, session: AsyncSession, citizen: str, today: date) -> Enrolments:
    """The citizen's standing in each scheme (the latest enrolment period of each)."""
    rows = (
        await session.exec(
            select(EnrolmentRow)
            .where(col(EnrolmentRow.citizen) == citizen)
            .order_by(col(EnrolmentRow.start_date))
        )
    ).all()
    latest = {row.scheme: row for row in rows}  # ordered by start: the last one wins
    schemes = []
    for scheme in Scheme:
        row = latest.get(scheme.value)
        if row is None:
            schemes.append(
                EnrolmentStatus(
                    scheme=scheme,
                    status="not_enrolled",
                    since=None,
                    until=None,
                    employer=None,
                    assistance=None,
                )
            )
            continue
        ended = row.end_date is not None and row.end_date < today
        schemes.append(
            EnrolmentStatus(
                scheme=scheme,
                status="ended" if ended else row.status,
                since=row.start_date,
                until=row.end_date,
                employer=row.employer,
                assistance=row.assistance,
            )
        )
    return Enrolments(schemes=schemes)
