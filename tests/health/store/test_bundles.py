"""Transaction and batch Bundles (FHIR R4 http.html#transaction, bundle.html#transaction)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx

from tests.health.conftest import SYNTHEA_DIR, conforms, synthea_file


def transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post(resource: dict[str, Any], full_url: str | None = None, **request: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


PATIENT_URN = "urn:uuid:0b7d7d1e-3f3c-4d0e-9f55-6c1f2f0c0a01"


def the_patient(value: str = "cz-1") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:onecard:citizen", "value": value}],
    }


def an_observation(subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "heart rate"},
        "subject": {"reference": subject},
        "valueQuantity": {"value": 72, "unit": "/min"},
    }


async def test_transaction_resolves_urn_uuid_references(fhir: httpx.AsyncClient) -> None:
    response = await fhir.post(
        "/fhir",
        json=transaction(
            post(an_observation(PATIENT_URN)),  # refers to an entry further down
            post(the_patient(), PATIENT_URN),
        ),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    conforms(body)
    assert body["type"] == "transaction-response"
    observation_entry, patient_entry = body["entry"]
    assert patient_entry["response"]["status"] == "201 Created"
    patient_id = patient_entry["response"]["location"].split("/")[1]
    observation_id = observation_entry["response"]["location"].split("/")[1]
    stored = (await fhir.get(f"/fhir/Observation/{observation_id}")).json()
    assert stored["subject"]["reference"] == f"Patient/{patient_id}"


async def test_transaction_is_all_or_nothing(fhir: httpx.AsyncClient) -> None:
    bad = an_observation(PATIENT_URN)
    bad["valueQuantity"] = {"value": "seventy-two"}
    response = await fhir.post(
        "/fhir", json=transaction(post(the_patient(), PATIENT_URN), post(bad))
    )
    assert response.status_code in (400, 422)
    issue = response.json()["issue"][0]
    assert issue["expression"][0].startswith("Bundle.entry[1].resource.valueQuantity.value")
    history = (await fhir.get("/fhir/_history")).json()
    assert history.get("entry", []) == []


async def test_a_reference_to_no_entry_fails_the_transaction(fhir: httpx.AsyncClient) -> None:
    response = await fhir.post(
        "/fhir",
        json=transaction(
            post(the_patient(), PATIENT_URN),
            post(an_observation("urn:uuid:00000000-0000-0000-0000-000000000000")),
        ),
    )
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[1].resource.subject.reference"]
    assert (await fhir.get("/fhir/_history")).json().get("entry", []) == []


async def test_conditional_references_and_conditional_create(fhir: httpx.AsyncClient) -> None:
    existing = (await fhir.post("/fhir/Patient", json=the_patient("cz-9"))).json()
    response = await fhir.post(
        "/fhir",
        json=transaction(
            post(
                the_patient("cz-9"),
                PATIENT_URN,
                ifNoneExist="identifier=urn:onecard:citizen|cz-9",
            ),
            post(an_observation(PATIENT_URN)),
            post(an_observation("Patient?identifier=urn:onecard:citizen|cz-9")),
        ),
    )
    assert response.status_code == 200, response.text
    patient_entry, *observations = response.json()["entry"]
    assert patient_entry["response"]["status"] == "200 OK"
    for entry in observations:
        observation_id = entry["response"]["location"].split("/")[1]
        stored = (await fhir.get(f"/fhir/Observation/{observation_id}")).json()
        assert stored["subject"]["reference"] == f"Patient/{existing['id']}"

    unmatched = await fhir.post(
        "/fhir",
        json=transaction(post(an_observation("Patient?identifier=urn:onecard:citizen|nobody"))),
    )
    assert unmatched.status_code == 412
    assert unmatched.json()["issue"][0]["expression"] == [
        "Bundle.entry[0].resource.subject.reference"
    ]


async def test_processing_order_and_every_interaction(fhir: httpx.AsyncClient) -> None:
    kept = (await fhir.post("/fhir/Patient", json=the_patient("keep"))).json()
    doomed = (await fhir.post("/fhir/Patient", json=the_patient("doomed"))).json()
    patched = (await fhir.post("/fhir/Patient", json=the_patient("patched"))).json()
    patch = [{"op": "add", "path": "/gender", "value": "other"}]
    response = await fhir.post(
        "/fhir",
        json=transaction(
            # GET runs last, so it sees the update made in the same transaction.
            {"request": {"method": "GET", "url": f"Patient/{kept['id']}"}},
            {
                "resource": {**kept, "gender": "female"},
                "request": {"method": "PUT", "url": f"Patient/{kept['id']}", "ifMatch": 'W/"1"'},
            },
            {"request": {"method": "DELETE", "url": f"Patient/{doomed['id']}"}},
            {
                "resource": {
                    "resourceType": "Binary",
                    "contentType": "application/json-patch+json",
                    "data": base64.b64encode(json.dumps(patch).encode()).decode(),
                },
                "request": {"method": "PATCH", "url": f"Patient/{patched['id']}"},
            },
            {
                "resource": the_patient("new-with-id") | {"id": "chosen"},
                "request": {"method": "PUT", "url": "Patient/chosen"},
            },
        ),
    )
    assert response.status_code == 200, response.text
    conforms(response.json())
    read, put, delete, patch_entry, create = response.json()["entry"]
    assert read["resource"]["gender"] == "female"
    assert put["response"]["status"] == "200 OK"
    assert put["response"]["etag"] == 'W/"2"'
    assert delete["response"]["status"] == "204 No Content"
    assert patch_entry["response"]["status"] == "200 OK"
    assert create["response"]["status"] == "201 Created"
    assert (await fhir.get(f"/fhir/Patient/{doomed['id']}")).status_code == 410
    assert (await fhir.get(f"/fhir/Patient/{patched['id']}")).json()["gender"] == "other"
    assert (await fhir.get("/fhir/Patient/chosen")).status_code == 200


async def test_a_stale_if_match_fails_the_whole_transaction(fhir: httpx.AsyncClient) -> None:
    kept = (await fhir.post("/fhir/Patient", json=the_patient())).json()
    response = await fhir.post(
        "/fhir",
        json=transaction(
            post(the_patient("another")),
            {
                "resource": kept,
                "request": {"method": "PUT", "url": f"Patient/{kept['id']}", "ifMatch": 'W/"7"'},
            },
        ),
    )
    assert response.status_code == 412
    history = (await fhir.get("/fhir/Patient/_history")).json()
    assert len(history["entry"]) == 1


async def test_malformed_bundles(fhir: httpx.AsyncClient) -> None:
    not_bundle = await fhir.post("/fhir", json={"resourceType": "Patient"})
    assert not_bundle.status_code == 400
    wrong_type = await fhir.post("/fhir", json={"resourceType": "Bundle", "type": "collection"})
    assert wrong_type.status_code == 400
    no_request = await fhir.post("/fhir", json=transaction({"resource": the_patient()}))
    assert no_request.status_code == 400
    assert no_request.json()["issue"][0]["expression"] == ["Bundle.entry[0].request"]
    bad_url = await fhir.post(
        "/fhir", json=transaction({"request": {"method": "GET", "url": "patients/1/2/3"}})
    )
    assert bad_url.status_code == 400
    twice = await fhir.post(
        "/fhir",
        json=transaction(
            {"request": {"method": "DELETE", "url": "Patient/a"}},
            {"request": {"method": "DELETE", "url": "Patient/a"}},
        ),
    )
    assert twice.status_code == 400


async def test_batch_entries_succeed_or_fail_alone(fhir: httpx.AsyncClient) -> None:
    response = await fhir.post(
        "/fhir",
        json=transaction(
            post(the_patient()),
            post({"resourceType": "Patient", "colour": "blue"}),
            {"request": {"method": "GET", "url": "Patient/nobody"}},
            post(an_observation("urn:uuid:0b7d7d1e-3f3c-4d0e-9f55-6c1f2f0c0a99")),
            kind="batch",
        ),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    conforms(body)
    assert body["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created", "400 Bad Request", "404 Not Found", "400 Bad Request"]
    assert body["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    created_id = body["entry"][0]["response"]["location"].split("/")[1]
    assert (await fhir.get(f"/fhir/Patient/{created_id}")).status_code == 200
    history = (await fhir.get("/fhir/_history")).json()
    assert len(history["entry"]) == 1


def synthea(name: str) -> dict[str, Any]:
    path = synthea_file(name)
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


async def test_synthea_bundles_load_in_one_request_each_and_read_back(
    fhir: httpx.AsyncClient,
) -> None:
    for name in ("hospitalInformation", "practitionerInformation"):
        response = await fhir.post("/fhir", json=synthea(name))
        assert response.status_code == 200, response.text[:2000]
    bundle = synthea("Alexis_Toy")
    response = await fhir.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text[:2000]
    results = response.json()["entry"]
    assert len(results) == len(bundle["entry"])
    assert {e["response"]["status"] for e in results} == {"201 Created"}

    ids = {
        source["fullUrl"]: result["response"]["location"].split("/_history")[0]
        for source, result in zip(bundle["entry"], results, strict=True)
    }
    patient_url = next(
        ids[e["fullUrl"]] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    for source in bundle["entry"]:
        stored = await fhir.get(f"/fhir/{ids[source['fullUrl']]}")
        assert stored.status_code == 200
        resource = stored.json()
        original = source["resource"]
        assert resource["resourceType"] == original["resourceType"]
        # Every urn:uuid reference now names the stored resource.
        text = json.dumps(resource)
        assert "urn:uuid:" not in text
        subject = resource.get("subject") or resource.get("patient")
        if isinstance(subject, dict) and original["resourceType"] != "Patient":
            assert subject["reference"] == patient_url


async def test_a_batch_can_search_and_read_versions(fhir: httpx.AsyncClient) -> None:
    first = (await fhir.post("/fhir/Patient", json=the_patient("cz-5"))).json()
    await fhir.post("/fhir/Patient", json=the_patient("cz-6"))
    response = await fhir.post(
        "/fhir",
        json=transaction(
            {"request": {"method": "GET", "url": "Patient?identifier=urn:onecard:citizen|cz-5"}},
            {"request": {"method": "GET", "url": f"Patient/{first['id']}/_history/1"}},
            {"request": {"method": "GET", "url": "Patient?shoe-size=42"}},
            kind="batch",
        ),
    )
    assert response.status_code == 200, response.text
    conforms(response.json())
    search, version, unknown = response.json()["entry"]
    assert search["resource"]["type"] == "searchset"
    assert [e["resource"]["id"] for e in search["resource"]["entry"]] == [first["id"]]
    assert version["resource"]["meta"]["versionId"] == "1"
    assert version["response"]["etag"] == 'W/"1"'
    assert unknown["response"]["status"] == "400 Bad Request"


async def test_every_synthea_bundle_loads_with_zero_errors(fhir: httpx.AsyncClient) -> None:
    # hospitalInformation* and practitionerInformation* first: the patients' bundles name
    # their organizations and practitioners.
    paths = sorted(SYNTHEA_DIR.glob("*.json"), key=lambda p: ("Information" not in p.name, p))
    assert len(paths) == 22, f"expected the 22 Synthea bundles in {SYNTHEA_DIR}"
    assert len(paths) > 2
    loaded = 0
    for path in paths:
        bundle = json.loads(path.read_bytes())
        response = await fhir.post("/fhir", json=bundle)
        assert response.status_code == 200, f"{path.name}: {response.text[:1000]}"
        statuses = {e["response"]["status"] for e in response.json()["entry"]}
        assert statuses == {"201 Created"}, path.name
        loaded += len(bundle["entry"])
    assert loaded > 5000


async def test_concurrent_transactions_with_one_conditional_create_make_one_patient(
    fhir: httpx.AsyncClient,
) -> None:
    condition = "identifier=urn:onecard:citizen|cz-tx"

    async def load() -> httpx.Response:
        return await fhir.post(
            "/fhir",
            json=transaction(
                post(the_patient("cz-tx"), PATIENT_URN, ifNoneExist=condition),
                post(an_observation(PATIENT_URN)),
            ),
        )

    responses = await asyncio.gather(*(load() for _ in range(10)))
    assert [r.status_code for r in responses] == [200] * 10, [r.text for r in responses]
    patients = {r.json()["entry"][0]["response"]["location"].split("/")[1] for r in responses}
    assert len(patients) == 1
    (patient_id,) = patients
    for response in responses:
        location = response.json()["entry"][1]["response"]["location"]
        stored = (await fhir.get(f"/fhir/{location.split('/_history')[0]}")).json()
        assert stored["subject"]["reference"] == f"Patient/{patient_id}"
