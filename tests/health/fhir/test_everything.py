"""Patient/$everything (FHIR R4 patient-operation-everything.html) on a Synthea patient: the
whole record, paged, filtered by _type and _since, only to whom may read it, audited."""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

import httpx
import pytest

from health.fhir.compartment import CITIZEN_SYSTEM
from tests.health.conftest import conforms, fhir_auth, synthea_file
from tests.health.test_who_may_read import HIV, consent, person

CITIZEN = "cz_everything0001"
GATEWAY = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gw.example.org"}
# The smallest Synthea patient keeps the tests quick on both backends.
PATIENT_BUNDLE = "Antonio_Castellanos"

Key = tuple[str, str]


def _bundle(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(synthea_file(name).read_text(encoding="utf-8"))
    return loaded


async def _load(fhir: httpx.AsyncClient) -> tuple[str, set[Key]]:
    """Hospital A loads the organizations, the practitioners and one patient's bundle (their
    Patient linked to a citizen); the patient's id and every (type, id) the bundle created."""
    for name in ("hospitalInformation", "practitionerInformation"):
        response = await fhir.post("/fhir", json=_bundle(name))
        assert response.status_code == 200, response.text[:1000]
    bundle = _bundle(PATIENT_BUNDLE)
    patient = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    patient["resource"]["identifier"].append({"system": CITIZEN_SYSTEM, "value": CITIZEN})
    response = await fhir.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text[:1000]
    created = set()
    for entry in response.json()["entry"]:
        resource_type, resource_id = entry["response"]["location"].split("/")[:2]
        created.add((resource_type, resource_id))
    patient_id = next(i for t, i in created if t == "Patient")
    return patient_id, created


def _keys(bundle: dict[str, Any], mode: str | None = None) -> list[Key]:
    return [
        (e["resource"]["resourceType"], e["resource"]["id"])
        for e in bundle.get("entry", [])
        if mode is None or e["search"]["mode"] == mode
    ]


async def _all_pages(
    fhir: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    pages = []
    while True:
        response = await fhir.get(url, headers=headers)
        assert response.status_code == 200, response.text[:1000]
        page = response.json()
        pages.append(page)
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not following:
            return pages
        assert len(pages) < 100, "paging does not end"
        url = following[0]
        base = f"{GATEWAY['X-Forwarded-Proto']}://{GATEWAY['X-Forwarded-Host']}"
        assert url.startswith(base + "/fhir/Patient/"), url
        url = url.removeprefix(base)


async def test_everything_returns_every_record_of_the_patient(fhir: httpx.AsyncClient) -> None:
    patient_id, created = await _load(fhir)
    response = await fhir.get(f"/fhir/Patient/{patient_id}/$everything?_count=1000")
    assert response.status_code == 200, response.text[:1000]
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = response.json()
    conforms(bundle)
    assert bundle["type"] == "searchset"
    matches = _keys(bundle, "match")
    assert len(matches) == len(set(matches))
    # Everything the transaction created is there: in the compartment, or (a Device, a
    # Medication) referenced from it.
    returned = set(_keys(bundle))
    assert created <= returned, sorted(created - returned)[:10]
    assert ("Patient", patient_id) in matches
    # ... with the practitioners and organizations they refer to, which are in no compartment.
    referenced_types = {t for t, _ in _keys(bundle, "include")}
    assert {"Practitioner", "Organization"} <= referenced_types
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert entry["fullUrl"].endswith(f"/{resource['resourceType']}/{resource['id']}")
    assert not [link for link in bundle["link"] if link["relation"] == "next"]


async def test_pages_follow_next_links_from_the_clients_base_and_end(
    fhir: httpx.AsyncClient,
) -> None:
    patient_id, _created = await _load(fhir)
    whole = (await fhir.get(f"/fhir/Patient/{patient_id}/$everything?_count=1000")).json()
    pages = await _all_pages(
        fhir, f"/fhir/Patient/{patient_id}/$everything?_count=40", headers=GATEWAY
    )
    assert len(pages) > 2
    paged = [key for page in pages for key in _keys(page, "match")]
    assert all(len(_keys(page, "match")) <= 40 for page in pages)
    assert len(paged) == len(set(paged)), "a record appeared on two pages"
    assert set(paged) == set(_keys(whole, "match"))
    # Referenced records come with the page that refers to them.
    included = {key for page in pages for key in _keys(page, "include")}
    assert included == set(_keys(whole, "include"))


async def test_type_keeps_only_the_types_named(fhir: httpx.AsyncClient) -> None:
    patient_id, created = await _load(fhir)
    response = await fhir.get(
        f"/fhir/Patient/{patient_id}/$everything",
        params={"_type": "Condition,Immunization", "_count": "1000"},
    )
    assert response.status_code == 200, response.text[:1000]
    returned = _keys(response.json())
    expected = {key for key in created if key[0] in ("Condition", "Immunization")}
    assert expected
    assert set(returned) == expected
    assert len(returned) == len(expected)


async def test_since_keeps_only_what_changed(fhir: httpx.AsyncClient) -> None:
    patient_id, created = await _load(fhir)
    condition_id = sorted(i for t, i in created if t == "Condition")[0]
    condition = (await fhir.get(f"/fhir/Condition/{condition_id}")).json()
    condition["clinicalStatus"]["coding"][0]["code"] = "resolved"
    condition.setdefault("abatementDateTime", "2026-11-01")
    updated = await fhir.put(f"/fhir/Condition/{condition_id}", json=condition)
    assert updated.status_code == 200, updated.text[:1000]
    since = updated.json()["meta"]["lastUpdated"]

    response = await fhir.get(f"/fhir/Patient/{patient_id}/$everything", params={"_since": since})
    assert response.status_code == 200, response.text[:1000]
    bundle = response.json()
    assert _keys(bundle, "match") == [("Condition", condition_id)]
    assert bundle["entry"][0]["resource"]["clinicalStatus"]["coding"][0]["code"] == "resolved"
    # The organizations and practitioners were written before _since: not repeated.
    assert _keys(bundle, "include") == []


async def test_post_takes_the_parameters_in_a_parameters_resource(
    fhir: httpx.AsyncClient,
) -> None:
    patient_id, created = await _load(fhir)
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueCode": "Encounter"},
            {"name": "_count", "valueInteger": 5},
        ],
    }
    response = await fhir.post(f"/fhir/Patient/{patient_id}/$everything", json=parameters)
    assert response.status_code == 200, response.text[:1000]
    bundle = response.json()
    assert Counter(t for t, _ in _keys(bundle, "match")) == {"Encounter": 5}
    assert any(link["relation"] == "next" for link in bundle["link"])
    encounters = {key for key in created if key[0] == "Encounter"}
    pages = await _all_pages(
        fhir, next(link["url"] for link in bundle["link"] if link["relation"] == "next")
    )
    seen = set(_keys(bundle, "match")) | {k for p in pages for k in _keys(p, "match")}
    assert seen == encounters


