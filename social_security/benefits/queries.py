"""The reads behind the citizen's lookups: every function takes the session and the citizen
(the token's ``sub``) and never returns another citizen's rows.

Year boundaries are China Standard Time (UTC+8, no daylight saving since 1991): a settlement at
00:30 on 1 January Beijing time belongs to the new year although it is still 31 December UTC.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from social_security.benefits import pension as formula
from social_security.benefits.schemas import (
    AccountEntry,
    AccountYear,
    BenefitPayment,
    CatalogueEntry,
    CatalogueMatches,
    Claim,
    ClaimPage,
    ClaimSplit,
    ClaimsYear,
    Contribution,
    ContributionPage,
    Enrolments,
    EnrolmentStatus,
    MedicalAccount,
    MedicalYear,
    MedicalYearScheme,
    Paging,
    PaymentPage,
    Pension,
    PensionEstimate,
    SchemeContributionTotal,
    YearStatement,
)
from social_security.claims.rules import InvalidRules, parse_rule_set
from social_security.models import (
    AccountEntryRow,
    AccountRow,
    BenefitPaymentRow,
    CatalogueItemRow,
    ClaimRow,
    ContributionRow,
    EnrolmentRow,
    RuleSetRow,
    YearTotalRow,
)
from social_security.schemes import MEDICAL_SCHEMES, AccountKind, Scheme

log = logging.getLogger(__name__)

CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "CST")


def year_bounds(year: int) -> tuple[datetime, datetime]:
    """[start, end) of ``year`` in China Standard Time, as aware UTC instants."""
    start = datetime(year, 1, 1, tzinfo=CHINA_STANDARD_TIME)
    end = datetime(year + 1, 1, 1, tzinfo=CHINA_STANDARD_TIME)
    return start.astimezone(UTC), end.astimezone(UTC)


def _in_year(period: Any, year: int) -> ColumnElement[bool]:
    """Periods are YYYY (residents) or YYYY-MM (employees)."""
    return or_(period == str(year), period.like(f"{year}-%"))


async def _count(session: AsyncSession, *where: ColumnElement[bool]) -> int:
    total = (await session.exec(select(func.count()).where(*where))).one()
    return int(total)


# -- enrolment -------------------------------------------------------------------------------


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


# -- contributions and payments --------------------------------------------------------------


def _contribution(row: ContributionRow) -> Contribution:
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
        where.append(_in_year(col(ContributionRow.period), year))
    rows = (
        await session.exec(
            select(ContributionRow)
            .where(*where)
            .order_by(col(ContributionRow.period).desc(), col(ContributionRow.scheme))
            .limit(limit)
            .offset(offset)
        )
    ).all()
    total = await _count(session, *where)
    return ContributionPage(
        items=[_contribution(row) for row in rows],
        paging=Paging.of(total=total, limit=limit, offset=offset),
    )


def _payment(row: BenefitPaymentRow) -> BenefitPayment:
    return BenefitPayment(
        scheme=Scheme(row.scheme), period=row.period, amount_fen=row.amount_fen, paid_on=row.paid_on
    )


async def payments(
    *, session: AsyncSession, citizen: str, year: int | None, limit: int, offset: int
) -> PaymentPage:
    """One page of the benefits paid to the citizen, newest period first."""
    where = [col(BenefitPaymentRow.citizen) == citizen]
    if year is not None:
        where.append(_in_year(col(BenefitPaymentRow.period), year))
    rows = (
        await session.exec(
            select(BenefitPaymentRow)
            .where(*where)
            .order_by(col(BenefitPaymentRow.period).desc(), col(BenefitPaymentRow.scheme))
            .limit(limit)
            .offset(offset)
        )
    ).all()
    total = await _count(session, *where)
    return PaymentPage(
        items=[_payment(row) for row in rows],
        paging=Paging.of(total=total, limit=limit, offset=offset),
    )


# -- individual accounts ---------------------------------------------------------------------


async def _balance(session: AsyncSession, citizen: str, kind: AccountKind) -> int:
    row = await session.get(AccountRow, (citizen, kind.value))
    return row.balance_fen if row is not None else 0


def _entry(row: AccountEntryRow) -> AccountEntry:
    return AccountEntry(
        at=row.at,
        amount_fen=row.amount_fen,
        balance_after_fen=row.balance_after_fen,
        reason=row.reason,
        reference=row.reference,
    )


async def medical_account(
    *, session: AsyncSession, citizen: str, limit: int, offset: int
) -> MedicalAccount:
    """The medical personal account's balance and one page of its ledger, newest first."""
    where = [
        col(AccountEntryRow.citizen) == citizen,
        col(AccountEntryRow.kind) == AccountKind.MEDICAL.value,
    ]
    rows = (
        await session.exec(
            select(AccountEntryRow)
            .where(*where)
            .order_by(col(AccountEntryRow.at).desc(), col(AccountEntryRow.id).desc())
            .limit(limit)
            .offset(offset)
        )
    ).all()
    total = await _count(session, *where)
    return MedicalAccount(
        balance_fen=await _balance(session, citizen, AccountKind.MEDICAL),
        entries=[_entry(row) for row in rows],
        paging=Paging.of(total=total, limit=limit, offset=offset),
    )


