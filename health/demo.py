"""The demo province's health records: the demo hospital posts each demo citizen's record.

Runs after the identity seeder (``onecard up --demo``), through the gateway, as the hospital's
system would: a SMART Backend Services token, then one FHIR ``transaction`` Bundle per citizen
(FHIR R4 http.html#transaction) with a conditional create of the Patient (``ifNoneExist`` on the
platform's citizen identifier, so seeding twice never duplicates anyone) and the records of a
first visit that refer to it by its ``urn:uuid``.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx

from health.fhir.compartment import CITIZEN_SYSTEM
from services.kit.credentials import ClientCredentials

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"


async def seed(*, base_url: str, var_dir: Path) -> list[str]:
    demo = var_dir / "demo"
    marker = demo / "health-seeded"
    if not marker.exists():
        citizens = json.loads((demo / "citizens.json").read_text())
        hospital = ClientCredentials.load(demo / "hospital.json")
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            token = await hospital.fetch_token(http, "system/*.cruds")
            headers = {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/fhir+json",
            }
            for citizen in citizens:
                response = await http.post("/fhir", json=first_visit(citizen), headers=headers)
                if response.status_code != 200:
                    raise RuntimeError(
                        f"the demo hospital could not post {citizen['slug']}'s record "
                        f"({response.status_code}): {response.text[:500]}"
                    )
        marker.write_text("the demo health records are posted; delete var/ to start over\n")
    return [
        "Tap the card at the registration desk, then read the records while the patient is there:",
        "  .venv/bin/onecard terminal tap --terminal var/demo/terminals/registration-desk.json "
        "--card var/demo/cards/zhang-wei.card --pin --read Observation",
        "See who accessed Zhang Wei's data, each entry proven in the signed ledger:",
        "  .venv/bin/onecard app access-log --card var/demo/cards/zhang-wei.card",
    ]


def first_visit(citizen: dict[str, Any]) -> dict[str, Any]:
    """A transaction Bundle: the citizen's Patient and the records of one outpatient visit."""
    patient = f"urn:uuid:{uuid.uuid4()}"
    encounter = f"urn:uuid:{uuid.uuid4()}"
    identifier = f"{CITIZEN_SYSTEM}|{citizen['pseudonym']}"
    when = "2026-11-20T09:30:00+08:00"
    subject = {"reference": patient}
    resources: list[tuple[str, dict[str, Any], str | None]] = [
        (
            patient,
            {
                "resourceType": "Patient",
                "identifier": [{"system": CITIZEN_SYSTEM, "value": citizen["pseudonym"]}],
                "name": [{"text": citizen["name"]}],
                "gender": citizen["gender"],
                "birthDate": citizen["birth_date"],
            },
            f"identifier={identifier}",
        ),
        (
            encounter,
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "AMB",
                    "display": "ambulatory",
                },
                "subject": subject,
                "period": {"start": when, "end": "2026-11-20T10:10:00+08:00"},
            },
            None,
        ),
        (
            f"urn:uuid:{uuid.uuid4()}",
            _observation(subject, encounter, when, "8480-6", "Systolic blood pressure", 142),
            None,
        ),
        (
            f"urn:uuid:{uuid.uuid4()}",
            _observation(subject, encounter, when, "8462-4", "Diastolic blood pressure", 91),
            None,
        ),
        (
            f"urn:uuid:{uuid.uuid4()}",
            {
                "resourceType": "Condition",
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": {
                    "coding": [{"system": SNOMED, "code": "38341003", "display": "Hypertension"}],
                    "text": "Hypertension",
                },
                "subject": subject,
                "encounter": {"reference": encounter},
                "recordedDate": when,
            },
            None,
        ),
    ]
    entries = []
    for full_url, resource, if_none_exist in resources:
        request: dict[str, str] = {"method": "POST", "url": resource["resourceType"]}
        if if_none_exist:
            request["ifNoneExist"] = if_none_exist
        entries.append({"fullUrl": full_url, "resource": resource, "request": request})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _observation(
    subject: dict[str, str], encounter: str, when: str, code: str, display: str, value: int
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
        "subject": subject,
        "encounter": {"reference": encounter},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
    }
