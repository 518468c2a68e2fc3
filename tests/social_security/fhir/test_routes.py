"""The FHIR face of settlement (``/insurance/fhir``) on both backends: a Claim pre-settled and
settled through ``Claim/$submit``, the citizen's ExplanationOfBenefit and Coverage, the
counter's eligibility check, and refusals as OperationOutcomes naming the element."""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx
from fhir.resources.R4B import get_fhir_model_class
from sqlmodel.ext.asyncio.session import AsyncSession

from social_security.fhir.claim import CATALOGUE_SYSTEM, CITIZEN_SYSTEM
from social_security.models import EnrolmentRow, ProviderRow
from tests.social_security.conftest import HOSPITAL, citizen_auth, counter_auth

BASE = "/insurance/fhir"
LI = "cz_li"
FHIR_JSON = {"Content-Type": "application/fhir+json"}


async def _province(session: AsyncSession) -> None:
    session.add(ProviderRow(facility=HOSPITAL, level=2, kind="hospital"))
    session.add(
        EnrolmentRow(
            citizen=LI, scheme="resident_medical", start_date=date(2026, 1, 1), status="active"
        )
    )
    await session.commit()


def claim(use: str = "claim", *, bill_id: str = "ZY-2026-0042") -> dict[str, Any]:
    def item(sequence: int, code: str, quantity: int, price: str) -> dict[str, Any]:
        return {
            "sequence": sequence,
            "productOrService": {"coding": [{"system": CATALOGUE_SYSTEM, "code": code}]},
            "quantity": {"value": quantity},
            "unitPrice": {"value": float(price), "currency": "CNY"},
        }

    return {
        "resourceType": "Claim",
        "identifier": [{"system": "urn:hospital:bills", "value": bill_id}],
        "status": "active",
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/claim-type",
                    "code": "institutional",
                }
            ]
        },
        "use": use,
        "patient": {"identifier": {"system": CITIZEN_SYSTEM, "value": LI}},
        "billablePeriod": {"start": "2026-11-02", "end": "2026-11-09"},
        "created": "2026-11-09T17:20:00+08:00",
        "provider": {"display": HOSPITAL},
        "priority": {"coding": [{"code": "normal"}]},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "medical"}}],
        "item": [
            item(1, "FA01", 7, "60.00"),
            item(2, "FA07", 1, "1500.00"),
            item(3, "XB02", 6, "15.00"),
            item(4, "FC02", 1, "800.00"),
        ],
    }


def valid(resource: dict[str, Any]) -> dict[str, Any]:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    return resource


def split(response: dict[str, Any]) -> dict[str, float]:
    return {
        t["category"]["coding"][0]["code"]: t["amount"]["value"]
        for t in response["total"]
        if t["category"]["coding"][0]["system"] == "urn:onecard:insurance-split"
    }


async def test_a_claim_is_predetermined_then_settled_and_the_citizen_sees_it(
    ss: httpx.AsyncClient, ss_session: AsyncSession
) -> None:
    await _province(ss_session)
    submit = f"{BASE}/Claim/$submit"
    estimate = await ss.post(
        submit, json=claim("predetermination"), headers={**counter_auth(LI), **FHIR_JSON}
    )
    assert estimate.status_code == 200, estimate.text
    assert estimate.headers["content-type"].startswith("application/fhir+json")
    predetermined = valid(estimate.json())
    assert predetermined["use"] == "predetermination"
    assert "payment" not in predetermined

    settled = await ss.post(submit, json=claim(), headers={**counter_auth(LI), **FHIR_JSON})
    assert settled.status_code == 200, settled.text
    response = valid(settled.json())
    assert response["resourceType"] == "ClaimResponse"
    assert response["use"] == "claim"
    assert split(response) == split(predetermined)
    assert sum(split(response).values()) == 2_810.0  # 420 + 1,500 + 90 + 800 yuan

    again = await ss.get(f"{BASE}/ClaimResponse/{response['id']}", headers=counter_auth(LI))
    assert again.status_code == 200
    assert again.json()["id"] == response["id"]

    eobs = await ss.get(f"{BASE}/ExplanationOfBenefit", headers=citizen_auth(LI, "patient/*.rs"))
    assert eobs.status_code == 200, eobs.text
    bundle = valid(eobs.json())
    assert bundle["total"] == 1
    assert bundle["entry"][0]["resource"]["id"] == response["id"]
    other = await ss.get(
        f"{BASE}/ExplanationOfBenefit/{response['id']}",
        headers=citizen_auth("cz_other", "patient/*.rs"),
    )
    assert other.status_code == 404
    assert other.json()["resourceType"] == "OperationOutcome"


async def test_coverage_and_eligibility(ss: httpx.AsyncClient, ss_session: AsyncSession) -> None:
    await _province(ss_session)
    coverage = await ss.get(f"{BASE}/Coverage", headers=citizen_auth(LI, "patient/*.rs"))
    assert coverage.status_code == 200, coverage.text
    bundle = valid(coverage.json())
    assert [e["resource"]["status"] for e in bundle["entry"]] == ["active"]
    eligibility = await ss.post(f"{BASE}/CoverageEligibilityRequest", headers=counter_auth(LI))
    assert eligibility.status_code == 200, eligibility.text
    answer = valid(eligibility.json())
    assert answer["insurance"][0]["inforce"] is True


async def test_a_bad_claim_is_an_operation_outcome_naming_the_element(
    ss: httpx.AsyncClient, ss_session: AsyncSession
) -> None:
    await _province(ss_session)
    bad = claim()
    bad["item"][1]["unitPrice"]["value"] = -1500.0
    refused = await ss.post(f"{BASE}/Claim/$submit", json=bad, headers=counter_auth(LI))
    assert refused.status_code == 422
    outcome = valid(refused.json())
    assert outcome["issue"][0]["expression"] == ["Claim.item[1].unitPrice.value"]
    assert outcome["issue"][0]["details"]["coding"][0]["code"] == "NEGATIVE_AMOUNT"

    unknown = claim(bill_id="ZY-2")
    unknown["item"][0]["productOrService"]["coding"][0]["code"] = "NOPE"
    refused = await ss.post(f"{BASE}/Claim/$submit", json=unknown, headers=counter_auth(LI))
    assert refused.status_code == 422
    assert valid(refused.json())["issue"][0]["details"]["coding"][0]["code"] == "UNKNOWN_CODE"

    not_json = await ss.post(f"{BASE}/Claim/$submit", content=b"{", headers=counter_auth(LI))
    assert not_json.status_code == 400
    assert not_json.json()["resourceType"] == "OperationOutcome"

    no_card = await ss.post(f"{BASE}/Claim/$submit", json=claim(), headers=citizen_auth(LI))
    assert no_card.status_code == 403
    assert no_card.json()["resourceType"] == "OperationOutcome"
