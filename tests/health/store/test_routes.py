"""The FHIR REST interactions a hospital's system uses, over HTTP (FHIR R4 http.html)."""

from __future__ import annotations

from typing import Any

import httpx

FHIR_JSON = "application/fhir+json"


def patient(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:onecard:citizen", "value": "cz-1"}],
        "name": [{"family": "Zhang", "given": ["Wei"]}],
        "gender": "male",
        "birthDate": "1980-01-02",
        **extra,
    }


async def test_create_then_read(fhir: httpx.AsyncClient) -> None:
    created = await fhir.post("/fhir/Patient", json=patient())
    assert created.status_code == 201, created.text
    assert created.headers["content-type"].startswith(FHIR_JSON)
    body = created.json()
    assert body["meta"]["versionId"] == "1"
    assert created.headers["ETag"] == 'W/"1"'
    assert created.headers["Location"] == f"http://testserver/fhir/Patient/{body['id']}/_history/1"
    assert "Last-Modified" in created.headers

    read = await fhir.get(f"/fhir/Patient/{body['id']}")
    assert read.status_code == 200
    assert read.json() == body
    assert read.headers["ETag"] == 'W/"1"'


async def test_the_server_assigns_the_id_of_a_create(fhir: httpx.AsyncClient) -> None:
    created = await fhir.post("/fhir/Patient", json=patient(id="chosen-by-client"))
    assert created.status_code == 201
    assert created.json()["id"] != "chosen-by-client"


async def test_update_makes_a_new_version_and_vread_finds_both(fhir: httpx.AsyncClient) -> None:
    first = (await fhir.post("/fhir/Patient", json=patient())).json()
    changed = {**first, "gender": "female"}
    updated = await fhir.put(f"/fhir/Patient/{first['id']}", json=changed)
    assert updated.status_code == 200, updated.text
    assert updated.json()["meta"]["versionId"] == "2"
    assert updated.headers["ETag"] == 'W/"2"'

    v1 = await fhir.get(f"/fhir/Patient/{first['id']}/_history/1")
    v2 = await fhir.get(f"/fhir/Patient/{first['id']}/_history/2")
    assert v1.json()["gender"] == "male"
    assert v2.json()["gender"] == "female"
    missing = await fhir.get(f"/fhir/Patient/{first['id']}/_history/3")
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"


async def test_update_as_create_keeps_the_clients_id(fhir: httpx.AsyncClient) -> None:
    response = await fhir.put("/fhir/Patient/p-42", json=patient(id="p-42"))
    assert response.status_code == 201, response.text
    assert response.json()["id"] == "p-42"
    assert response.headers["Location"].endswith("/fhir/Patient/p-42/_history/1")
    assert (await fhir.get("/fhir/Patient/p-42")).status_code == 200


async def test_update_refuses_a_body_whose_id_is_not_the_urls(fhir: httpx.AsyncClient) -> None:
    response = await fhir.put("/fhir/Patient/p-1", json=patient(id="p-2"))
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Patient.id"]
    no_id = await fhir.put("/fhir/Patient/p-1", json=patient())
    assert no_id.status_code == 400


async def test_delete_is_logical_read_gives_410_and_history_shows_it(
    fhir: httpx.AsyncClient,
) -> None:
    created = (await fhir.post("/fhir/Patient", json=patient())).json()
    deleted = await fhir.delete(f"/fhir/Patient/{created['id']}")
    assert deleted.status_code == 204
    assert deleted.headers["ETag"] == 'W/"2"'
    gone = await fhir.get(f"/fhir/Patient/{created['id']}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    # Deleting again changes nothing and is not an error.
    assert (await fhir.delete(f"/fhir/Patient/{created['id']}")).status_code == 204
    # The old version stays readable.
    assert (await fhir.get(f"/fhir/Patient/{created['id']}/_history/1")).status_code == 200

    history = (await fhir.get(f"/fhir/Patient/{created['id']}/_history")).json()
    assert history["type"] == "history"
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]

    revived = await fhir.put(f"/fhir/Patient/{created['id']}", json=created)
    assert revived.status_code == 201
    assert revived.json()["meta"]["versionId"] == "3"


async def test_unknown_resources_and_types(fhir: httpx.AsyncClient) -> None:
    missing = await fhir.get("/fhir/Patient/nobody")
    assert missing.status_code == 404
    assert missing.json()["issue"][0]["code"] == "not-found"
    assert (await fhir.get("/fhir/Nonsense/1")).status_code == 404
    assert (await fhir.post("/fhir/Nonsense", json={"resourceType": "Nonsense"})).status_code == 404
    assert (await fhir.get("/fhir/Patient/nobody/_history")).status_code == 404


