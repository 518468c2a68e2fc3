"""A hospital bill as the adjudication engine sees it, and what adjudication made of it.

Every amount is an integer number of fen (0.01 yuan): money is never a float. These are plain
values; the FHIR Claim and the JSON body are both parsed into a :class:`Bill`
(``social_security.fhir.claim``, ``social_security.claims.schemas``), and an
:class:`Adjudication` is rendered as a ClaimResponse, an ExplanationOfBenefit or JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum


class VisitType(StrEnum):
    INPATIENT = "inpatient"
    OUTPATIENT = "outpatient"


@dataclass(frozen=True, slots=True)
class BillLine:
    """One item on the bill: a catalogue code, how many, at what unit price (fen)."""

    sequence: int
    code: str
    quantity: int
    unit_price_fen: int

    @property
    def amount_fen(self) -> int:
        return self.quantity * self.unit_price_fen


@dataclass(frozen=True, slots=True)
class Bill:
    """The bill of one visit at one facility, for one citizen.

    ``bill_id`` is the hospital's own number for it: with the facility it identifies the claim,
    so the same bill submitted twice is settled once.
    """

    bill_id: str
    facility: str
    citizen: str
    visit_type: VisitType
    service_date: date
    lines: tuple[BillLine, ...]

    @property
    def total_fen(self) -> int:
        return sum(line.amount_fen for line in self.lines)


@dataclass(frozen=True, slots=True)
class YearToDate:
    """What a citizen's medical scheme has already used this year (the accumulators).

    ``critical_base_fen`` is the year's in-scope self-pay counted towards critical-illness
    insurance, whose bands apply to the cumulative amount. ``deductible_used_fen`` is the
    inpatient deductible; outpatient pooling has a deductible and a cap of its own
    (``outpatient_*``), while ``pooled_paid_fen`` counts both against the annual cap.
    """

    deductible_used_fen: int = 0
    pooled_paid_fen: int = 0
    critical_base_fen: int = 0
    critical_paid_fen: int = 0
    assistance_paid_fen: int = 0
    outpatient_deductible_used_fen: int = 0
    outpatient_pooled_paid_fen: int = 0


@dataclass(frozen=True, slots=True)
class LineResult:
    """How one line was judged: how much of it is outside the scheme and why."""

    sequence: int
    code: str
    amount_fen: int
    catalogue_class: str | None  # "A", "B", "C", or None when the code is not in the catalogue
    excluded_fen: int  # Class C or off-catalogue: the patient pays all
    over_cap_fen: int  # above the catalogue's price cap
    first_self_pay_fen: int  # Class B's first self-pay share
    in_scope_fen: int  # what the pooled fund considers
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Adjudication:
    """The split of one bill. ``pooled + critical + assistance + personal_account + cash ==
    total`` always; ``after`` is the year-to-date state once this bill is settled."""

    scheme: str
    rule_version: int
    hospital_level: int
    lines: tuple[LineResult, ...]
    total_fen: int
    excluded_fen: int
    over_cap_fen: int
    first_self_pay_fen: int
    in_scope_fen: int
    deductible_fen: int
    pooled_fen: int
    critical_fen: int
    assistance_fen: int
    personal_account_fen: int
    cash_fen: int
    after: YearToDate
    reasons: tuple[str, ...] = field(default=())

    @property
    def fund_fen(self) -> int:
        """What the funds pay together (pooled, critical-illness, assistance)."""
        return self.pooled_fen + self.critical_fen + self.assistance_fen
