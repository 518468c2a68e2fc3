"""Adjudications, enrolments and year-to-date standings rendered as FHIR R4 financial resources:
ClaimResponse (claimresponse.html), ExplanationOfBenefit (explanationofbenefit.html), Coverage
(coverage.html) and CoverageEligibilityResponse (coverageeligibilityresponse.html).

Categories of money (``adjudication.category`` and ``total.category``):

- ``http://terminology.hl7.org/CodeSystem/adjudication``: ``submitted`` (the billed amount),
  ``eligible`` (the in-scope amount the pooled fund considers), ``deductible`` (the part of it
  under the deductible), ``copay`` (Class B's first self-pay share), ``benefit`` (what the funds
  pay: pooled + critical illness + medical assistance).
- ``urn:onecard:insurance-adjudication``: ``excluded`` (Class C and off-catalogue) and
  ``over-cap`` (above the catalogue's price cap): the two amounts outside the scheme that R4's
  example code system has no code for (its binding is "example", so local codes are allowed).
- ``urn:onecard:insurance-split`` (``total`` only): ``pooled``, ``critical``, ``assistance``,
  ``personal-account``, ``cash``: who pays the bill, summing to ``submitted`` to the fen.

The deductible and the benefit are reported at the header (``ClaimResponse.adjudication``,
"adjudication results which are presented at the header level"), not per line: the pooled
ratio, the cap and the critical-illness bands apply to the bill and the year, so a per-line
share would be an invented allocation.

Money: ``{"value": yuan, "currency": "CNY"}`` from integer fen through Decimal (fen / 100,
exact). JSON has no decimal type, so the value is the float nearest that decimal; for every
amount up to 10^15 fen (15 significant digits) its shortest representation, which every JSON
writer prints, is exactly the 2-decimal amount, and a reader parsing it as a decimal gets the
fen back.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from social_security.claims.bill import Adjudication, Bill, LineResult, VisitType, YearToDate
from social_security.fhir.claim import CATALOGUE_SYSTEM, CITIZEN_SYSTEM, CLAIM_TYPE_SYSTEM, CURRENCY
from social_security.models import EnrolmentRow
from social_security.schemes import Scheme

ADJUDICATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/adjudication"
LOCAL_ADJUDICATION_SYSTEM = "urn:onecard:insurance-adjudication"
SPLIT_SYSTEM = "urn:onecard:insurance-split"
SCHEME_SYSTEM = "urn:onecard:insurance-scheme"
ENROLMENT_STATUS_URL = "urn:onecard:enrolment-status"
PAYMENT_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/ex-paymenttype"
BENEFIT_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/benefit-type"
BENEFIT_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/ex-benefitcategory"
RELATIONSHIP_SYSTEM = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"

SCHEME_NAMES = {
    Scheme.EMPLOYEE_MEDICAL: "Urban employee basic medical insurance",
    Scheme.RESIDENT_MEDICAL: "Urban-rural resident basic medical insurance",
    Scheme.EMPLOYEE_PENSION: "Employee basic pension",
    Scheme.RESIDENT_PENSION: "Urban-rural resident pension",
}

# FHIR R4 value sets (binding strength "required") for the status arguments.
_FM_STATUSES = frozenset({"active", "cancelled", "draft", "entered-in-error"})
_OUTCOMES = frozenset({"queued", "complete", "error", "partial"})
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # datatypes.html#id
_CLAIM_TYPES = {VisitType.INPATIENT: "institutional", VisitType.OUTPATIENT: "professional"}


def money(fen: int) -> dict[str, Any]:
    """FHIR Money in CNY for an integer number of fen (see the module docstring)."""
    if isinstance(fen, bool) or not isinstance(fen, int):
        raise TypeError("money is an integer number of fen")
    return {"value": float(Decimal(fen).scaleb(-2)), "currency": CURRENCY}


def yuan(fen: int) -> str:
    """``123456`` fen as ``"1,234.56"``, for sentences a person reads."""
    return f"{Decimal(fen).scaleb(-2):,.2f}"


def claim_response(
    adjudication: Adjudication,
    *,
    claim_id: str,
    bill: Bill,
    outcome: str = "complete",
    status: str = "active",
    preauth: bool,
    created: datetime | None = None,
) -> dict[str, Any]:
    """The ClaimResponse of a settlement, or of a pre-settlement when ``preauth``.

    A pre-settlement books nothing and reserves nothing, so its ``use`` is
    ``predetermination`` (claimresponse.html: "For Predetermination no payment will actually be
    made and no assurance is given that the adjudication of a claim submitted later will
    match"); ``preauthorization`` would promise reserved funds. Only a settled claim
    (``use = claim``, active, complete) carries ``payment``. A reversed claim is rendered with
    ``status = "cancelled"``.
    """
    _check_rendering(adjudication, bill, status=status, outcome=outcome, claim_id=claim_id)
    notes = _NoteNumbers(adjudication)
    use = "predetermination" if preauth else "claim"
    resource: dict[str, Any] = {
        "resourceType": "ClaimResponse",
        "id": claim_id,
        "status": status,
        "type": _claim_type(bill),
        "use": use,
        "patient": _citizen_reference(bill.citizen),
        "created": _timestamp(created),
        "insurer": _insurer(adjudication.scheme),
        "requestor": {"display": bill.facility},
        "request": _bill_reference(bill),
        "outcome": outcome,
        "disposition": _disposition(adjudication, preauth=preauth),
        "item": [
            {
                "itemSequence": line.sequence,
                **_note_numbers(notes.of(line.reasons)),
                "adjudication": _line_adjudication(line),
            }
            for line in adjudication.lines
        ],
        "adjudication": _header_adjudication(adjudication),
        "total": _totals(adjudication),
    }
    if use == "claim" and status == "active" and outcome == "complete":
        resource["payment"] = _payment(adjudication, created)
    if notes.notes:
        resource["processNote"] = notes.notes
    return resource


def explanation_of_benefit(
    adjudication: Adjudication,
    *,
    claim_id: str,
    bill: Bill,
    status: str = "active",
    created: datetime | None = None,
) -> dict[str, Any]:
    """The citizen's ExplanationOfBenefit of a settled (or, ``status="cancelled"``, reversed)
    bill: each line as billed, how it was judged, and who paid what."""
    _check_rendering(adjudication, bill, status=status, outcome="complete", claim_id=claim_id)
    notes = _NoteNumbers(adjudication)
    judged = {line.sequence: line for line in adjudication.lines}
    items = []
    for bill_line in bill.lines:
        line = judged[bill_line.sequence]
        items.append(
            {
                "sequence": bill_line.sequence,
                **_note_numbers(notes.of(line.reasons)),
                "productOrService": {
                    "coding": [{"system": CATALOGUE_SYSTEM, "code": bill_line.code}]
                },
                "servicedDate": bill.service_date.isoformat(),
                "quantity": {"value": bill_line.quantity},
                "unitPrice": money(bill_line.unit_price_fen),
                "net": money(bill_line.amount_fen),
                "adjudication": _line_adjudication(line),
            }
        )
    resource: dict[str, Any] = {
        "resourceType": "ExplanationOfBenefit",
        "id": claim_id,
        "status": status,
        "type": _claim_type(bill),
        "use": "claim",
        "patient": _citizen_reference(bill.citizen),
        "billablePeriod": {"start": bill.service_date.isoformat()},
        "created": _timestamp(created),
        "insurer": _insurer(adjudication.scheme),
        "provider": {"display": bill.facility},
        "claim": _bill_reference(bill),
        "claimResponse": {"reference": f"ClaimResponse/{claim_id}"},
        "outcome": "complete",
        "disposition": _disposition(adjudication, preauth=False),
        "insurance": [{"focal": True, "coverage": _scheme_reference(adjudication.scheme)}],
        "item": items,
        "adjudication": _header_adjudication(adjudication),
        "total": _totals(adjudication),
    }
    if status == "active":
        resource["payment"] = _payment(adjudication, created)
    if notes.notes:
        resource["processNote"] = notes.notes
    return resource


def coverage_id(enrolment: EnrolmentRow) -> str:
    """The Coverage id of an enrolment: stable, opaque, a valid FHIR id (datatypes.html#id:
    at most 64 of [A-Za-z0-9-.]) whatever the citizen's pseudonym looks like."""
    key = f"{enrolment.citizen}\x00{enrolment.scheme}\x00{enrolment.start_date.isoformat()}"
    return "cov-" + hashlib.sha256(key.encode()).hexdigest()[:32]


def coverage(enrolment: EnrolmentRow, citizen: str) -> dict[str, Any]:
    """A medical-insurance enrolment as a Coverage of ``citizen`` (who must be its holder).

    FHIR's Coverage.status is the record's status (active | cancelled | ...), not the
    enrolment's: a suspended or ended enrolment is ``cancelled``, and the platform's own status
    is kept in the ``urn:onecard:enrolment-status`` extension. Pension schemes are no health
    coverage and are refused (a ValueError: callers filter with ``Scheme.is_medical``).
    """
    if enrolment.citizen != citizen:
        raise ValueError("an enrolment is rendered only for its own citizen")
    scheme = Scheme(enrolment.scheme)
    if not scheme.is_medical:
        raise ValueError(f"{scheme} is not a medical-insurance scheme")
    period: dict[str, str] = {"start": enrolment.start_date.isoformat()}
    if enrolment.end_date is not None:
        period["end"] = enrolment.end_date.isoformat()
    resource: dict[str, Any] = {
        "resourceType": "Coverage",
        "id": coverage_id(enrolment),
        "extension": [{"url": ENROLMENT_STATUS_URL, "valueCode": enrolment.status}],
        "status": "active" if enrolment.status == "active" else "cancelled",
        "type": _scheme_concept(scheme),
        "beneficiary": _citizen_reference(citizen),
        "relationship": {"coding": [{"system": RELATIONSHIP_SYSTEM, "code": "self"}]},
        "period": period,
        "payor": [_insurer(scheme)],
    }
    if scheme.is_employee and enrolment.employer:
        resource["policyHolder"] = {"display": enrolment.employer}
    return resource


@dataclass(frozen=True, slots=True)
class Standing:
    """What a CoverageEligibilityResponse says about one medical enrolment in a year: the
    enrolment, the year's accumulators and, when the caller knows them from the rules in
    force, the deductible, the pooled-fund cap, and the personal-account balance."""

    enrolment: EnrolmentRow
    year_to_date: YearToDate = field(default_factory=YearToDate)
    deductible_fen: int | None = None
    pooled_cap_fen: int | None = None
    personal_account_fen: int | None = None


def in_force(enrolment: EnrolmentRow, on: date) -> bool:
    """Whether the enrolment covers the day ``on`` (both ends of the period included, as FHIR
    Period.end is)."""
    return (
        enrolment.status == "active"
        and enrolment.start_date <= on
        and (enrolment.end_date is None or on <= enrolment.end_date)
    )


def coverage_eligibility_response(
    standings: Sequence[Standing],
    *,
    citizen: str,
    on: date,
    request_id: str | None = None,
    created: datetime | None = None,
) -> dict[str, Any]:
    """The CoverageEligibilityResponse for ``citizen`` on the day ``on``: for each medical
    enrolment whether it is in force, and the year's deductible used, pooled fund used against
    its cap, critical-illness and assistance payments, and the personal-account balance."""
    insurance = []
    for standing in standings:
        enrolment = standing.enrolment
        if enrolment.citizen != citizen:
            raise ValueError("a standing is rendered only for its own citizen")
        if not Scheme(enrolment.scheme).is_medical:
            continue
        insurance.append(
            {
                "coverage": {"reference": f"Coverage/{coverage_id(enrolment)}"},
                "inforce": in_force(enrolment, on),
                "benefitPeriod": {
                    "start": date(on.year, 1, 1).isoformat(),
                    "end": date(on.year, 12, 31).isoformat(),
                },
                "item": [
                    {
                        # ex-benefitcategory "1": Medical Care.
                        "category": {"coding": [{"system": BENEFIT_CATEGORY_SYSTEM, "code": "1"}]},
                        "benefit": _benefits(standing),
                    }
                ],
            }
        )
    request: dict[str, Any] = (
        {"reference": f"CoverageEligibilityRequest/{request_id}"}
        if request_id
        else {"display": f"eligibility lookup on {on.isoformat()}"}
    )
    resource: dict[str, Any] = {
        "resourceType": "CoverageEligibilityResponse",
        "status": "active",
        "purpose": ["validation", "benefits"],
        "patient": _citizen_reference(citizen),
        "servicedDate": on.isoformat(),
        "created": _timestamp(created),
        "request": request,
        "outcome": "complete",
        "insurer": {"display": "Provincial medical insurance"},
    }
    if insurance:
        resource["insurance"] = insurance
    else:
        resource["disposition"] = "no medical-insurance enrolment"
    return resource


def _benefits(standing: Standing) -> list[dict[str, Any]]:
    ytd = standing.year_to_date
    deductible: dict[str, Any] = {
        "type": _concept(BENEFIT_TYPE_SYSTEM, "deductible"),
        "usedMoney": money(ytd.deductible_used_fen),
    }
    if standing.deductible_fen is not None:
        deductible["allowedMoney"] = money(standing.deductible_fen)
    pooled: dict[str, Any] = {
        "type": _concept(BENEFIT_TYPE_SYSTEM, "benefit"),
        "usedMoney": money(ytd.pooled_paid_fen),
    }
    if standing.pooled_cap_fen is not None:
        pooled["allowedMoney"] = money(standing.pooled_cap_fen)
    benefits = [
        deductible,
        pooled,
        {"type": _split_concept("critical"), "usedMoney": money(ytd.critical_paid_fen)},
        {"type": _split_concept("assistance"), "usedMoney": money(ytd.assistance_paid_fen)},
    ]
    if standing.personal_account_fen is not None:
        benefits.append(
            {
                "type": _split_concept("personal-account"),
                "allowedMoney": money(standing.personal_account_fen),
            }
        )
    return benefits


# --- shared pieces -----------------------------------------------------------------------------


class _NoteNumbers:
    """One processNote per distinct reason code (the bill's, then each line's, first seen
    first), numbered from 1; lines point at theirs with ``noteNumber``."""

    def __init__(self, adjudication: Adjudication) -> None:
        reasons = [*adjudication.reasons]
        for line in adjudication.lines:
            reasons.extend(line.reasons)
        self._numbers = {reason: n for n, reason in enumerate(dict.fromkeys(reasons), start=1)}
        self.notes = [
            {"number": n, "type": "display", "text": reason} for reason, n in self._numbers.items()
        ]

    def of(self, reasons: Iterable[str]) -> list[int]:
        return sorted({self._numbers[reason] for reason in reasons})


def _note_numbers(numbers: list[int]) -> dict[str, Any]:
    return {"noteNumber": numbers} if numbers else {}


def _line_adjudication(line: LineResult) -> list[dict[str, Any]]:
    return [
        _adjudication(_category("submitted"), line.amount_fen),
        _adjudication(_category("eligible"), line.in_scope_fen),
        _adjudication(_category("copay"), line.first_self_pay_fen),
        _adjudication(_local_category("excluded"), line.excluded_fen),
        _adjudication(_local_category("over-cap"), line.over_cap_fen),
    ]


def _header_adjudication(adjudication: Adjudication) -> list[dict[str, Any]]:
    return [
        _adjudication(_category("deductible"), adjudication.deductible_fen),
        _adjudication(_category("benefit"), adjudication.fund_fen),
    ]


def _totals(adjudication: Adjudication) -> list[dict[str, Any]]:
    amounts = [
        (_category("submitted"), adjudication.total_fen),
        (_category("eligible"), adjudication.in_scope_fen),
        (_category("deductible"), adjudication.deductible_fen),
        (_category("copay"), adjudication.first_self_pay_fen),
        (_category("benefit"), adjudication.fund_fen),
        (_local_category("excluded"), adjudication.excluded_fen),
        (_local_category("over-cap"), adjudication.over_cap_fen),
        (_split_concept("pooled"), adjudication.pooled_fen),
        (_split_concept("critical"), adjudication.critical_fen),
        (_split_concept("assistance"), adjudication.assistance_fen),
        (_split_concept("personal-account"), adjudication.personal_account_fen),
        (_split_concept("cash"), adjudication.cash_fen),
    ]
    return [{"category": category, "amount": money(fen)} for category, fen in amounts]


def _payment(adjudication: Adjudication, created: datetime | None) -> dict[str, Any]:
    """What the insurance bureau pays the facility: the funds and the personal account (the
    account is the citizen's, but the bureau holds it and pays it out at the counter); the
    cash part the patient pays the facility directly."""
    return {
        "type": _concept(PAYMENT_TYPE_SYSTEM, "complete"),
        "date": (created or datetime.now(UTC)).date().isoformat(),
        "amount": money(adjudication.fund_fen + adjudication.personal_account_fen),
    }


def _disposition(adjudication: Adjudication, *, preauth: bool) -> str:
    what = "Pre-settlement (nothing booked)" if preauth else "Settled"
    return (
        f"{what}: total {yuan(adjudication.total_fen)} CNY; pooled fund "
        f"{yuan(adjudication.pooled_fen)}, critical illness {yuan(adjudication.critical_fen)}, "
        f"medical assistance {yuan(adjudication.assistance_fen)}, personal account "
        f"{yuan(adjudication.personal_account_fen)}, cash {yuan(adjudication.cash_fen)}"
    )


def _check_rendering(
    adjudication: Adjudication, bill: Bill, *, status: str, outcome: str, claim_id: str
) -> None:
    """Refuse to render a resource that would state something false (a programming error)."""
    if status not in _FM_STATUSES:
        raise ValueError(f"status must be one of {sorted(_FM_STATUSES)}")
    if outcome not in _OUTCOMES:
        raise ValueError(f"outcome must be one of {sorted(_OUTCOMES)}")
    if not _FHIR_ID.fullmatch(claim_id):
        raise ValueError("claim_id must be a FHIR id (datatypes.html#id)")
    split = (
        adjudication.pooled_fen
        + adjudication.critical_fen
        + adjudication.assistance_fen
        + adjudication.personal_account_fen
        + adjudication.cash_fen
    )
    if split != adjudication.total_fen or adjudication.total_fen != bill.total_fen:
        raise ValueError("the adjudication's split does not add up to the bill's total")
    if sorted(line.sequence for line in adjudication.lines) != sorted(
        line.sequence for line in bill.lines
    ):
        raise ValueError("the adjudication's lines are not the bill's lines")


def _adjudication(category: dict[str, Any], fen: int) -> dict[str, Any]:
    return {"category": category, "amount": money(fen)}


def _category(code: str) -> dict[str, Any]:
    return _concept(ADJUDICATION_SYSTEM, code)


def _local_category(code: str) -> dict[str, Any]:
    return _concept(LOCAL_ADJUDICATION_SYSTEM, code)


def _split_concept(code: str) -> dict[str, Any]:
    return _concept(SPLIT_SYSTEM, code)


def _concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _scheme_concept(scheme: Scheme) -> dict[str, Any]:
    return {
        "coding": [{"system": SCHEME_SYSTEM, "code": scheme.value}],
        "text": SCHEME_NAMES[scheme],
    }


def _scheme_reference(scheme: str) -> dict[str, Any]:
    return {
        "identifier": {"system": SCHEME_SYSTEM, "value": scheme},
        "display": SCHEME_NAMES[Scheme(scheme)],
    }


def _insurer(scheme: str) -> dict[str, Any]:
    return {"display": f"Provincial medical insurance fund: {SCHEME_NAMES[Scheme(scheme)]}"}


def _citizen_reference(citizen: str) -> dict[str, Any]:
    # The citizen's pseudonymous id (the token's sub), never the national ID number.
    return {"identifier": {"system": CITIZEN_SYSTEM, "value": citizen}}


def _bill_reference(bill: Bill) -> dict[str, Any]:
    """The Claim, by the hospital's bill number assigned by the facility."""
    return {"identifier": {"value": bill.bill_id, "assigner": {"display": bill.facility}}}


def _claim_type(bill: Bill) -> dict[str, Any]:
    return _concept(CLAIM_TYPE_SYSTEM, _CLAIM_TYPES[bill.visit_type])


def _timestamp(created: datetime | None) -> str:
    moment = created or datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("created must be an aware datetime")
    return moment.isoformat(timespec="seconds")
