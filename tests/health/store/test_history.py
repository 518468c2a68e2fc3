"""History of a resource, a type and the system, paged (FHIR R4 http.html#history)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.health.conftest import conforms


def observation(n: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": f"test {n}"}}


async def pages(fhir: httpx.AsyncClient, url: str, **params: str) -> list[dict[str, Any]]:
    """Every page of a history, following ``next`` links as a client would."""
    bundles = []
    response = await fhir.get(url, params=params)
    while True:
        assert response.status_code == 200, response.text
        bundle = response.json()
        conforms(bundle)
        bundles.append(bundle)
        following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not following:
            return bundles
        assert following[0].startswith("http://testserver/fhir/")
        response = await fhir.get(following[0])


async def test_type_history_pages_through_every_version_newest_first(
    fhir: httpx.AsyncClient,
) -> None:
    ids = []
    for n in range(7):
        ids.append((await fhir.post("/fhir/Observation", json=observation(n))).json()["id"])
    first = (await fhir.get(f"/fhir/Observation/{ids[0]}")).json()
    await fhir.put(f"/fhir/Observation/{ids[0]}", json={**first, "status": "amended"})
    await fhir.post("/fhir/Patient", json={"resourceType": "Patient"})

    bundles = await pages(fhir, "/fhir/Observation/_history", _count="3")
    assert [len(b["entry"]) for b in bundles] == [3, 3, 2]
    entries = [e for b in bundles for e in b["entry"]]
    assert all(e["resource"]["resourceType"] == "Observation" for e in entries)
    # Newest first: the update of the first observation, then the creates in reverse.
    assert entries[0]["resource"]["meta"]["versionId"] == "2"
    assert entries[0]["request"] == {"method": "PUT", "url": f"Observation/{ids[0]}"}
    assert [e["resource"]["id"] for e in entries[1:]] == list(reversed(ids))
    assert entries[1]["response"]["status"] == "201 Created"


async def test_paging_stays_stable_while_new_versions_are_written(
    fhir: httpx.AsyncClient,
) -> None:
    for n in range(4):
        await fhir.post("/fhir/Observation", json=observation(n))
    first = (await fhir.get("/fhir/Observation/_history", params={"_count": "2"})).json()
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    await fhir.post("/fhir/Observation", json=observation(99))
    second = (await fhir.get(next_url)).json()
    seen = [e["resource"]["id"] for e in first["entry"] + second["entry"]]
    assert len(seen) == len(set(seen)) == 4


async def test_since_and_system_history(fhir: httpx.AsyncClient) -> None:
    old = (await fhir.post("/fhir/Observation", json=observation(1))).json()
    since = old["meta"]["lastUpdated"]
    new = (await fhir.post("/fhir/Patient", json={"resourceType": "Patient"})).json()
    everything = (await fhir.get("/fhir/_history")).json()
    assert {e["resource"]["id"] for e in everything["entry"]} == {old["id"], new["id"]}
    recent = (
        await fhir.get("/fhir/_history", params={"_since": new["meta"]["lastUpdated"]})
    ).json()
    assert new["id"] in {e["resource"]["id"] for e in recent["entry"]}
    inclusive = (await fhir.get("/fhir/_history", params={"_since": since})).json()
    assert old["id"] in {e["resource"]["id"] for e in inclusive["entry"]}


async def test_history_uses_the_base_url_the_client_used(fhir: httpx.AsyncClient) -> None:
    for n in range(3):
        await fhir.post("/fhir/Observation", json=observation(n))
    response = await fhir.get(
        "/fhir/_history",
        params={"_count": "1"},
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "onecard.example"},
    )
    links = {link["relation"]: link["url"] for link in response.json()["link"]}
    assert links["next"].startswith("https://onecard.example/fhir/_history?")
    assert response.json()["entry"][0]["fullUrl"].startswith("https://onecard.example/fhir/")


async def test_bad_history_parameters(fhir: httpx.AsyncClient) -> None:
    assert (await fhir.get("/fhir/_history", params={"_count": "many"})).status_code == 400
    assert (await fhir.get("/fhir/_history", params={"_since": "last week"})).status_code == 400
    assert (await fhir.get("/fhir/_history", params={"_cursor": "forged"})).status_code == 400
    unknown = await fhir.get("/fhir/_history", params={"_at": "2020"})
    assert unknown.status_code == 400
    assert unknown.json()["resourceType"] == "OperationOutcome"
    huge = await fhir.get("/fhir/_history", params={"_count": "100000000"})
    assert huge.status_code == 200