# -- claims ----------------------------------------------------------------------------------


def _claim(row: ClaimRow) -> Claim:
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
    total = await _count(session, *where)
    return ClaimPage(
        items=[_claim(row) for row in rows],
        paging=Paging.of(total=total, limit=limit, offset=offset),
    )


# -- the medical year ------------------------------------------------------------------------


def annual_pooled_cap_fen(document: str) -> int | None:
    """The annual pooled-fund cap of a stored rule set; None (logged) if the document no
    longer parses, so one bad row costs the citizen that figure, not the whole page."""
    try:
        return parse_rule_set(document).annual_pooled_cap_fen
    except InvalidRules as exc:
        log.error("stored rule set does not parse", extra={"error": str(exc)})
        return None


async def _rules_in_force(
    session: AsyncSession, scheme: str, year: int, today: date
) -> RuleSetRow | None:
    """The rule set of ``scheme`` for ``year`` in force at the year's end, or today if the year
    is not over (effective-dated: the newest ``effective_from`` not after then, newest version)."""
    as_of = min(today, date(year, 12, 31))
    return (
        await session.exec(
            select(RuleSetRow)
            .where(
                col(RuleSetRow.scheme) == scheme,
                col(RuleSetRow.year) == year,
                col(RuleSetRow.effective_from) <= as_of,
            )
            .order_by(col(RuleSetRow.effective_from).desc(), col(RuleSetRow.version).desc())
            .limit(1)
        )
    ).first()


async def medical_year(
    *, session: AsyncSession, citizen: str, year: int, today: date
) -> MedicalYear:
    """Deductible used, pooled fund used and cap remaining in each medical scheme of ``year``."""
    totals = {
        row.scheme: row
        for row in (
            await session.exec(
                select(YearTotalRow).where(
                    col(YearTotalRow.citizen) == citizen, col(YearTotalRow.year) == year
                )
            )
        ).all()
    }
    enrolled = set(
        (
            await session.exec(
                select(EnrolmentRow.scheme).where(
                    col(EnrolmentRow.citizen) == citizen,
                    col(EnrolmentRow.start_date) <= date(year, 12, 31),
                    or_(
                        col(EnrolmentRow.end_date).is_(None),
                        col(EnrolmentRow.end_date) >= date(year, 1, 1),
                    ),
                )
            )
        ).all()
    )
    schemes = []
    for scheme in MEDICAL_SCHEMES:
        if scheme.value not in totals and scheme.value not in enrolled:
            continue
        row = totals.get(scheme.value)
        rules = await _rules_in_force(session, scheme.value, year, today)
        schemes.append(
            MedicalYearScheme(
                scheme=scheme,
                deductible_used_fen=row.deductible_used_fen if row else 0,
                pooled_paid_fen=row.pooled_paid_fen if row else 0,
                critical_paid_fen=row.critical_paid_fen if row else 0,
                assistance_paid_fen=row.assistance_paid_fen if row else 0,
                annual_pooled_cap_fen=annual_pooled_cap_fen(rules.document) if rules else None,
                rule_version=rules.version if rules else None,
            )
        )
    return MedicalYear(year=year, schemes=schemes)


