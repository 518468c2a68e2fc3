"""The reference data a settlement reads: the provider's level, the citizen's medical
enrolment, the scheme's rules and the catalogue, each as in force on the service date.

These change rarely and never inside a settlement, so they are read before the citizen's
accumulators are locked (``social_security.claims.settlement``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from sqlalchemy import bindparam
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from social_security.claims.catalogue import CatalogueItem
from social_security.claims.reasons import BillRefused, Reason
from social_security.claims.rules import RuleSet, parse_rule_set
from social_security.models import CatalogueItemRow, EnrolmentRow, ProviderRow, RuleSetRow
from social_security.schemes import MEDICAL_SCHEMES


@dataclass(frozen=True, slots=True)
class Rules:
    """One version of a scheme's rules."""

    scheme: str
    version: int
    rules: RuleSet


@dataclass(frozen=True, slots=True)
class Provider:
    """A designated institution: a plain value (kept beyond the session that read it)."""

    facility: str
    level: int
    kind: str


async def provider(session: AsyncSession, facility: str) -> Provider:
    """The designated institution the terminal stands in, or a refusal."""
    row = await session.get(ProviderRow, facility)
    if row is None:
        raise BillRefused(
            Reason.PROVIDER_NOT_DESIGNATED,
            "the facility is not a designated medical-insurance institution",
        )
    return Provider(facility=row.facility, level=row.level, kind=row.kind)


@dataclass(frozen=True, slots=True)
class Enrolment:
    """A medical-insurance enrolment, as a settlement needs it."""

    scheme: str
    start_date: date
    end_date: date | None
    status: str
    assistance: str | None

    def covers(self, on: date) -> bool:
        return self.start_date <= on and (self.end_date is None or on <= self.end_date)


# Built once: every settlement asks it twice (pre-settlement and settlement), and building and
# compiling the ORM statement per call cost more than PostgreSQL's answer. Plain columns, no
# ORM objects: nothing here is written back.
_MEDICAL_ENROLMENTS = (
    select(  # type: ignore[call-overload]
        EnrolmentRow.scheme,
        EnrolmentRow.start_date,
        EnrolmentRow.end_date,
        EnrolmentRow.status,
        EnrolmentRow.assistance,
    )
    .where(EnrolmentRow.citizen == bindparam("citizen"))
    .where(EnrolmentRow.scheme.in_([s.value for s in MEDICAL_SCHEMES]))  # type: ignore[attr-defined]
    .order_by(EnrolmentRow.start_date.desc())  # type: ignore[attr-defined]
)


async def medical_enrolment(session: AsyncSession, citizen: str, on: date) -> Enrolment:
    """The citizen's active medical-insurance enrolment covering ``on``, or a refusal that says
    which condition failed (never enrolled, suspended, or not covered on that date)."""
    connection = await session.connection()
    result = await connection.execute(_MEDICAL_ENROLMENTS, {"citizen": citizen})
    rows = [Enrolment(*row) for row in result]
    if not rows:
        raise BillRefused(Reason.NOT_ENROLLED, "the citizen is not enrolled in medical insurance")
    covering = [row for row in rows if row.covers(on)]
    if not covering:
        raise BillRefused(
            Reason.OUTSIDE_COVERAGE,
            f"the service date {on.isoformat()} is outside the citizen's coverage periods",
        )
    active = [row for row in covering if row.status == "active"]
    if not active:
        raise BillRefused(
            Reason.ENROLMENT_SUSPENDED,
            f"the citizen's enrolment is {covering[0].status}, not active",
        )
    return active[0]


async def rules_for(session: AsyncSession, scheme: str, on: date) -> Rules:
    """The newest version of ``scheme``'s rules in effect on ``on`` (effective-dated: a new
    version takes over from its ``effective_from``; an older date keeps the rules of then)."""
    result = await session.exec(
        select(RuleSetRow)
        .where(RuleSetRow.scheme == scheme)
        .where(RuleSetRow.effective_from <= on)
        .order_by(RuleSetRow.effective_from.desc(), RuleSetRow.version.desc())  # type: ignore[attr-defined]
        .limit(1)
    )
    row = result.first()
    if row is None:
        raise BillRefused(Reason.NO_RULES, f"no {scheme} rules are in effect on {on.isoformat()}")
    return Rules(scheme=row.scheme, version=row.version, rules=parse_rule_set(row.document))


async def catalogue_for(
    session: AsyncSession, codes: Iterable[str], on: date
) -> dict[str, CatalogueItem]:
    """The catalogue entries of ``codes`` in effect on ``on`` (a code unknown then is absent)."""
    wanted = sorted(set(codes))
    if not wanted:
        return {}
    result = await session.exec(
        select(CatalogueItemRow)
        .where(CatalogueItemRow.code.in_(wanted))  # type: ignore[attr-defined]
        .where(CatalogueItemRow.effective_from <= on)
        .order_by(CatalogueItemRow.code, CatalogueItemRow.effective_from)  # type: ignore[arg-type]
    )
    found: dict[str, CatalogueItem] = {}
    for row in result:  # ascending: the newest in effect wins
        found[row.code] = item_of(row)
    return found


def item_of(row: CatalogueItemRow) -> CatalogueItem:
    return CatalogueItem.model_validate(row, from_attributes=True)
