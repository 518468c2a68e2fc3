"""The citizen's settled claims with their split."""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from social_security.benefits.queries.common import count
from social_security.benefits.schemas import Claim, ClaimPage, ClaimSplit, Paging
from social_security.models import ClaimRow
from social_security.schemes import Scheme


def claim_item(row: ClaimRow) -> Claim:
    return Claim(
        id=row.id,
        facility=row.facility,
        bill_id=row.bill_id,
        scheme=Scheme(row.scheme),
        service_date=row.service_date,
        status=row.status,
        settled_at=row.settled_at,
        reversed_at=row.reversed_at,
        replaces=row.replaces,
        split=ClaimSplit(
            total_fen=row.total_fen,
            in_scope_fen=row.in_scope_fen,
            deductible_fen=row.deductible_fen,
            pooled_fen=row.pooled_fen,
            critical_fen=row.critical_fen,
            assistance_fen=row.assistance_fen,
            personal_account_fen=row.personal_account_fen,
            cash_fen=row.cash_fen,
        ),
    )


async def claims(
    *, session: AsyncSession, citizen: str, year: int | None, limit: int, offset: int
) -> ClaimPage:
    """One page of the citizen's claims with their split, newest settlement first."""
    where = [col(ClaimRow.citizen) == citizen]
    if year is not None:
        where.append(col(ClaimRow.year) == year)
    rows = (
        await session.exec(
            select(ClaimRow)
            .where(*where)
            .order_by(col(ClaimRow.settled_at).desc(), col(ClaimRow.id))
            .limit(limit)
            .offset(offset)
        )
    ).all()
    total = await count(session, *where)
    return ClaimPage(
        items=[claim_item(row) for row in rows],
        paging=Paging.of(total=total, limit=limit, offset=offset),
    )
