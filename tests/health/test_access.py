"""SMART v2 scopes decide which interactions a token may use (health/access.py)."""

from __future__ import annotations

import httpx

from tests.health.conftest import fhir_auth

PATIENT = {"resourceType": "Patient", "gender": "female"}


async def test_scopes_grant_interactions_letter_by_letter(fhir: httpx.AsyncClient) -> None:
    created = await fhir.post("/fhir/Patient", json=PATIENT, headers=fhir_auth("system/Patient.c"))
    assert created.status_code == 201
    url = f"/fhir/Patient/{created.json()['id']}"

    cannot_read = await fhir.get(url, headers=fhir_auth("system/Patient.c"))
    assert cannot_read.status_code == 403
    assert cannot_read.json()["issue"][0]["code"] == "forbidden"
    assert 'error="insufficient_scope"' in cannot_read.headers["WWW-Authenticate"]

    assert (await fhir.get(url, headers=fhir_auth("user/Patient.r"))).status_code == 200
    assert (await fhir.get(url, headers=fhir_auth("system/Observation.r"))).status_code == 403
    update = await fhir.put(url, json=created.json(), headers=fhir_auth("system/Patient.r"))
    assert update.status_code == 403
    assert (await fhir.delete(url, headers=fhir_auth("system/Patient.ru"))).status_code == 403
    assert (await fhir.delete(url, headers=fhir_auth("system/Patient.d"))).status_code == 204


async def test_conditional_interactions_also_need_search(fhir: httpx.AsyncClient) -> None:
    response = await fhir.post(
        "/fhir/Patient",
        json=PATIENT,
        headers={**fhir_auth("system/Patient.c"), "If-None-Exist": "gender=female"},
    )
    assert response.status_code == 403


async def test_system_history_needs_a_wildcard_read(fhir: httpx.AsyncClient) -> None:
    refused = await fhir.get("/fhir/_history", headers=fhir_auth("system/Patient.rs"))
    assert refused.status_code == 403
    assert (await fhir.get("/fhir/_history", headers=fhir_auth("system/*.r"))).status_code == 200


async def test_a_transaction_is_refused_whole_when_one_entry_is_not_allowed(
    fhir: httpx.AsyncClient,
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": PATIENT, "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": {"resourceType": "Observation", "status": "final", "code": {}},
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    response = await fhir.post("/fhir", json=bundle, headers=fhir_auth("system/Patient.c"))
    assert response.status_code == 403
    everything = await fhir.get("/fhir/_history")
    assert everything.json().get("entry", []) == []


async def test_no_token_is_401_as_an_operation_outcome(fhir: httpx.AsyncClient) -> None:
    response = await fhir.get("/fhir/Patient/x", headers={"Authorization": ""})
    assert response.status_code == 401
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.json()["issue"][0]["code"] == "login"


async def test_update_as_create_also_needs_create(fhir: httpx.AsyncClient) -> None:
    body = {**PATIENT, "id": "p-new"}
    refused = await fhir.put(
        "/fhir/Patient/p-new", json=body, headers=fhir_auth("system/Patient.u")
    )
    assert refused.status_code == 403
    assert (await fhir.get("/fhir/Patient/p-new")).status_code == 404
    allowed = await fhir.put(
        "/fhir/Patient/p-new", json=body, headers=fhir_auth("system/Patient.cu")
    )
    assert allowed.status_code == 201
