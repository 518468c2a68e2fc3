"""What the ledger is told of a read by id and of a hospital's search: the read names the
citizen whose record it is (or no one), and a break-glass grant opens a search to the
hospital that holds it, and only to it (health/store/service.py ``read_with_citizen``,
health/access.py ``readable_patients``)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from tests.health.conftest import fhir_auth
from tests.health.test_who_may_read import CITIZEN, _record


def _entries(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The audit records the kit logged (no ledger runs in these tests: ``audit.local``)."""
    return [
        r.record  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "audit.local"
    ]


def _observation_of(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "heart rate"},
        "subject": {"reference": f"Patient/{patient_id}"},
    }


async def test_a_read_is_audited_under_the_citizen_whose_record_it_is(
    fhir: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    urls = await _record(fhir)
    unlinked = (await fhir.post("/fhir/Patient", json={"resourceType": "Patient"})).json()["id"]
    of_unlinked = await fhir.post("/fhir/Observation", json=_observation_of(unlinked))
    organization = await fhir.post(
        "/fhir/Organization", json={"resourceType": "Organization", "name": "Ward 3"}
    )
    linked = {"system": "urn:onecard:citizen", "value": "cz_gone"}
    gone = (
        await fhir.post("/fhir/Patient", json={"resourceType": "Patient", "identifier": [linked]})
    ).json()["id"]
    of_gone = await fhir.post("/fhir/Observation", json=_observation_of(gone))
    assert (await fhir.delete(f"/fhir/Patient/{gone}")).status_code == 204
    paths = [
        f"/fhir/{urls['observation']}",  # in the citizen's compartment
        f"/fhir/{urls['patient']}",  # the citizen's Patient itself
        f"/fhir/Patient/{unlinked}",  # a Patient linked to no citizen
        f"/fhir/Observation/{of_unlinked.json()['id']}",
        f"/fhir/Organization/{organization.json()['id']}",  # in no compartment
        f"/fhir/Observation/{of_gone.json()['id']}",  # its Patient deleted
    ]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="services.kit.audit"):
        for path in paths:
            response = await fhir.get(path)
            assert response.status_code == 200, response.text
            assert response.headers["etag"] == 'W/"1"'
    reads = [r for r in _entries(caplog) if r["action"] == "R"]
    assert [r["citizen"] for r in reads] == [CITIZEN, CITIZEN, None, None, None, None]
    # The answers that are no read are unchanged.
    assert (await fhir.get(f"/fhir/Patient/{gone}")).status_code == 410
    assert (await fhir.get("/fhir/Patient/nobody")).status_code == 404
    other = fhir_auth(client_id="hospital-b")
    assert (await fhir.get(f"/fhir/{urls['observation']}", headers=other)).status_code == 403


async def test_a_break_glass_grant_opens_a_search_to_its_hospital_only(
    fhir: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    urls = await _record(fhir)
    emergency = fhir_auth(client_id="hospital-er")
    patient_id = urls["patient"].split("/")[1]

    async def found(headers: dict[str, str]) -> set[str]:
        response = await fhir.get(f"/fhir/Observation?patient={patient_id}", headers=headers)
        assert response.status_code == 200, response.text
        return {f"Observation/{e['resource']['id']}" for e in response.json().get("entry", [])}

    assert await found(emergency) == set()
    reason = {"name": "reason", "valueString": "unconscious patient in the emergency room"}
    granted = await fhir.post(
        f"/fhir/{urls['patient']}/$break-glass",
        json={"resourceType": "Parameters", "parameter": [reason]},
        headers={**emergency, "Content-Type": "application/fhir+json"},
    )
    assert granted.status_code == 200, granted.text
    with caplog.at_level(logging.INFO, logger="services.kit.audit"):
        assert await found(emergency) == {urls["observation"]}
    assert any(r["citizen"] == CITIZEN for r in _entries(caplog))
    assert await found(fhir_auth(client_id="hospital-c")) == set()


async def test_a_search_is_audited_per_patient_under_their_citizen(
    fhir: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """One entry per patient of the page (matches and includes), each naming the citizen the
    Patient is linked to; none for a Patient linked to no one or deleted since."""
    await _record(fhir)
    unlinked = (await fhir.post("/fhir/Patient", json={"resourceType": "Patient"})).json()["id"]
    await fhir.post("/fhir/Observation", json=_observation_of(unlinked))
    linked = {"system": "urn:onecard:citizen", "value": "cz_gone"}
    gone = (
        await fhir.post("/fhir/Patient", json={"resourceType": "Patient", "identifier": [linked]})
    ).json()["id"]
    await fhir.post("/fhir/Observation", json=_observation_of(gone))
    assert (await fhir.delete(f"/fhir/Patient/{gone}")).status_code == 204
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="services.kit.audit"):
        response = await fhir.get("/fhir/Observation?_include=Observation:subject&_count=50")
        assert response.status_code == 200, response.text
    found = {e["resource"]["resourceType"] for e in response.json()["entry"]}
    assert found == {"Observation", "Patient"}
    searches = [r for r in _entries(caplog) if r["action"] == "R"]
    assert sorted((r["citizen"] or "-") for r in searches) == ["-", "-", CITIZEN]
    assert all(r["purpose"] == "TREAT" for r in searches)
