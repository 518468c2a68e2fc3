"""A hospital's FHIR Claim read into the Bill the engine settles, and every refusal naming the
element at fault (FHIRPath) with its reason code."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from fhir.resources.R4B.operationoutcome import OperationOutcome

from social_security.claims.bill import Bill, BillLine, VisitType
from social_security.fhir.claim import CATALOGUE_SYSTEM, bill_from_claim
from social_security.fhir.outcome import REASON_SYSTEM, FhirInvalid

CITIZEN = "c7f3a1b2"
FACILITY = "Provincial People's Hospital"


def good_claim() -> dict[str, Any]:
    return {
        "resourceType": "Claim",
        "identifier": [{"system": "urn:hospital:bills", "value": "ZY-2024-000123"}],
        "status": "active",
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/claim-type",
                    "code": "institutional",
                }
            ]
        },
        "use": "claim",
        "patient": {"identifier": {"system": "urn:onecard:citizen", "value": CITIZEN}},
        "billablePeriod": {"start": "2024-05-03", "end": "2024-05-09"},
        "created": "2024-05-09T17:20:00+08:00",
        "provider": {"display": FACILITY},
        "priority": {"coding": [{"code": "normal"}]},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "medical"}}],
        "item": [
            {
                "sequence": 1,
                "productOrService": {
                    "coding": [
                        {"system": "urn:hospital:local", "code": "LOCAL-9"},
                        {"system": CATALOGUE_SYSTEM, "code": "XA01"},
                    ]
                },
                "quantity": {"value": 3},
                "unitPrice": {"value": 12.30, "currency": "CNY"},
                "net": {"value": 36.90, "currency": "CNY"},
            },
            {
                "sequence": 2,
                "productOrService": {"coding": [{"system": CATALOGUE_SYSTEM, "code": "B-771"}]},
                "quantity": {"value": 1},
                "unitPrice": {"value": 2500, "currency": "CNY"},
            },
        ],
        "total": {"value": 2536.90, "currency": "CNY"},
    }


def parse(resource: dict[str, Any]) -> Bill:
    return bill_from_claim(resource, facility=FACILITY, citizen=CITIZEN)


def refusal(resource: dict[str, Any]) -> FhirInvalid:
    with pytest.raises(FhirInvalid) as caught:
        parse(resource)
    return caught.value


def test_a_good_claim_is_the_exact_bill() -> None:
    assert parse(good_claim()) == Bill(
        bill_id="ZY-2024-000123",
        facility=FACILITY,
        citizen=CITIZEN,
        visit_type=VisitType.INPATIENT,
        service_date=date(2024, 5, 3),
        lines=(
            BillLine(sequence=1, code="XA01", quantity=3, unit_price_fen=1230),
            BillLine(sequence=2, code="B-771", quantity=1, unit_price_fen=250000),
        ),
    )


def test_amounts_read_from_json_text_are_exact_fen() -> None:
    text = json.dumps(good_claim()).replace("12.3", "12.30").replace("36.9,", "36.90,")
    for claim in (json.loads(text), json.loads(text, parse_float=Decimal)):
        assert parse(claim).lines[0].unit_price_fen == 1230
        assert parse(claim).total_fen == 253690


def test_without_patient_the_claim_is_for_the_card_holder() -> None:
    claim = good_claim()
    del claim["patient"]
    assert parse(claim).citizen == CITIZEN


def test_outpatient_claim_dated_by_its_items_in_the_hospitals_time_zone() -> None:
    claim = good_claim()
    claim["type"]["coding"][0]["code"] = "pharmacy"
    del claim["billablePeriod"]
    claim["item"][0]["servicedDate"] = "2024-05-04"
    claim["item"][1]["servicedPeriod"] = {"start": "2024-05-03T23:30:00+08:00"}
    bill = parse(claim)
    assert bill.visit_type is VisitType.OUTPATIENT
    assert bill.service_date == date(2024, 5, 3)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation of the good claim: set the element at a dotted path (ints index lists)."""

    def mutate(claim: dict[str, Any]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = claim
        for part in parents:
            node = node[part]
        node[last] = value

    return mutate


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda claim: claim.pop(key)


BAD_CLAIMS = [
    # (name, mutation, status, expression, reason)
    (
        "missing identifier",
        _delete("identifier"),
        422,
        "Claim.identifier[0].value",
        "MISSING_BILL_ID",
    ),
    (
        "negative price",
        _set("item.1.unitPrice.value", -2500),
        422,
        "Claim.item[1].unitPrice.value",
        "NEGATIVE_AMOUNT",
    ),
    (
        "1.5 quantity",
        _set("item.0.quantity.value", 1.5),
        422,
        "Claim.item[0].quantity.value",
        "NOT_INTEGER",
    ),
    (
        "zero quantity",
        _set("item.0.quantity.value", 0),
        422,
        "Claim.item[0].quantity.value",
        "ZERO_QUANTITY",
    ),
    (
        "3-decimal price",
        _set("item.1.unitPrice.value", 2500.005),
        422,
        "Claim.item[1].unitPrice.value",
        "NOT_INTEGER",
    ),
    (
        "fraction of a fen beyond Decimal precision",
        _set("item.1.unitPrice.value", Decimal("2500.000000000000000000000000000001")),
        422,
        "Claim.item[1].unitPrice.value",
        "NOT_INTEGER",
    ),
    (
        "dollars",
        _set("item.1.unitPrice.currency", "USD"),
        422,
        "Claim.item[1].unitPrice.currency",
        "WRONG_CURRENCY",
    ),
    (
        "unknown system",
        _set("item.1.productOrService.coding.0.system", "urn:other"),
        422,
        "Claim.item[1].productOrService.coding",
        "UNKNOWN_CODE",
    ),
    (
        "net mismatch",
        _set("item.0.net.value", 36.00),
        422,
        "Claim.item[0].net.value",
        "AMOUNT_MISMATCH",
    ),
    ("total mismatch", _set("total.value", 2536.00), 422, "Claim.total.value", "AMOUNT_MISMATCH"),
    (
        "another citizen",
        _set("patient.identifier.value", "someone-else"),
        422,
        "Claim.patient.identifier.value",
        "OTHER_PATIENT",
    ),
    (
        "patient by reference only",
        _set("patient", {"reference": "Patient/17"}),
        422,
        "Claim.patient.identifier",
        "OTHER_PATIENT",
    ),
    (
        "dental claim",
        _set("type.coding.0.code", "oral"),
        422,
        "Claim.type",
        "UNSUPPORTED_CLAIM_TYPE",
    ),
    ("draft claim", _set("status", "draft"), 422, "Claim.status", "CLAIM_NOT_ACTIVE"),
    (
        "month only",
        _set("billablePeriod.start", "2024-05"),
        422,
        "Claim.billablePeriod.start",
        "MISSING_SERVICE_DATE",
    ),
    (
        "same sequence twice",
        _set("item.1.sequence", 1),
        422,
        "Claim.item[1].sequence",
        "DUPLICATE_LINE",
    ),
    (
        "no unit price",
        lambda c: c["item"][1].pop("unitPrice"),
        422,
        "Claim.item[1].unitPrice.value",
        "MISSING_AMOUNT",
    ),
    ("item factor", _set("item.1.factor", 0.5), 422, "Claim.item[1].factor", "UNSUPPORTED_ELEMENT"),
    (
        "wrong resourceType",
        _set("resourceType", "Patient"),
        400,
        "resourceType",
        "INVALID_RESOURCE",
    ),
    (
        "unknown element",
        _set("item.0.colour", "blue"),
        400,
        "Claim.item[0].colour",
        "INVALID_RESOURCE",
    ),
    (
        "unreadable price",
        _set("item.1.unitPrice.value", "a lot"),
        400,
        "Claim.item[1].unitPrice.value",
        "INVALID_RESOURCE",
    ),
    ("missing status", _delete("status"), 400, "Claim.status", "INVALID_RESOURCE"),
]


@pytest.mark.parametrize(
    ("mutate", "status", "expression", "reason"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_CLAIMS],
)
def test_bad_claims_are_refused_naming_the_element(
    mutate: Callable[[dict[str, Any]], None], status: int, expression: str, reason: str
) -> None:
    claim = copy.deepcopy(good_claim())
    mutate(claim)
    refused = refusal(claim)
    assert (refused.status, refused.expression, refused.reason) == (
        status,
        (expression,),
        reason,
    )
    outcome = refused.outcome()
    OperationOutcome.model_validate(outcome)  # a valid R4 OperationOutcome
    issue = outcome["issue"][0]
    assert issue["expression"] == [expression]
    assert issue["details"]["coding"] == [{"system": REASON_SYSTEM, "code": reason}]
    assert issue["diagnostics"]


def test_every_bad_line_is_named_in_one_refusal() -> None:
    claim = good_claim()
    claim["item"][0]["quantity"]["value"] = -1
    claim["item"][1]["unitPrice"]["value"] = 0.001
    refused = refusal(claim)
    assert refused.status == 422
    assert [issue.expression for issue in refused.issues] == [
        ("Claim.item[0].quantity.value",),
        ("Claim.item[1].unitPrice.value",),
    ]
    assert refused.reasons == ("NEGATIVE_AMOUNT", "NOT_INTEGER")


def test_refusals_never_repeat_the_identifiers_they_were_sent() -> None:
    claim = good_claim()
    claim["patient"]["identifier"]["value"] = "110101199003077777"  # looks like an ID number
    claim["identifier"][0]["value"] = "X" * 65
    refused = refusal(claim)
    text = json.dumps(refused.outcome())
    assert "110101199003077777" not in text
    assert "X" * 65 not in text
    assert refused.reasons == ("OTHER_PATIENT", "MISSING_BILL_ID")


def test_a_body_that_is_no_object_is_a_400() -> None:
    refused = refusal([good_claim()])  # type: ignore[arg-type]
    assert (refused.status, refused.issue_code) == (400, "structure")


def test_an_absurd_amount_is_refused_not_computed() -> None:
    claim = good_claim()
    claim["item"][1]["unitPrice"]["value"] = Decimal("1e999999")
    refused = refusal(claim)
    assert refused.reason == "AMOUNT_TOO_LARGE"