# -- the pension -----------------------------------------------------------------------------


async def pension(
    *, session: AsyncSession, citizen: str, retirement_age: int, today: date
) -> Pension:
    """The pension account and the monthly pension it would pay if the citizen retired now:
    the employee formula if they were ever in the employee scheme, else the residents'."""
    balance = await _balance(session, citizen, AccountKind.PENSION)
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
        years = await _count(
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


# -- the yearly rights statement -------------------------------------------------------------


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
        entries=[_entry(row) for row in rows],
    )


async def year_statement(*, session: AsyncSession, citizen: str, year: int) -> YearStatement:
    """The yearly rights statement (个人权益记录单): contributions, account movements,
    benefits and claims of ``year``, with their totals."""
    contributed = [
        _contribution(row)
        for row in (
            await session.exec(
                select(ContributionRow)
                .where(
                    col(ContributionRow.citizen) == citizen,
                    _in_year(col(ContributionRow.period), year),
                )
                .order_by(col(ContributionRow.period), col(ContributionRow.scheme))
            )
        ).all()
    ]
    benefits = [
        _payment(row)
        for row in (
            await session.exec(
                select(BenefitPaymentRow)
                .where(
                    col(BenefitPaymentRow.citizen) == citizen,
                    _in_year(col(BenefitPaymentRow.period), year),
                )
                .order_by(col(BenefitPaymentRow.period), col(BenefitPaymentRow.scheme))
            )
        ).all()
    ]
    claimed = [
        _claim(row)
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


# -- the catalogue ---------------------------------------------------------------------------


def _catalogue_entry(row: CatalogueItemRow) -> CatalogueEntry:
    return CatalogueEntry(
        code=row.code,
        name=row.name,
        kind=row.kind,
        catalogue_class=row.catalogue_class,
        price_cap_fen=row.price_cap_fen,
        effective_from=row.effective_from,
    )


async def catalogue_entry(
    *, session: AsyncSession, code: str, today: date
) -> CatalogueEntry | None:
    """The version of catalogue item ``code`` in force today, or None."""
    row = (
        await session.exec(
            select(CatalogueItemRow)
            .where(
                col(CatalogueItemRow.code) == code, col(CatalogueItemRow.effective_from) <= today
            )
            .order_by(col(CatalogueItemRow.effective_from).desc())
            .limit(1)
        )
    ).first()
    return _catalogue_entry(row) if row is not None else None


def _like_prefix(text: str) -> str:
    """A LIKE pattern matching ``text`` literally at the start (escape character ``\\``)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


async def catalogue_search(
    *, session: AsyncSession, prefix: str, limit: int, today: date
) -> CatalogueMatches:
    """Items in force today whose name starts with ``prefix``, by name, at most ``limit``."""
    in_force = (
        select(
            col(CatalogueItemRow.code).label("code"),
            func.max(CatalogueItemRow.effective_from).label("effective_from"),
        )
        .where(col(CatalogueItemRow.effective_from) <= today)
        .group_by(col(CatalogueItemRow.code))
        .subquery()
    )
    rows = (
        await session.exec(
            select(CatalogueItemRow)
            .join(
                in_force,
                and_(
                    col(CatalogueItemRow.code) == in_force.c.code,
                    col(CatalogueItemRow.effective_from) == in_force.c.effective_from,
                ),
            )
            .where(col(CatalogueItemRow.name).like(_like_prefix(prefix), escape="\\"))
            .order_by(col(CatalogueItemRow.name), col(CatalogueItemRow.code))
            .limit(limit + 1)  # one more than shown tells whether there are more
        )
    ).all()
    return CatalogueMatches(
        items=[_catalogue_entry(row) for row in rows[:limit]], truncated=len(rows) > limit
    )
