"""The real ``fhirpy`` client (AsyncFHIRClient, over aiohttp) against the server, unmodified:
what a hospital's Python integration does with it works (issue 5, "Done when")."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

from tests.health.conftest import fhir_auth
from tests.health.live import LiveFhir, live_fhir

__all__ = ["live_fhir"]  # the fixture, used by the tests below

SYSTEM = "urn:onecard:test-mrn"


def client(live: LiveFhir) -> AsyncFHIRClient:
    return AsyncFHIRClient(live.base, authorization=fhir_auth()["Authorization"])


def patient(family: str, given: str, **extra: Any) -> dict[str, Any]:
    return {"name": [{"family": family, "given": [given]}], **extra}


async def test_create_read_update_delete(live_fhir: LiveFhir) -> None:
    fhir = client(live_fhir)
    created = fhir.resource("Patient", **patient("Zhang", "Wei", gender="male"))
    await created.save()
    assert created.id
    assert created["meta"]["versionId"] == "1"

    read = await fhir.reference("Patient", created.id).to_resource()
    assert read["name"][0]["family"] == "Zhang"
    assert read["gender"] == "male"

    read["gender"] = "female"
    await read.save()
    assert read["meta"]["versionId"] == "2"
    assert (await fhir.get("Patient", created.id))["gender"] == "female"

    # refresh() sends If-None-Match with the version it holds; the server answers the
    # current one.
    await created.refresh()
    assert created["meta"]["versionId"] == "2"

    await fhir.delete("Patient", created.id)
    # A deleted resource is 410 Gone (http.html#delete), which fhirpy reports as not found.
    with pytest.raises(ResourceNotFound):
        await fhir.get("Patient", created.id)


async def test_a_bad_resource_is_an_operation_outcome(live_fhir: LiveFhir) -> None:
    fhir = client(live_fhir)
    with pytest.raises(OperationOutcome) as raised:
        await fhir.resource("Patient", birthDate="yesterday").save()
    assert raised.value.resource["resourceType"] == "OperationOutcome"
    assert raised.value.resource["issue"][0]["severity"] == "error"


async def test_search_with_modifiers(live_fhir: LiveFhir) -> None:
    fhir = client(live_fhir)
    tag = uuid.uuid4().hex[:8]
    people = [
        patient(
            "Zhang",
            "Wei",
            gender="male",
            birthDate="1980-01-02",
            identifier=[{"system": SYSTEM, "value": f"{tag}-1"}],
        ),
        patient("Zhangsun", "Li", gender="female", birthDate="1992-06-30"),
        patient("Ouyang", "Ming", birthDate="2001-12-24"),
    ]
    for person in people:
        await fhir.resource("Patient", **person).save()
    patients = fhir.resources("Patient")

    async def families(**params: Any) -> list[str]:
        found = await patients.search(**params).sort("family").fetch_all()
        return [p["name"][0]["family"] for p in found]

    # string: default is "starts with", :exact is case- and accent-sensitive equality,
    # :contains anywhere (search.html#string).
    assert await families(family="zhang") == ["Zhang", "Zhangsun"]
    assert await families(family__exact="Zhang") == ["Zhang"]
    assert await families(family__exact="zhang") == []
    assert await families(family__contains="yan") == ["Ouyang"]
    # token: system|code, :missing, :not (search.html#token).
    assert await families(identifier=f"{SYSTEM}|{tag}-1") == ["Zhang"]
    assert await families(identifier=f"urn:other|{tag}-1") == []
    assert await families(gender__missing=True) == ["Ouyang"]
    assert await families(gender__missing=False) == ["Zhang", "Zhangsun"]
    assert await families(gender__not="male") == ["Ouyang", "Zhangsun"]
    # date prefixes over the value's precision (search.html#prefix).
    assert await families(birthdate__ge="1992") == ["Ouyang", "Zhangsun"]
    assert await families(birthdate__lt="1992-06-30") == ["Zhang"]
    assert await families(birthdate="1992-06") == ["Zhangsun"]
    assert await families(birthdate__gt="1980-01-02", birthdate__lt="2001") == ["Zhangsun"]

    first = await patients.search(family="zhang").sort("-family").first()
    assert first is not None
    assert first["name"][0]["family"] == "Zhangsun"
    one = await patients.search(family__exact="Ouyang").get()
    assert one["birthDate"] == "2001-12-24"


async def test_paging_through_next_and_count(live_fhir: LiveFhir) -> None:
    fhir = client(live_fhir)
    for n in range(23):
        await fhir.resource("Patient", **patient("Paged", f"n{n:02d}")).save()
    await fhir.resource("Patient", **patient("Other", "x")).save()
    search = fhir.resources("Patient").search(family="Paged")

    # count() asks for _count=0 and reads Bundle.total (search.html#total).
    assert await search.count() == 23
    assert await fhir.resources("Patient").count() == 24

    # fetch_all() follows Bundle.link "next" until there is none; every match exactly once.
    found = await search.limit(5).sort("given").fetch_all()
    assert [p["name"][0]["given"][0] for p in found] == [f"n{n:02d}" for n in range(23)]

    # _totalMethod (Aidbox's name, which count() sends) takes what fhirpy can send, no more.
    with pytest.raises(OperationOutcome) as refused:
        await search.search(_totalMethod="guess").fetch()
    assert "'_totalMethod'" in refused.value.resource["issue"][0]["diagnostics"]

    page = await search.limit(10).fetch_raw()
    assert len(page.entry) == 10
    next_url = next(link.url for link in page.link if link.relation == "next")
    assert next_url.startswith(live_fhir.base + "/Patient?")


async def test_transaction_bundle(live_fhir: LiveFhir) -> None:
    fhir = client(live_fhir)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:5a2cf2b2-7d0f-4e8d-9f0e-0d6c6c9f4a11",
                "resource": {"resourceType": "Patient", **patient("Tx", "Pat")},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "subject": {"reference": "urn:uuid:5a2cf2b2-7d0f-4e8d-9f0e-0d6c6c9f4a11"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    response = await fhir.execute("", method="post", data=bundle)
    assert response["type"] == "transaction-response"
    statuses = [entry["response"]["status"] for entry in response["entry"]]
    assert [s.split()[0] for s in statuses] == ["201", "201"]
    patient_location = response["entry"][0]["response"]["location"]
    patient_id = patient_location.split("/")[1]

    observations = (
        await fhir.resources("Observation").search(subject=f"Patient/{patient_id}").fetch_all()
    )
    assert [o["subject"]["reference"] for o in observations] == [f"Patient/{patient_id}"]
    with_patient = (
        await fhir.resources("Observation")
        .search(patient=patient_id)
        .include("Observation", "subject")
        .fetch_raw()
    )
    modes = sorted(entry.search.mode for entry in with_patient.entry)
    assert modes == ["include", "match"]

    failing = {
        **bundle,
        "entry": [
            bundle["entry"][0],
            {
                "resource": {"resourceType": "Observation", "status": "not-a-status"},
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    with pytest.raises(OperationOutcome):
        await fhir.execute("", method="post", data=failing)
    # All or nothing (http.html#transaction): the failed bundle's Patient is not there.
    assert await fhir.resources("Patient").search(family="Tx").count() == 1


async def test_conditional_create_does_not_duplicate(live_fhir: LiveFhir) -> None:
    fhir = client(live_fhir)
    identifier = f"{uuid.uuid4().hex[:8]}"
    search = fhir.resources("Patient").search(identifier=f"{SYSTEM}|{identifier}")
    body = fhir.resource(
        "Patient", **patient("Cond", "One", identifier=[{"system": SYSTEM, "value": identifier}])
    )
    first, created = await search.get_or_create(body)
    assert created
    again, created_again = await search.get_or_create(body)
    assert not created_again
    assert again.id == first.id
    assert await search.count() == 1

    # Resource.create(**search) sends the same query-string condition.
    same = fhir.resource(
        "Patient", **patient("Cond", "One", identifier=[{"system": SYSTEM, "value": identifier}])
    )
    await same.create(identifier=f"{SYSTEM}|{identifier}")
    assert same.id == first.id
    assert await search.count() == 1
