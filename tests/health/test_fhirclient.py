"""The real SMART on FHIR ``fhirclient`` (synchronous, over requests, with its strict R4 models)
against the server, unmodified (issue 5, "Done when"). Every answer is parsed by fhirclient's
models, which refuse elements R4 does not define: the server's JSON is checked on the way."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from fhirclient.models.bundle import Bundle, BundleEntry, BundleEntryRequest  # type: ignore[import-untyped]
from fhirclient.models.fhirsearch import FHIRSearch  # type: ignore[import-untyped]
from fhirclient.models.observation import Observation  # type: ignore[import-untyped]
from fhirclient.models.patient import Patient  # type: ignore[import-untyped]
from fhirclient.server import FHIRNotFoundException, FHIRServer  # type: ignore[import-untyped]

from tests.health.conftest import fhir_auth
from tests.health.live import LiveFhir, live_fhir

__all__ = ["live_fhir"]  # the fixture, used by the tests below

SYSTEM = "urn:onecard:test-mrn"


@pytest.fixture
def server(live_fhir: LiveFhir) -> Iterator[FHIRServer]:
    """fhirclient's server object with a hospital's bearer token on its requests session (a
    backend service's token, obtained elsewhere: no SMART launch here)."""
    fhir = FHIRServer(None, base_uri=live_fhir.base)
    fhir.session.headers.update(fhir_auth())
    yield fhir
    fhir.session.close()


def new_patient(family: str, given: str, **extra: Any) -> Patient:
    return Patient({"name": [{"family": family, "given": [given]}], **extra})


def create(server: FHIRServer, resource: Any) -> Any:
    """Create ``resource``; the server's representation back as the same model."""
    answer = resource.create(server)
    assert answer is not None, "the server answers a create with the resource"
    return type(resource)(answer)


def search(server: FHIRServer, resource_type: Any, struct: dict[str, Any]) -> list[Any]:
    """Every match, following Bundle.link "next" to the end (fhirclient's perform_iter)."""
    return list(resource_type.where(struct).perform_resources_iter(server))


def families(server: FHIRServer, struct: dict[str, Any]) -> list[str]:
    return sorted(p.name[0].family for p in search(server, Patient, struct))


def test_create_read_update_delete(server: FHIRServer) -> None:
    created = create(server, new_patient("Zhang", "Wei", gender="male"))
    assert created.id
    assert created.meta.versionId == "1"

    read = Patient.read(created.id, server)
    assert read.name[0].family == "Zhang"
    assert read.gender == "male"

    read.gender = "female"
    updated = Patient(read.update(server))
    assert updated.meta.versionId == "2"
    assert Patient.read(created.id, server).gender == "female"

    read.delete(server)
    # 410 Gone for a deleted resource (http.html#delete); fhirclient raises HTTPError.
    with pytest.raises(requests.HTTPError) as raised:
        Patient.read(created.id, server)
    assert raised.value.response is not None
    assert raised.value.response.status_code == 410
    with pytest.raises(FHIRNotFoundException):
        Patient.read("no-such-patient", server)


def test_search_with_modifiers(server: FHIRServer) -> None:
    tag = uuid.uuid4().hex[:8]
    create(
        server,
        new_patient(
            "Zhang",
            "Wei",
            gender="male",
            birthDate="1980-01-02",
            identifier=[{"system": SYSTEM, "value": f"{tag}-1"}],
        ),
    )
    create(server, new_patient("Zhangsun", "Li", gender="female", birthDate="1992-06-30"))
    create(server, new_patient("Ouyang", "Ming", birthDate="2001-12-24"))

    # fhirclient's search structures: {"$exact": ...} and friends become modifiers.
    assert families(server, {"family": "zhang"}) == ["Zhang", "Zhangsun"]
    assert families(server, {"family": {"$exact": "Zhang"}}) == ["Zhang"]
    assert families(server, {"family": {"$exact": "zhang"}}) == []
    assert families(server, {"family:contains": "yan"}) == ["Ouyang"]
    assert families(server, {"identifier": f"{SYSTEM}|{tag}-1"}) == ["Zhang"]
    assert families(server, {"identifier": f"|{tag}-1"}) == []
    assert families(server, {"gender": {"$missing": "true"}}) == ["Ouyang"]
    assert families(server, {"gender": {"$missing": "false"}}) == ["Zhang", "Zhangsun"]
    assert families(server, {"gender:not": "male"}) == ["Ouyang", "Zhangsun"]
    assert families(server, {"birthdate": "ge1992"}) == ["Ouyang", "Zhangsun"]
    assert families(server, {"birthdate": "lt1992-06-30"}) == ["Zhang"]
    assert families(server, {"birthdate": {"$and": ["gt1980-01-02", "lt2001"]}}) == ["Zhangsun"]
    # fhirclient's operators send the DSTU1 comparators (">=1992"), read as R4's prefixes.
    assert families(server, {"birthdate": {"$gte": "1992"}}) == ["Ouyang", "Zhangsun"]
    assert families(server, {"birthdate": {"$lt": "1992-06-30"}}) == ["Zhang"]
    assert families(server, {"birthdate": {"$gt": "1992-06-30"}}) == ["Ouyang"]
    assert families(server, {"birthdate": {"$lte": "1992-06-30"}}) == ["Zhang", "Zhangsun"]
    assert families(server, {"family": {"$or": ["Ouyang", "Zhangsun"]}}) == ["Ouyang", "Zhangsun"]


def test_paging_through_next_and_counting(server: FHIRServer) -> None:
    for n in range(23):
        create(server, new_patient("Paged", f"n{n:02d}"))
    create(server, new_patient("Other", "x"))

    pages = list(
        FHIRSearch(Patient, {"family": "Paged", "_count": "5", "_sort": "given"}).perform_iter(
            server
        )
    )
    assert [len(page.entry) for page in pages] == [5, 5, 5, 5, 3]
    given = [e.resource.name[0].given[0] for page in pages for e in page.entry]
    assert given == [f"n{n:02d}" for n in range(23)]
    for page in pages[:-1]:
        next_link = next(link.url for link in page.link if link.relation == "next")
        assert next_link.startswith(server.base_uri + "Patient?")
    assert not [link for link in pages[-1].link if link.relation == "next"]

    # The total without the matches: _summary=count and _count=0 (search.html#total).
    counted = Bundle.read_from("Patient?family=Paged&_summary=count", server)
    assert counted.total == 23
    assert counted.entry is None
    assert Bundle.read_from("Patient?family=Paged&_count=0", server).total == 23


def test_transaction_bundle(server: FHIRServer) -> None:
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    observation = Observation(
        {
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": patient_url},
            "valueQuantity": {"value": 72, "unit": "/min"},
        }
    )
    bundle = Bundle({"type": "transaction"})
    bundle.entry = [
        BundleEntry(
            {"fullUrl": patient_url, "request": {"method": "POST", "url": "Patient"}},
        ),
        BundleEntry({"request": {"method": "POST", "url": "Observation"}}),
    ]
    bundle.entry[0].resource = new_patient("Tx", "Pat")
    bundle.entry[1].resource = observation
    assert isinstance(bundle.entry[0].request, BundleEntryRequest)

    # fhirclient posts a transaction to "[base]/" (its base URL ends with a slash): served
    # there, not redirected (which would upload the Bundle twice).
    posted = server.post_json(bundle.createPath(), bundle.as_json())
    assert posted.history == []
    answer = Bundle(posted.json())
    assert answer.type == "transaction-response"
    assert [e.response.status.split()[0] for e in answer.entry] == ["201", "201"]
    patient_id = answer.entry[0].response.location.split("/")[1]

    found = search(server, Observation, {"subject": f"Patient/{patient_id}"})
    assert [o.subject.reference for o in found] == [f"Patient/{patient_id}"]
    assert found[0].valueQuantity.value == 72
    # fhirclient's include() (_include=Observation:subject) and reverse include
    # (_revinclude=Observation:subject): the match and the other end, each once.
    included = Observation.where({"patient": patient_id}).include("subject")
    assert sorted(r.resource_type for r in included.perform_resources_iter(server)) == [
        "Observation",
        "Patient",
    ]
    reverse = Patient.where({"_id": patient_id}).include("subject", Observation, reverse=True)
    assert sorted(r.resource_type for r in reverse.perform_resources_iter(server)) == [
        "Observation",
        "Patient",
    ]

    broken = Bundle({"type": "transaction"})
    broken.entry = [
        BundleEntry({"request": {"method": "POST", "url": "Patient"}}),
        BundleEntry({"request": {"method": "PUT", "url": "Observation/nope"}}),
    ]
    broken.entry[0].resource = new_patient("Tx", "Twice")
    broken.entry[1].resource = observation  # its id is not the URL's: the entry fails
    with pytest.raises(requests.HTTPError) as raised:
        broken.create(server)
    assert raised.value.response is not None
    assert raised.value.response.status_code == 400
    # All or nothing (http.html#transaction).
    assert families(server, {"family": "Tx"}) == ["Tx"]


def test_conditional_create_and_update(server: FHIRServer) -> None:
    value = uuid.uuid4().hex[:8]
    body = new_patient("Cond", "One", identifier=[{"system": SYSTEM, "value": value}]).as_json()
    condition = f"Patient?identifier={SYSTEM}|{value}"

    first = server.post_json(condition, body)
    assert first.status_code == 201
    again = server.post_json(condition, body)
    assert again.status_code == 200
    assert Patient(again.json()).id == Patient(first.json()).id
    assert len(search(server, Patient, {"identifier": f"{SYSTEM}|{value}"})) == 1

    # Two different conditions on one create are refused, not guessed between.
    clash = server.session.post(
        server.base_uri + condition,
        json=body,
        headers={
            "If-None-Exist": f"identifier={SYSTEM}|other",
            "Content-Type": "application/fhir+json",
        },
    )
    assert clash.status_code == 400
    assert clash.json()["resourceType"] == "OperationOutcome"
    assert len(search(server, Patient, {"identifier": f"{SYSTEM}|{value}"})) == 1

    # Conditional update (http.html#cond-update): the one match gets a new version.
    changed = server.put_json(condition, {**body, "gender": "other"})
    assert changed.status_code == 200
    assert Patient(changed.json()).meta.versionId == "2"
    assert Patient.read(Patient(first.json()).id, server).gender == "other"