async def test_if_match_guards_updates_and_deletes(fhir: httpx.AsyncClient) -> None:
    created = (await fhir.post("/fhir/Patient", json=patient())).json()
    url = f"/fhir/Patient/{created['id']}"
    ok = await fhir.put(url, json=created, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = await fhir.put(url, json=created, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    assert (await fhir.delete(url, headers={"If-Match": 'W/"1"'})).status_code == 412
    assert (await fhir.put(url, json=created, headers={"If-Match": "banana"})).status_code == 400
    assert (await fhir.delete(url, headers={"If-Match": 'W/"2"'})).status_code == 204


async def test_prefer_return(fhir: httpx.AsyncClient) -> None:
    minimal = await fhir.post("/fhir/Patient", json=patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201
    assert minimal.content == b""
    assert minimal.headers["Location"]
    outcome = await fhir.post(
        "/fhir/Patient", json=patient(), headers={"Prefer": "return=OperationOutcome"}
    )
    assert outcome.status_code == 201
    assert outcome.json()["resourceType"] == "OperationOutcome"
    assert outcome.json()["issue"][0]["severity"] == "information"


async def test_format_and_content_types(fhir: httpx.AsyncClient) -> None:
    created = (await fhir.post("/fhir/Patient", json=patient())).json()
    url = f"/fhir/Patient/{created['id']}"
    assert (await fhir.get(url, params={"_format": "json"})).status_code == 200
    xml = await fhir.get(url, params={"_format": "xml"})
    assert xml.status_code == 406
    assert xml.headers["content-type"].startswith(FHIR_JSON)
    assert (await fhir.get(url, headers={"Accept": "application/fhir+xml"})).status_code == 406
    assert (await fhir.get(url, headers={"Accept": "application/fhir+json"})).status_code == 200
    wrong_type = await fhir.post(
        "/fhir/Patient", content=b"<Patient/>", headers={"Content-Type": "application/xml"}
    )
    assert wrong_type.status_code == 415


async def test_invalid_resources_name_the_element(fhir: httpx.AsyncClient) -> None:
    unknown = await fhir.post("/fhir/Patient", json=patient(favouriteColour="blue"))
    assert unknown.status_code == 400
    issue = unknown.json()["issue"][0]
    assert issue["expression"] == ["Patient.favouriteColour"]
    assert issue["severity"] == "error"

    wrong_type = await fhir.post("/fhir/Patient", json=patient(name=[{"given": "Wei"}]))
    assert wrong_type.status_code == 400
    assert wrong_type.json()["issue"][0]["expression"] == ["Patient.name[0].given"]

    bad_date = await fhir.post("/fhir/Patient", json=patient(birthDate="yesterday"))
    assert bad_date.status_code == 422
    assert bad_date.json()["issue"][0]["expression"] == ["Patient.birthDate"]

    missing = await fhir.post("/fhir/Observation", json={"resourceType": "Observation"})
    assert missing.status_code == 422
    expressions = {e for i in missing.json()["issue"] for e in i["expression"]}
    assert "Observation.code" in expressions

    mismatch = await fhir.post("/fhir/Observation", json=patient())
    assert mismatch.status_code == 400
    assert mismatch.json()["issue"][0]["expression"] == ["resourceType"]

    not_json = await fhir.post(
        "/fhir/Patient", content=b"{", headers={"Content-Type": "application/fhir+json"}
    )
    assert not_json.status_code == 400
    assert not_json.json()["resourceType"] == "OperationOutcome"


async def test_json_patch(fhir: httpx.AsyncClient) -> None:
    created = (await fhir.post("/fhir/Patient", json=patient())).json()
    url = f"/fhir/Patient/{created['id']}"
    patch_headers = {"Content-Type": "application/json-patch+json"}
    ops = [
        {"op": "test", "path": "/gender", "value": "male"},
        {"op": "replace", "path": "/gender", "value": "female"},
        {"op": "add", "path": "/name/0/given/-", "value": "Ming"},
    ]
    patched = await fhir.patch(url, json=ops, headers={**patch_headers, "If-Match": 'W/"1"'})
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["gender"] == "female"
    assert body["name"][0]["given"] == ["Wei", "Ming"]
    assert body["meta"]["versionId"] == "2"

    failed_test = await fhir.patch(
        url, json=[{"op": "test", "path": "/gender", "value": "male"}], headers=patch_headers
    )
    assert failed_test.status_code == 422
    invalid_result = await fhir.patch(
        url, json=[{"op": "add", "path": "/colour", "value": "blue"}], headers=patch_headers
    )
    assert invalid_result.status_code == 422
    assert invalid_result.json()["issue"][0]["expression"] == ["Patient.colour"]
    malformed = await fhir.patch(url, json={"op": "nope"}, headers=patch_headers)
    assert malformed.status_code == 400
    changes_id = await fhir.patch(
        url, json=[{"op": "replace", "path": "/id", "value": "other"}], headers=patch_headers
    )
    assert changes_id.status_code == 422
    no_such_path = await fhir.patch(
        url, json=[{"op": "remove", "path": "/telecom/3"}], headers=patch_headers
    )
    assert no_such_path.status_code == 422
    # Errors name the operation, never what the resource holds (personal data reaches logs).
    assert "cz-1" not in failed_test.text + no_such_path.text
    assert "Zhang" not in failed_test.text + no_such_path.text
    wrong_media = await fhir.patch(url, json=ops)
    assert wrong_media.status_code == 415
    # None of the refused patches wrote a version.
    assert (await fhir.get(url)).json()["meta"]["versionId"] == "2"


async def test_unsupported_methods_answer_405_as_an_operation_outcome(
    fhir: httpx.AsyncClient,
) -> None:
    response = await fhir.post("/fhir/Patient/p-1", json=patient())
    assert response.status_code == 405
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.json()["issue"][0]["code"] == "not-supported"
