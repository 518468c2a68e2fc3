"""Conditional create, update and delete (FHIR R4 http.html#ccreate, #cond-update, #cdelete),
and the concurrency they must survive."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

IDENTIFIER = "urn:onecard:citizen|cz-77"


def patient(value: str = "cz-77", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:onecard:citizen", "value": value}],
        "name": [{"family": "Li", "given": ["Na"]}],
        **extra,
    }


async def ids_for(fhir: httpx.AsyncClient, identifier: str) -> list[str]:
    """The ids of live Patients with ``identifier``, through the conditional update's search:
    a conditional delete with several matches answers 412, so count through history instead."""
    history = (await fhir.get("/fhir/Patient/_history", params={"_count": "1000"})).json()
    system, _, value = identifier.partition("|")
    live: dict[str, dict[str, Any]] = {}
    for entry in reversed(history.get("entry", [])):
        resource_id = entry["fullUrl"].rsplit("/", 1)[1]
        live[resource_id] = entry.get("resource", {})
    return sorted(
        resource_id
        for resource_id, resource in live.items()
        if any(
            i.get("system") == system and i.get("value") == value
            for i in resource.get("identifier", [])
        )
    )


async def test_conditional_create_finds_the_existing_resource(fhir: httpx.AsyncClient) -> None:
    first = await fhir.post(
        "/fhir/Patient", json=patient(), headers={"If-None-Exist": f"identifier={IDENTIFIER}"}
    )
    assert first.status_code == 201, first.text
    again = await fhir.post(
        "/fhir/Patient", json=patient(), headers={"If-None-Exist": f"identifier={IDENTIFIER}"}
    )
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Location"] == first.headers["Location"]

    other = await fhir.post(
        "/fhir/Patient",
        json=patient("cz-78"),
        headers={"If-None-Exist": "identifier=urn:onecard:citizen|cz-78"},
    )
    assert other.status_code == 201
    assert other.json()["id"] != first.json()["id"]


async def test_conditional_create_with_several_matches_is_412(fhir: httpx.AsyncClient) -> None:
    for _ in range(2):
        assert (await fhir.post("/fhir/Patient", json=patient())).status_code == 201
    response = await fhir.post(
        "/fhir/Patient", json=patient(), headers={"If-None-Exist": f"identifier={IDENTIFIER}"}
    )
    assert response.status_code == 412
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_conditional_create_with_an_unknown_parameter_is_400(
    fhir: httpx.AsyncClient,
) -> None:
    response = await fhir.post(
        "/fhir/Patient", json=patient(), headers={"If-None-Exist": "shoe-size=42"}
    )
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_conditional_update(fhir: httpx.AsyncClient) -> None:
    # No match and no id: the update creates.
    created = await fhir.put(f"/fhir/Patient?identifier={IDENTIFIER}", json=patient())
    assert created.status_code == 201, created.text
    resource_id = created.json()["id"]
    # One match: that resource is updated.
    updated = await fhir.put(
        f"/fhir/Patient?identifier={IDENTIFIER}", json=patient(gender="female")
    )
    assert updated.status_code == 200
    assert updated.json()["id"] == resource_id
    assert updated.json()["meta"]["versionId"] == "2"
    # A body id that is not the match's is refused.
    wrong = await fhir.put(
        f"/fhir/Patient?identifier={IDENTIFIER}", json=patient(id="someone-else")
    )
    assert wrong.status_code == 400
    # Several matches: 412.
    await fhir.post("/fhir/Patient", json=patient())
    several = await fhir.put(f"/fhir/Patient?identifier={IDENTIFIER}", json=patient())
    assert several.status_code == 412


async def test_conditional_delete(fhir: httpx.AsyncClient) -> None:
    created = (await fhir.post("/fhir/Patient", json=patient())).json()
    response = await fhir.delete(f"/fhir/Patient?identifier={IDENTIFIER}")
    assert response.status_code == 204
    assert (await fhir.get(f"/fhir/Patient/{created['id']}")).status_code == 410
    # Nothing matches any more: nothing to do.
    assert (await fhir.delete(f"/fhir/Patient?identifier={IDENTIFIER}")).status_code == 204
    # A condition is required.
    assert (await fhir.delete("/fhir/Patient")).status_code == 400


async def test_50_concurrent_conditional_creates_make_one_resource(
    fhir: httpx.AsyncClient,
) -> None:
    async def create() -> httpx.Response:
        return await fhir.post(
            "/fhir/Patient",
            json=patient("cz-race"),
            headers={"If-None-Exist": "identifier=urn:onecard:citizen|cz-race"},
        )

    responses = await asyncio.gather(*(create() for _ in range(50)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 49 + [201], [r.text for r in responses if r.status_code > 201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len(await ids_for(fhir, "urn:onecard:citizen|cz-race")) == 1


async def test_20_concurrent_updates_of_one_version_one_wins(fhir: httpx.AsyncClient) -> None:
    created = (await fhir.post("/fhir/Patient", json=patient())).json()
    url = f"/fhir/Patient/{created['id']}"

    async def update(n: int) -> httpx.Response:
        body = {**created, "name": [{"family": f"Writer{n}"}]}
        return await fhir.put(url, json=body, headers={"If-Match": 'W/"1"'})

    responses = await asyncio.gather(*(update(n) for n in range(20)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [412] * 19
    winner = next(r for r in responses if r.status_code == 200).json()
    current = (await fhir.get(url)).json()
    assert current["meta"]["versionId"] == "2"
    assert current["name"] == winner["name"]


async def test_conditional_patch(fhir: httpx.AsyncClient) -> None:
    created = (await fhir.post("/fhir/Patient", json=patient())).json()
    ops = [{"op": "add", "path": "/gender", "value": "female"}]
    headers = {"Content-Type": "application/json-patch+json"}
    patched = await fhir.patch(
        f"/fhir/Patient?identifier={IDENTIFIER}&_format=json", json=ops, headers=headers
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["id"] == created["id"]
    assert patched.json()["gender"] == "female"
    nobody = await fhir.patch(
        "/fhir/Patient?identifier=urn:onecard:citizen|nobody", json=ops, headers=headers
    )
    assert nobody.status_code == 404


async def test_conditions_are_not_echoed_in_errors(fhir: httpx.AsyncClient) -> None:
    for _ in range(2):
        await fhir.post("/fhir/Patient", json=patient("110101199003077777"))
    response = await fhir.put(
        "/fhir/Patient?identifier=urn:onecard:citizen|110101199003077777", json=patient()
    )
    assert response.status_code == 412
    assert "110101199003077777" not in response.text
    assert "identifier" in response.json()["issue"][0]["diagnostics"]