async def test_another_hospital_needs_the_patients_consent(fhir: httpx.AsyncClient) -> None:
    patient_id, created = await _load(fhir)
    url = f"/fhir/Patient/{patient_id}/$everything?_count=1000"
    refused = await fhir.get(url, headers=fhir_auth(client_id="hospital-b"))
    assert refused.status_code == 403
    assert refused.json()["resourceType"] == "OperationOutcome"

    # A sensitive record: the consent below does not name its label.
    sensitive = {
        "resourceType": "Observation",
        "meta": {"security": [HIV]},
        "status": "final",
        "code": {"text": "HIV viral load"},
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    written = await fhir.post("/fhir/Observation", json=sensitive)
    assert written.status_code == 201, written.text[:1000]
    sensitive_key = ("Observation", written.json()["id"])
    given = await fhir.post("/fhir/Consent", json=consent(f"Patient/{patient_id}", "hospital-b"))
    assert given.status_code == 201, given.text[:1000]

    allowed = await fhir.get(url, headers=fhir_auth(client_id="hospital-b"))
    assert allowed.status_code == 200, allowed.text[:1000]
    returned = set(_keys(allowed.json()))
    assert created <= returned
    assert sensitive_key not in returned
    # The hospital that wrote it sees it.
    own = set(_keys((await fhir.get(url)).json()))
    assert sensitive_key in own
    # Still nobody else's.
    other = await fhir.get(url, headers=fhir_auth(client_id="hospital-c"))
    assert other.status_code == 403


async def test_a_card_holder_reads_their_own_record_only(fhir: httpx.AsyncClient) -> None:
    patient_id, created = await _load(fhir)
    sensitive = {
        "resourceType": "Observation",
        "meta": {"security": [HIV]},
        "status": "final",
        "code": {"text": "HIV viral load"},
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    written = (await fhir.post("/fhir/Observation", json=sensitive)).json()
    url = f"/fhir/Patient/{patient_id}/$everything?_count=1000"
    # At another hospital's terminal (the patient present): everything but the sensitive.
    at_desk = await fhir.get(url, headers=person(CITIZEN))
    assert at_desk.status_code == 200, at_desk.text[:1000]
    returned = set(_keys(at_desk.json()))
    assert created <= returned
    assert ("Observation", written["id"]) not in returned
    # In their own app: the sensitive record too.
    in_app = await fhir.get(url, headers=person(CITIZEN, purpose="mobile_app"))
    assert ("Observation", written["id"]) in set(_keys(in_app.json()))
    # Another citizen: refused.
    stranger = await fhir.get(url, headers=person("cz_someoneelse001"))
    assert stranger.status_code == 403


async def test_references_never_reach_into_another_patients_record(
    fhir: httpx.AsyncClient,
) -> None:
    patient_id, _created = await _load(fhir)
    other = await fhir.post(
        "/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Other"}]}
    )
    other_id = other.json()["id"]
    linking = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "seen together"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "performer": [{"reference": f"Patient/{other_id}"}],
    }
    written = await fhir.post("/fhir/Observation", json=linking)
    assert written.status_code == 201, written.text[:1000]
    bundle = (await fhir.get(f"/fhir/Patient/{patient_id}/$everything?_count=1000")).json()
    returned = set(_keys(bundle))
    assert ("Observation", written.json()["id"]) in returned
    assert ("Patient", other_id) not in returned


