"""The yearly rights statement (权益单): a year's contributions, payments, accounts and claims."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from social_security.benefits.queries.accounts import entry_item
from social_security.benefits.queries.claims import claim_item
from social_security.benefits.queries.common import in_year, year_bounds
from social_security.benefits.queries.contributions import contribution_item, payment_item
from social_security.benefits.schemas import (
    AccountYear,
    ClaimsYear,
    Contribution,
    SchemeContributionTotal,
    YearStatement,
)
from social_security.models import AccountEntryRow, BenefitPaymentRow, ClaimRow, ContributionRow
from social_security.schemes import AccountKind, Scheme


def _contribution_totals(items: Sequence[Contribution]) -> list[SchemeContributionTotal]:
    totals = []
    for scheme in Scheme:
        of_scheme = [c for c in items if c.scheme is scheme]
        if of_scheme:
            totals.append(
                SchemeContributionTotal(
                    scheme=scheme,
                    periods=len(of_scheme),
                    employer_fen=sum(c.employer_fen for c in of_scheme),
                    personal_fen=sum(c.personal_fen for c in of_scheme),
                    government_fen=sum(c.government_fen for c in of_scheme),
                    account_credit_fen=sum(c.account_credit_fen for c in of_scheme),
                )
            )
    return totals


async def _account_year(
    session: AsyncSession, citizen: str, kind: AccountKind, year: int
) -> AccountYear | None:
    start, end = year_bounds(year)
    of_account = and_(
        col(AccountEntryRow.citizen) == citizen, col(AccountEntryRow.kind) == kind.value
    )
    rows = (
        await session.exec(
            select(AccountEntryRow)
            .where(of_account, col(AccountEntryRow.at) >= start, col(AccountEntryRow.at) < end)
            .order_by(col(AccountEntryRow.at), col(AccountEntryRow.id))
        )
    ).all()
    last = (
        await session.exec(
            select(AccountEntryRow.balance_after_fen)
            .where(of_account, col(AccountEntryRow.at) < end)
            .order_by(col(AccountEntryRow.at).desc(), col(AccountEntryRow.id).desc())
            .limit(1)
        )
    ).first()
    if not rows and last is None:
        return None
    return AccountYear(
        kind=kind.value,
        credited_fen=sum(r.amount_fen for r in rows if r.amount_fen > 0),
        debited_fen=-sum(r.amount_fen for r in rows if r.amount_fen < 0),
        closing_balance_fen=last,
        entries=[entry_item(row) for row in rows],
    )


async def year_statement(*, session: AsyncSession, citizen: str, year: int) -> YearStatement:
    """The yearly rights statement (个人权益记录单): contributions, account movements,
    benefits and claims of ``year``, with their totals."""
    contributed = [
        contribution_item(row)
        for row in (
            await session.exec(
                select(ContributionRow)
                .where(
                    col(ContributionRow.citizen) == citizen,
                    in_year(col(ContributionRow.period), year),
                )
                .order_by(col(ContributionRow.period), col(ContributionRow.scheme))
            )
        ).all()
    ]
    benefits = [
        payment_item(row)
        for row in (
            await session.exec(
                select(BenefitPaymentRow)
                .where(
                    col(BenefitPaymentRow.citizen) == citizen,
                    in_year(col(BenefitPaymentRow.period), year),
                )
                .order_by(col(BenefitPaymentRow.period), col(BenefitPaymentRow.scheme))
            )
        ).all()
    ]
    claimed = [
        claim_item(row)
        for row in (
            await session.exec(
                select(ClaimRow)
                .where(col(ClaimRow.citizen) == citizen, col(ClaimRow.year) == year)
                .order_by(col(ClaimRow.settled_at), col(ClaimRow.id))
            )
        ).all()
    ]
    accounts = [
        account
        for kind in AccountKind
        if (account := await _account_year(session, citizen, kind, year)) is not None
    ]
    settled = [c.split for c in claimed if c.status == "settled"]
    return YearStatement(
        year=year,
        contributions=contributed,
        contribution_totals=_contribution_totals(contributed),
        accounts=accounts,
        benefits=benefits,
        benefits_total_fen=sum(b.amount_fen for b in benefits),
        claims=claimed,
        claims_total=ClaimsYear(
            count=len(settled),
            total_fen=sum(s.total_fen for s in settled),
            funds_fen=sum(s.funds_fen for s in settled),
            personal_account_fen=sum(s.personal_account_fen for s in settled),
            cash_fen=sum(s.cash_fen for s in settled),
        ),
    )
