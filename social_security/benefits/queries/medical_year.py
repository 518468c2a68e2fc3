"""The medical year: deductible used, pooled fund used, cap remaining per scheme."""

from __future__ import annotations

import logging
from datetime import date

from sqlalchemy import or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from social_security.benefits.schemas import MedicalYear, MedicalYearScheme
from social_security.claims.rules import InvalidRules, parse_rule_set
from social_security.models import EnrolmentRow, RuleSetRow, YearTotalRow
from social_security.schemes import MEDICAL_SCHEMES


def annual_pooled_cap_fen(document: str) -> int | None:
    """The annual pooled-fund cap of a stored rule set; None (logged) if the document no
    longer parses, so one bad row costs the citizen that figure, not the whole page."""
    try:
        return parse_rule_set(document).annual_pooled_cap_fen
    except InvalidRules as exc:
        log.error("stored rule set does not parse", extra={"error": str(exc)})
        return None


log = logging.getLogger(__name__)


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
