"""Adjudications, enrolments and standings rendered as FHIR R4 resources: each one validates
with fhir.resources, and carries the split of the bill to the fen."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.claimresponse import ClaimResponse
from fhir.resources.R4B.coverage import Coverage
from fhir.resources.R4B.coverageeligibilityresponse import CoverageEligibilityResponse
from fhir.resources.R4B.explanationofbenefit import ExplanationOfBenefit
from fhir.resources.R4B.operationoutcome import OperationOutcome

from services.kit.errors import Problem
from social_security.claims.bill import (
    Adjudication,
    Bill,
    BillLine,
    LineResult,
    VisitType,
    YearToDate,
)
from social_security.fhir.outcome import outcome_of
from social_security.fhir.resources import (
    ADJUDICATION_SYSTEM,
    SPLIT_SYSTEM,
    Standing,
    claim_response,
    coverage,
    coverage_eligibility_response,
    coverage_id,
    explanation_of_benefit,
    money,
)
from social_security.models import EnrolmentRow

CITIZEN = "c7f3a1b2"
FACILITY = "Provincial People's Hospital"
CREATED = datetime(2024, 5, 9, 9, 30, tzinfo=UTC)

# The worked case of issue 6: a 300,000 yuan inpatient bill, 270,000 in scope; basic insurance
# pays 100,000, critical illness 87,000. Line 2 is a Class C drug (30,000 excluded).
BILL = Bill(
    bill_id="ZY-2024-000123",
    facility=FACILITY,
    citizen=CITIZEN,
    visit_type=VisitType.INPATIENT,
    service_date=date(2024, 5, 3),
    lines=(
        BillLine(sequence=1, code="SURG-01", quantity=1, unit_price_fen=27_000_000),
        BillLine(sequence=2, code="DRUG-C9", quantity=10, unit_price_fen=300_000),
    ),
)
ADJUDICATION = Adjudication(
    scheme="resident_medical",
    rule_version=3,
    hospital_level=3,
    lines=(
        LineResult(
            sequence=1,
            code="SURG-01",
            amount_fen=27_000_000,
            catalogue_class="A",
            excluded_fen=0,
            over_cap_fen=0,
            first_self_pay_fen=0,
            in_scope_fen=27_000_000,
        ),
        LineResult(
            sequence=2,
            code="DRUG-C9",
            amount_fen=3_000_000,
            catalogue_class="C",
            excluded_fen=3_000_000,
            over_cap_fen=0,
            first_self_pay_fen=0,
            in_scope_fen=0,
            reasons=("CLASS_C",),
        ),
    ),
    total_fen=30_000_000,
    excluded_fen=3_000_000,
    over_cap_fen=0,
    first_self_pay_fen=0,
    in_scope_fen=27_000_000,
    deductible_fen=120_000,
    pooled_fen=10_000_000,
    critical_fen=8_700_000,
    assistance_fen=0,
    personal_account_fen=0,
    cash_fen=11_300_000,
    after=YearToDate(deductible_used_fen=120_000, pooled_paid_fen=10_000_000),
    reasons=("POOLED_CAP_REACHED",),
)


def fen(amount: dict[str, Any]) -> int:
    """Money read back as a careful client would: JSON text parsed as decimals."""
    value = json.loads(orjson.dumps(amount), parse_float=Decimal)["value"]
    assert amount["currency"] == "CNY"
    return int(Decimal(value) * 100)


def totals(resource: dict[str, Any], system: str) -> dict[str, int]:
    return {
        entry["category"]["coding"][0]["code"]: fen(entry["amount"])
        for entry in resource["total"]
        if entry["category"]["coding"][0]["system"] == system
    }


@pytest.mark.parametrize("amount", [0, 1, 10, 99, 1230, 250000, 123456789012345, 10**15 - 1])
def test_money_round_trips_to_the_fen(amount: int) -> None:
    assert fen(money(amount)) == amount


def test_money_round_trips_every_fen_of_the_first_thousand_yuan() -> None:
    assert all(fen(money(amount)) == amount for amount in range(100_000))


def test_money_refuses_a_float() -> None:
    with pytest.raises(TypeError):
        money(12.3)  # type: ignore[arg-type]


def test_settlement_claim_response_carries_the_split() -> None:
    resource = claim_response(
        ADJUDICATION,
        claim_id="clm-1",
        bill=BILL,
        outcome="complete",
        status="active",
        preauth=False,
        created=CREATED,
    )
    ClaimResponse.model_validate(resource)
    assert resource["use"] == "claim"
    assert totals(resource, SPLIT_SYSTEM) == {
        "pooled": 10_000_000,
        "critical": 8_700_000,
        "assistance": 0,
        "personal-account": 0,
        "cash": 11_300_000,
    }
    assert totals(resource, ADJUDICATION_SYSTEM) == {
        "submitted": 30_000_000,
        "eligible": 27_000_000,
        "deductible": 120_000,
        "copay": 0,
        "benefit": 18_700_000,
    }
    assert fen(resource["payment"]["amount"]) == 18_700_000
    assert resource["patient"]["identifier"]["value"] == CITIZEN
    assert resource["request"]["identifier"]["value"] == "ZY-2024-000123"


def test_each_line_is_adjudicated_and_explained() -> None:
    resource = claim_response(
        ADJUDICATION, claim_id="clm-1", bill=BILL, preauth=False, created=CREATED
    )
    drug = resource["item"][1]
    assert drug["itemSequence"] == 2
    by_category = {
        a["category"]["coding"][0]["code"]: fen(a["amount"]) for a in drug["adjudication"]
    }
    assert by_category == {
        "submitted": 3_000_000,
        "eligible": 0,
        "copay": 0,
        "excluded": 3_000_000,
        "over-cap": 0,
    }
    notes = {note["number"]: note["text"] for note in resource["processNote"]}
    assert notes == {1: "POOLED_CAP_REACHED", 2: "CLASS_C"}
    assert [notes[n] for n in drug["noteNumber"]] == ["CLASS_C"]
    assert "noteNumber" not in resource["item"][0]


def test_pre_settlement_is_a_predetermination_without_payment() -> None:
    resource = claim_response(
        ADJUDICATION, claim_id="clm-1", bill=BILL, preauth=True, created=CREATED
    )
    ClaimResponse.model_validate(resource)
    assert resource["use"] == "predetermination"
    assert "payment" not in resource
    assert totals(resource, SPLIT_SYSTEM)["critical"] == 8_700_000


def test_a_split_that_does_not_add_up_is_never_rendered() -> None:
    wrong = Adjudication(**{**_fields(ADJUDICATION), "cash_fen": ADJUDICATION.cash_fen - 1})
    with pytest.raises(ValueError, match="add up"):
        claim_response(wrong, claim_id="clm-1", bill=BILL, preauth=False)


def test_bad_status_and_claim_id_are_refused() -> None:
    with pytest.raises(ValueError, match="status must be"):
        claim_response(ADJUDICATION, claim_id="clm-1", bill=BILL, status="settled", preauth=False)
    with pytest.raises(ValueError, match="FHIR id"):
        claim_response(ADJUDICATION, claim_id="clm/1", bill=BILL, preauth=False)


def test_explanation_of_benefit_for_the_citizen() -> None:
    resource = explanation_of_benefit(ADJUDICATION, claim_id="clm-1", bill=BILL, created=CREATED)
    ExplanationOfBenefit.model_validate(resource)
    line = resource["item"][1]
    assert (line["quantity"]["value"], fen(line["unitPrice"]), fen(line["net"])) == (
        10,
        300_000,
        3_000_000,
    )
    assert totals(resource, SPLIT_SYSTEM)["cash"] == 11_300_000
    assert resource["claimResponse"]["reference"] == "ClaimResponse/clm-1"

    reversed_ = explanation_of_benefit(
        ADJUDICATION, claim_id="clm-1", bill=BILL, status="cancelled", created=CREATED
    )
    ExplanationOfBenefit.model_validate(reversed_)
    assert reversed_["status"] == "cancelled"
    assert "payment" not in reversed_


def enrolment(**overrides: Any) -> EnrolmentRow:
    values: dict[str, Any] = {
        "citizen": CITIZEN,
        "scheme": "employee_medical",
        "start_date": date(2020, 1, 1),
        "end_date": None,
        "status": "active",
        "employer": "Harbour Logistics Ltd",
    }
    return EnrolmentRow(**{**values, **overrides})


def test_coverage_of_an_enrolment() -> None:
    resource = coverage(enrolment(), CITIZEN)
    Coverage.model_validate(resource)
    assert resource["status"] == "active"
    assert resource["beneficiary"]["identifier"]["value"] == CITIZEN
    assert resource["policyHolder"] == {"display": "Harbour Logistics Ltd"}
    assert resource["id"] == coverage_id(enrolment())

    ended = coverage(enrolment(status="ended", end_date=date(2023, 6, 30)), CITIZEN)
    Coverage.model_validate(ended)
    assert (ended["status"], ended["period"]["end"]) == ("cancelled", "2023-06-30")
    assert ended["extension"][0]["valueCode"] == "ended"


def test_coverage_only_of_ones_own_medical_enrolment() -> None:
    with pytest.raises(ValueError, match="its own citizen"):
        coverage(enrolment(), "someone-else")
    with pytest.raises(ValueError, match="not a medical-insurance scheme"):
        coverage(enrolment(scheme="employee_pension"), CITIZEN)


def test_coverage_ids_are_fhir_ids_distinct_per_enrolment() -> None:
    ids = {
        coverage_id(enrolment(citizen="x" * 64)),
        coverage_id(enrolment(scheme="resident_medical")),
        coverage_id(enrolment(start_date=date(2021, 1, 1))),
        coverage_id(enrolment()),
    }
    assert len(ids) == 4
    assert all(len(i) <= 64 and i.replace("-", "").isalnum() for i in ids)


def test_eligibility_response_with_the_years_standing() -> None:
    standings = [
        Standing(
            enrolment=enrolment(),
            year_to_date=YearToDate(deductible_used_fen=80_000, pooled_paid_fen=1_500_000),
            deductible_fen=120_000,
            pooled_cap_fen=13_000_000,
            personal_account_fen=45_678,
        ),
        Standing(enrolment=enrolment(scheme="employee_pension")),
        Standing(
            enrolment=enrolment(
                scheme="resident_medical",
                status="ended",
                end_date=date(2019, 12, 31),
                start_date=date(2015, 1, 1),
            )
        ),
    ]
    resource = coverage_eligibility_response(
        standings, citizen=CITIZEN, on=date(2024, 5, 3), created=CREATED
    )
    CoverageEligibilityResponse.model_validate(resource)
    assert [i["inforce"] for i in resource["insurance"]] == [True, False]  # pension left out
    benefits = {
        b["type"]["coding"][0]["code"]: b for b in resource["insurance"][0]["item"][0]["benefit"]
    }
    assert fen(benefits["deductible"]["usedMoney"]) == 80_000
    assert fen(benefits["deductible"]["allowedMoney"]) == 120_000
    assert fen(benefits["benefit"]["allowedMoney"]) - fen(benefits["benefit"]["usedMoney"]) == (
        11_500_000
    )
    assert fen(benefits["personal-account"]["allowedMoney"]) == 45_678


def test_eligibility_response_without_medical_enrolment_validates() -> None:
    resource = coverage_eligibility_response(
        [], citizen=CITIZEN, on=date(2024, 5, 3), request_id="req-1"
    )
    CoverageEligibilityResponse.model_validate(resource)
    assert "insurance" not in resource


def test_any_problem_becomes_an_operation_outcome() -> None:
    outcome = outcome_of(Problem(404, "no such claim"))
    OperationOutcome.model_validate(outcome)
    assert outcome["issue"][0]["code"] == "not-found"


def _fields(adjudication: Adjudication) -> dict[str, Any]:
    return {name: getattr(adjudication, name) for name in Adjudication.__slots__}
