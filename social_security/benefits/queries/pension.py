"""The pension account: balance, contribution years and the estimate."""

from __future__ import annotations

from datetime import date

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from social_security.benefits import pension as formula
from social_security.benefits.queries.accounts import balance_of
from social_security.benefits.queries.common import count
from social_security.benefits.schemas import Pension, PensionEstimate
from social_security.models import ContributionRow, EnrolmentRow
from social_security.schemes import AccountKind, Scheme


async def pension(
    *, session: AsyncSession, citizen: str, retirement_age: int, today: date
) -> Pension:
    """The pension account and the monthly pension it would pay if the citizen retired now:
    the employee formula if they were ever in the employee scheme, else the residents'."""
    balance = await balance_of(session, citizen, AccountKind.PENSION)
    schemes = set(
        (
            await session.exec(
                select(EnrolmentRow.scheme).where(col(EnrolmentRow.citizen) == citizen)
            )
        ).all()
    )
    estimate: formula.Estimate | None = None
    if Scheme.EMPLOYEE_PENSION.value in schemes:
        months = (
            await session.exec(
                select(ContributionRow.period, ContributionRow.wage_base_fen).where(
                    col(ContributionRow.citizen) == citizen,
                    col(ContributionRow.scheme) == Scheme.EMPLOYEE_PENSION.value,
                )
            )
        ).all()
        estimate = formula.employee_estimate(
            account_balance_fen=balance,
            months=[formula.MonthBase(int(period[:4]), base) for period, base in months],
            retirement_age=retirement_age,
            this_year=today.year,
        )
    elif Scheme.RESIDENT_PENSION.value in schemes:
        years = await count(
            session,
            col(ContributionRow.citizen) == citizen,
            col(ContributionRow.scheme) == Scheme.RESIDENT_PENSION.value,
        )
        estimate = formula.resident_estimate(
            account_balance_fen=balance,
            contribution_years=years,
            retirement_age=retirement_age,
            this_year=today.year,
        )
    return Pension(
        account_balance_fen=balance,
        estimate=None
        if estimate is None
        else PensionEstimate(
            scheme=estimate.scheme,
            retirement_age=estimate.retirement_age,
            contribution_months=estimate.contribution_months,
            eligible=estimate.eligible,
            basic_pension_fen=estimate.basic_pension_fen,
            account_pension_fen=estimate.account_pension_fen,
            months_divisor=estimate.months_divisor,
            average_wage_monthly_fen=estimate.average_wage_monthly_fen,
            contribution_index_bp=estimate.contribution_index_bp,
            parameters_year=estimate.parameters_year,
            notes=list(estimate.notes),
        ),
    )