async def test_scopes_narrow_the_answer_to_the_types_the_token_reads(
    fhir: httpx.AsyncClient,
) -> None:
    patient_id, _created = await _load(fhir)
    url = f"/fhir/Patient/{patient_id}/$everything?_count=1000"
    narrow = fhir_auth("system/Patient.r system/Condition.r")
    response = await fhir.get(url, headers=narrow)
    assert response.status_code == 200, response.text[:1000]
    assert {t for t, _ in _keys(response.json())} == {"Patient", "Condition"}
    no_patient = await fhir.get(url, headers=fhir_auth("system/Observation.r"))
    assert no_patient.status_code == 403


async def test_every_access_is_audited_once_per_patient(
    fhir: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    patient_id, _created = await _load(fhir)
    with caplog.at_level(logging.INFO, logger="services.kit.audit"):
        response = await fhir.get(f"/fhir/Patient/{patient_id}/$everything?_count=1000")
    assert response.status_code == 200
    records = [
        r.record  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "audit.local"
    ]
    everything = [r for r in records if r["outcome_detail"] == "$everything"]
    of_citizen = [r for r in everything if r["citizen"] == CITIZEN]
    assert len(of_citizen) == 1
    assert of_citizen[0]["action"] == "R"
    assert of_citizen[0]["entity_type"] == "Bundle"
    # The rest is the records in no compartment (practitioners, organizations).
    assert all(r["citizen"] is None for r in everything if r is not of_citizen[0])


async def test_bad_requests_are_refused_clearly(fhir: httpx.AsyncClient) -> None:
    unknown = await fhir.get("/fhir/Patient/nobody/$everything")
    assert unknown.status_code == 404
    patient_id, _created = await _load(fhir)
    base = f"/fhir/Patient/{patient_id}/$everything"
    for params, word in (
        ({"_type": "Nonsense"}, "Nonsense"),
        ({"_since": "yesterday"}, "_since"),
        ({"_since": "2026-01-01T00:00:00"}, "time zone"),
        ({"_count": "many"}, "_count"),
        ({"_cursor": "not-a-cursor"}, "_cursor"),
        ({"start": "2020-01-01"}, "start"),
        ({"colour": "blue"}, "colour"),
    ):
        response = await fhir.get(base, params=params)
        assert response.status_code == 400, (params, response.text)
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert word in outcome["issue"][0]["diagnostics"]
    not_parameters = await fhir.post(base, json={"resourceType": "Patient"})
    assert not_parameters.status_code == 400
    deleted = await fhir.delete(f"/fhir/Patient/{patient_id}")
    assert deleted.status_code in (200, 204), deleted.text
    assert (await fhir.get(base)).status_code == 410


async def test_the_capability_statement_declares_the_operations(fhir: httpx.AsyncClient) -> None:
    statement = (await fhir.get("/fhir/metadata")).json()
    conforms(statement)
    rest = statement["rest"][0]
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    everything = next(op for op in patient["operation"] if op["name"] == "everything")
    assert everything["definition"] == "http://hl7.org/fhir/OperationDefinition/Patient-everything"
    validate = next(op for op in rest["operation"] if op["name"] == "validate")
    assert validate["definition"] == "http://hl7.org/fhir/OperationDefinition/Resource-validate"
    # Only Patient has $everything.
    observation = next(r for r in rest["resource"] if r["type"] == "Observation")
    assert "everything" not in {op["name"] for op in observation.get("operation", [])}
