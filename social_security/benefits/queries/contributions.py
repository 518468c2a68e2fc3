"""Contribution history and benefit payments, paged."""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from social_security.benefits.queries.common import count, in_year
from social_security.benefits.schemas import (
    BenefitPayment,
    Contribution,
    ContributionPage,
    Paging,
    PaymentPage,
)
from social_security.models import BenefitPaymentRow, ContributionRow
from social_security.schemes import Scheme


def contribution_item(row: ContributionRow) -> Contribution:
    return Contribution(
        scheme=Scheme(row.scheme),
        period=row.period,
        wage_base_fen=row.wage_base_fen,
        employer_fen=row.employer_fen,
        personal_fen=row.personal_fen,
        government_fen=row.government_fen,
        account_credit_fen=row.account_credit_fen,
        paid_on=row.paid_on,
    )


async def contributions(
    *,
    session: AsyncSession,
    citizen: str,
    scheme: Scheme | None,
    year: int | None,
    limit: int,
    offset: int,
) -> ContributionPage:
    """One page of the citizen's contributions, newest period first."""
    where = [col(ContributionRow.citizen) == citizen]
    if scheme is not None:
        where.append(col(ContributionRow.scheme) == scheme.value)
    if year is not None:
        where.append(in_year(col(ContributionRow.period), year))
    rows = (
        await session.exec(
            select(ContributionRow)
            .where(*where)
            .order_by(col(ContributionRow.period).desc(), col(ContributionRow.scheme))
            .limit(limit)
            .offset(offset)
        )
    ).all()
    total = await count(session, *where)
    return ContributionPage(
        items=[contribution_item(row) for row in rows],
        paging=Paging.of(total=total, limit=limit, offset=offset),
    )


def payment_item(row: BenefitPaymentRow) -> BenefitPayment:
    return BenefitPayment(
        scheme=Scheme(row.scheme), period=row.period, amount_fen=row.amount_fen, paid_on=row.paid_on
    )


async def payments(
    *, session: AsyncSession, citizen: str, year: int | None, limit: int, offset: int
) -> PaymentPage:
    """One page of the benefits paid to the citizen, newest period first."""
    where = [col(BenefitPaymentRow.citizen) == citizen]
    if year is not None:
        where.append(in_year(col(BenefitPaymentRow.period), year))
    rows = (
        await session.exec(
            select(BenefitPaymentRow)
            .where(*where)
            .order_by(col(BenefitPaymentRow.period).desc(), col(BenefitPaymentRow.scheme))
            .limit(limit)
            .offset(offset)
        )
    ).all()
    total = await count(session, *where)
    return PaymentPage(
        items=[payment_item(row) for row in rows],
        paging=Paging.of(total=total, limit=limit, offset=offset),
    )
