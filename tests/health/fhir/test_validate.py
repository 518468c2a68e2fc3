"""$validate (FHIR R4 resource-operation-validate.html): an OperationOutcome naming what is
wrong, for a would-be create, update or delete, and nothing stored."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.health.conftest import conforms, fhir_auth, synthea_file


def observation(**fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "heart rate"},
        "valueQuantity": {"value": 72, "unit": "/min"},
        **fields,
    }


def parameters(resource: dict[str, Any] | None, mode: str | None = None) -> dict[str, Any]:
    wrapped: list[dict[str, Any]] = []
    if resource is not None:
        wrapped.append({"name": "resource", "resource": resource})
    if mode is not None:
        wrapped.append({"name": "mode", "valueCode": mode})
    return {"resourceType": "Parameters", "parameter": wrapped}


def errors(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")]


async def stored(fhir: httpx.AsyncClient) -> list[Any]:
    history = await fhir.get("/fhir/_history")
    assert history.status_code == 200, history.text
    entries: list[Any] = history.json().get("entry", [])
    return entries


async def _valid(fhir: httpx.AsyncClient, url: str, body: Any) -> dict[str, Any]:
    response = await fhir.post(url, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome: dict[str, Any] = response.json()
    conforms(outcome)
    assert outcome["resourceType"] == "OperationOutcome"
    return outcome


async def test_a_valid_resource_has_no_issues_and_is_not_stored(fhir: httpx.AsyncClient) -> None:
    outcome = await _valid(fhir, "/fhir/Observation/$validate", observation())
    assert errors(outcome) == []
    assert outcome["issue"][0]["severity"] == "information"
    assert await stored(fhir) == []


async def test_a_bad_resource_is_reported_with_its_elements_named(
    fhir: httpx.AsyncClient,
) -> None:
    bad = observation(valueQuantity={"value": "seventy-two"}, colour="blue")
    outcome = await _valid(fhir, "/fhir/Observation/$validate", bad)
    found = {e for issue in errors(outcome) for e in issue.get("expression", [])}
    assert found == {"Observation.valueQuantity.value", "Observation.colour"}
    # A required element missing (the models check those once the elements parse).
    no_status = observation()
    del no_status["status"]
    outcome = await _valid(fhir, "/fhir/Observation/$validate", no_status)
    assert [i["expression"] for i in errors(outcome)] == [["Observation.status"]]
    assert await stored(fhir) == []


async def test_the_resource_may_come_in_parameters_with_a_mode(fhir: httpx.AsyncClient) -> None:
    bundle = json.loads(synthea_file("Antonio_Castellanos").read_text(encoding="utf-8"))
    patient = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    outcome = await _valid(fhir, "/fhir/Patient/$validate", parameters(patient, "create"))
    assert errors(outcome) == []
    bad = {**patient, "birthDate": "1970-13-45"}
    outcome = await _valid(fhir, "/fhir/Patient/$validate", parameters(bad, "create"))
    assert [i["expression"] for i in errors(outcome)] == [["Patient.birthDate"]]
    assert await stored(fhir) == []


async def test_the_type_in_the_url_must_be_the_resources(fhir: httpx.AsyncClient) -> None:
    outcome = await _valid(fhir, "/fhir/Patient/$validate", observation())
    assert [i["expression"] for i in errors(outcome)] == [["resourceType"]]


async def test_update_mode_checks_the_id_and_who_may_change_it(fhir: httpx.AsyncClient) -> None:
    created = await fhir.post("/fhir/Observation", json=observation())
    assert created.status_code == 201
    current = created.json()
    url = f"/fhir/Observation/{current['id']}/$validate"

    outcome = await _valid(fhir, url, parameters({**current, "status": "amended"}, "update"))
    assert errors(outcome) == []
    other_id = {**current, "id": "someone-else"}
    outcome = await _valid(fhir, url, parameters(other_id, "update"))
    assert errors(outcome)[0]["expression"] == ["Observation.id"]

    response = await fhir.post(
        url,
        json=parameters({**current, "status": "amended"}, "update"),
        headers=fhir_auth(client_id="hospital-b"),
    )
    assert response.status_code == 200
    assert [i["code"] for i in errors(response.json())] == ["forbidden"]
    # Nothing changed: still version 1.
    again = (await fhir.get(f"/fhir/Observation/{current['id']}")).json()
    assert again["meta"]["versionId"] == "1"
    assert again["status"] == "final"


async def test_delete_mode_checks_the_resource_exists_and_may_be_deleted(
    fhir: httpx.AsyncClient,
) -> None:
    created = (await fhir.post("/fhir/Observation", json=observation())).json()
    url = f"/fhir/Observation/{created['id']}/$validate"
    outcome = await _valid(fhir, url, parameters(None, "delete"))
    assert errors(outcome) == []
    outcome = await _valid(
        fhir, "/fhir/Observation/missing-1/$validate", parameters(None, "delete")
    )
    assert [i["code"] for i in errors(outcome)] == ["not-found"]
    response = await fhir.post(
        url, json=parameters(None, "delete"), headers=fhir_auth(client_id="hospital-b")
    )
    assert [i["code"] for i in errors(response.json())] == ["forbidden"]
    still = await fhir.get(f"/fhir/Observation/{created['id']}")
    assert still.status_code == 200


async def test_a_profile_is_not_claimed_to_be_checked(fhir: httpx.AsyncClient) -> None:
    body = parameters(observation())
    body["parameter"].append(
        {"name": "profile", "valueUri": "http://hl7.org/fhir/us/core/StructureDefinition/x"}
    )
    outcome = await _valid(fhir, "/fhir/Observation/$validate", body)
    assert errors(outcome) == []
    assert [i["code"] for i in outcome["issue"] if i["severity"] == "warning"] == ["not-supported"]


async def test_bad_requests_are_refused(fhir: httpx.AsyncClient) -> None:
    cases: list[tuple[str, dict[str, Any], int]] = [
        ("/fhir/Nonsense/$validate", {"content": b"{}"}, 404),
        ("/fhir/Observation/$validate", {"content": b"{not json"}, 400),
        ("/fhir/Observation/$validate", {}, 400),
        ("/fhir/Observation/$validate", {"json": parameters(observation(), "replace")}, 400),
        ("/fhir/Observation/$validate", {"json": parameters(None, "delete")}, 400),
        ("/fhir/Observation/$validate", {"json": parameters(None, "create")}, 400),
        ("/fhir/Observation/$validate", {"content": b"<Observation/>", "xml": True}, 415),
    ]
    for url, body, status in cases:
        headers = {"Content-Type": "application/fhir+xml"} if body.pop("xml", False) else {}
        response = await fhir.post(url, headers=headers, **body)
        assert response.status_code == status, (url, body, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    no_scope = await fhir.post(
        "/fhir/Observation/$validate",
        json=observation(),
        headers=fhir_auth("system/Observation.rs"),
    )
    assert no_scope.status_code == 403
    assert await stored(fhir) == []
