"""Whose records a token reaches (issue 5 "Who may do what"; issue 4 consent and break-glass):
a hospital reads what it wrote; another hospital's records only with the patient present (a
card tap at its terminal), the patient's Consent, or break-glass; a citizen reads their own."""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx
import pytest

from health.consent import CLIENT_SYSTEM, CONSENT_SCOPE_SYSTEM
from health.fhir.compartment import CITIZEN_SYSTEM
from services.kit.tokens import sign_access_token
from tests.health.conftest import FHIR_KEY, ISSUER, fhir_auth

CITIZEN = "cz_zhangwei0001"
HIV = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HIV"}


def person(
    citizen: str = CITIZEN, *, purpose: str = "registration_desk", scope: str = "patient/*.rs"
) -> dict[str, str]:
    """A card holder's token: at a hospital's terminal (the patient is present), or in their
    own app (purpose mobile_app)."""
    now = int(time.time())
    terminal = "app:phone0000000000001" if purpose == "mobile_app" else "term_desk_b"
    claims = {
        "iss": ISSUER,
        "sub": citizen,
        "aud": [ISSUER + "/fhir"],
        "exp": now + 300,
        "iat": now,
        "jti": secrets.token_hex(8),
        "client_id": terminal,
        "scope": scope,
        "acr": "2",
        "amr": ["sc", "hwk", "pin"],
        "act": {"sub": terminal, "purpose": purpose},
    }
    return {"Authorization": "Bearer " + sign_access_token(claims, private_key=FHIR_KEY, kid="kf")}


async def _record(fhir: httpx.AsyncClient, *, sensitive: bool = False) -> dict[str, str]:
    """Hospital A's record of the citizen: their Patient and one Observation."""
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "HIV viral load" if sensitive else "Body weight"},
        "subject": {"reference": "urn:uuid:patient"},
    }
    if sensitive:
        observation["meta"] = {"security": [HIV]}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:patient",
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": CITIZEN_SYSTEM, "value": CITIZEN}],
                },
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": f"identifier={CITIZEN_SYSTEM}|{CITIZEN}",
                },
            },
            {"resource": observation, "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    response = await fhir.post("/fhir", json=bundle, headers=fhir_auth(client_id="hospital-a"))
    assert response.status_code == 200, response.text
    patient, obs = (
        e["response"]["location"].split("/_history")[0] for e in response.json()["entry"]
    )
    return {"patient": patient, "observation": obs}


def consent(patient: str, client_id: str, *labels: dict[str, str]) -> dict[str, Any]:
    provision: dict[str, Any] = {
        "type": "permit",
        "actor": [
            {
                "role": {"text": "reader"},
                "reference": {"identifier": {"system": CLIENT_SYSTEM, "value": client_id}},
            }
        ],
    }
    if labels:
        provision["securityLabel"] = list(labels)
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": CONSENT_SCOPE_SYSTEM, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": patient},
        "policyRule": {"text": "the citizen's own choice in the app"},
        "provision": provision,
    }


async def test_a_hospital_reads_what_it_wrote_and_not_another_hospitals(
    fhir: httpx.AsyncClient,
) -> None:
    urls = await _record(fhir)
    own = await fhir.get(f"/fhir/{urls['observation']}", headers=fhir_auth(client_id="hospital-a"))
    assert own.status_code == 200
    other = await fhir.get(
        f"/fhir/{urls['observation']}", headers=fhir_auth(client_id="hospital-b")
    )
    assert other.status_code == 403
    assert other.json()["resourceType"] == "OperationOutcome"
    assert "consent" in other.json()["issue"][0]["diagnostics"]


async def test_with_the_patient_present_any_hospital_reads_their_records(
    fhir: httpx.AsyncClient,
) -> None:
    urls = await _record(fhir)
    present = await fhir.get(f"/fhir/{urls['observation']}", headers=person())
    assert present.status_code == 200
    # Another card holder at the same desk reaches nothing of this patient.
    stranger = await fhir.get(f"/fhir/{urls['observation']}", headers=person("cz_someone_else"))
    assert stranger.status_code == 403


async def test_the_citizens_consent_opens_their_records_to_the_hospital_they_name(
    fhir: httpx.AsyncClient,
) -> None:
    urls = await _record(fhir)
    app = person(purpose="mobile_app", scope="patient/*.rs patient/Consent.cru")
    given = await fhir.post(
        "/fhir/Consent", json=consent(urls["patient"], "hospital-b"), headers=app
    )
    assert given.status_code == 201, given.text

    url = f"/fhir/{urls['observation']}"
    assert (await fhir.get(url, headers=fhir_auth(client_id="hospital-b"))).status_code == 200
    assert (await fhir.get(url, headers=fhir_auth(client_id="hospital-c"))).status_code == 403

    # Withdrawn: the hospital is refused again.
    withdrawn = {**given.json(), "status": "inactive"}
    changed = await fhir.put(f"/fhir/Consent/{given.json()['id']}", json=withdrawn, headers=app)
    assert changed.status_code == 200, changed.text
    assert (await fhir.get(url, headers=fhir_auth(client_id="hospital-b"))).status_code == 403


async def test_a_citizen_writes_only_their_own_consent(fhir: httpx.AsyncClient) -> None:
    urls = await _record(fhir)
    other = person(
        "cz_someone_else", purpose="mobile_app", scope="patient/*.rs patient/Consent.cru"
    )
    refused = await fhir.post(
        "/fhir/Consent", json=consent(urls["patient"], "hospital-b"), headers=other
    )
    assert refused.status_code == 403
    # Nothing was stored: hospital B is still refused.
    url = f"/fhir/{urls['observation']}"
    assert (await fhir.get(url, headers=fhir_auth(client_id="hospital-b"))).status_code == 403


async def test_sensitive_records_need_their_label_in_the_consent_and_stay_off_the_counter(
    fhir: httpx.AsyncClient,
) -> None:
    urls = await _record(fhir, sensitive=True)
    url = f"/fhir/{urls['observation']}"
    assert (await fhir.get(url, headers=person())).status_code == 403  # at a counter
    assert (await fhir.get(url, headers=person(purpose="mobile_app"))).status_code == 200
    app = person(purpose="mobile_app", scope="patient/*.rs patient/Consent.cru")

    await fhir.post("/fhir/Consent", json=consent(urls["patient"], "hospital-b"), headers=app)
    assert (await fhir.get(url, headers=fhir_auth(client_id="hospital-b"))).status_code == 403
    await fhir.post("/fhir/Consent", json=consent(urls["patient"], "hospital-b", HIV), headers=app)
    assert (await fhir.get(url, headers=fhir_auth(client_id="hospital-b"))).status_code == 200


async def test_break_glass_opens_the_records_for_a_while_and_tells_the_citizen(
    fhir: httpx.AsyncClient,
) -> None:
    urls = await _record(fhir, sensitive=True)
    url = f"/fhir/{urls['observation']}"
    er = fhir_auth(client_id="hospital-er")
    assert (await fhir.get(url, headers=er)).status_code == 403

    reason = {"name": "reason", "valueString": "unconscious patient in the emergency room"}
    response = await fhir.post(
        f"/fhir/{urls['patient']}/$break-glass",
        json={
            "resourceType": "Parameters",
            "parameter": [reason, {"name": "minutes", "valueInteger": 30}],
        },
        headers={**er, "Content-Type": "application/fhir+json"},
    )
    assert response.status_code == 200, response.text
    values = {p["name"]: p for p in response.json()["parameter"]}
    assert "expires" in values
    assert (await fhir.get(url, headers=er)).status_code == 200  # sensitive ones too

    # The citizen finds the notice in their own record, with the reason.
    notice = await fhir.get(
        f"/fhir/{values['notification']['valueReference']['reference']}",
        headers=person(purpose="mobile_app"),
    )
    assert notice.status_code == 200
    assert "unconscious patient" in notice.json()["payload"][0]["contentString"]
    assert "hospital-er" in notice.json()["payload"][0]["contentString"]


@pytest.mark.parametrize(
    ("parameters", "status"),
    [
        ([{"name": "reason", "valueString": "too short"}], 422),
        ([], 422),
        (
            [
                {"name": "reason", "valueString": "a long enough reason"},
                {"name": "minutes", "valueInteger": 100000},
            ],
            422,
        ),
    ],
)
async def test_break_glass_needs_a_stated_reason_and_a_bounded_time(
    fhir: httpx.AsyncClient, parameters: list[dict[str, Any]], status: int
) -> None:
    urls = await _record(fhir)
    response = await fhir.post(
        f"/fhir/{urls['patient']}/$break-glass",
        json={"resourceType": "Parameters", "parameter": parameters},
        headers={**fhir_auth(client_id="hospital-er"), "Content-Type": "application/fhir+json"},
    )
    assert response.status_code == status
    url = f"/fhir/{urls['observation']}"
    assert (await fhir.get(url, headers=fhir_auth(client_id="hospital-er"))).status_code == 403


async def test_break_glass_is_for_hospitals_and_existing_patients(fhir: httpx.AsyncClient) -> None:
    urls = await _record(fhir)
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "reason", "valueString": "unconscious patient in the ER"}],
    }
    headers = {"Content-Type": "application/fhir+json"}
    by_person = await fhir.post(
        f"/fhir/{urls['patient']}/$break-glass", json=body, headers={**person(), **headers}
    )
    assert by_person.status_code == 403
    unknown = await fhir.post(
        "/fhir/Patient/no-such-patient/$break-glass", json=body, headers={**fhir_auth(), **headers}
    )
    assert unknown.status_code == 404


async def test_only_the_hospital_that_wrote_a_record_changes_it(fhir: httpx.AsyncClient) -> None:
    urls = await _record(fhir)
    url = f"/fhir/{urls['observation']}"
    current = (await fhir.get(url, headers=fhir_auth(client_id="hospital-a"))).json()
    b = fhir_auth(client_id="hospital-b")
    assert (await fhir.put(url, json=current, headers=b)).status_code == 403
    assert (await fhir.delete(url, headers=b)).status_code == 403
    assert (await fhir.get(url, headers=fhir_auth(client_id="hospital-a"))).status_code == 200


async def test_search_shows_each_reader_only_what_they_may_read(fhir: httpx.AsyncClient) -> None:
    urls = await _record(fhir)
    sensitive = await _record(fhir, sensitive=True)
    assert sensitive["patient"] == urls["patient"]  # the same citizen, found by identifier

    async def found(headers: dict[str, str]) -> set[str]:
        response = await fhir.get("/fhir/Observation", headers=headers)
        assert response.status_code == 200, response.text
        return {f"Observation/{e['resource']['id']}" for e in response.json().get("entry", [])}

    both = {urls["observation"], sensitive["observation"]}
    assert await found(fhir_auth(client_id="hospital-a")) == both  # its own
    assert await found(fhir_auth(client_id="hospital-b")) == set()
    assert await found(person()) == {urls["observation"]}  # present: not the sensitive one
    assert await found(person(purpose="mobile_app")) == both  # the citizen's own app
    assert await found(person("cz_someone_else")) == set()

    app = person(purpose="mobile_app", scope="patient/*.rs patient/Consent.cru")
    await fhir.post("/fhir/Consent", json=consent(urls["patient"], "hospital-b"), headers=app)
    assert await found(fhir_auth(client_id="hospital-b")) == {urls["observation"]}


async def test_a_consent_naming_no_hospital_opens_the_records_to_every_hospital(
    fhir: httpx.AsyncClient,
) -> None:
    """consent.html#provision: a provision without actors applies to everyone, in a read and
    in a search alike; a later deny naming one hospital closes them to that one only."""
    urls = await _record(fhir)
    app = person(purpose="mobile_app", scope="patient/*.rs patient/Consent.cru")
    everyone = consent(urls["patient"], "hospital-b")
    del everyone["provision"]["actor"]
    given = await fhir.post("/fhir/Consent", json=everyone, headers=app)
    assert given.status_code == 201, given.text

    async def sees(client_id: str) -> tuple[int, set[str]]:
        headers = fhir_auth(client_id=client_id)
        read = await fhir.get(f"/fhir/{urls['observation']}", headers=headers)
        search = await fhir.get("/fhir/Observation", headers=headers)
        assert search.status_code == 200, search.text
        found = {f"Observation/{e['resource']['id']}" for e in search.json().get("entry", [])}
        return read.status_code, found

    assert await sees("hospital-b") == (200, {urls["observation"]})
    assert await sees("hospital-c") == (200, {urls["observation"]})

    deny = consent(urls["patient"], "hospital-c")
    deny["provision"]["type"] = "deny"
    deny["dateTime"] = "2999-01-01"  # the newest consent decides
    assert (await fhir.post("/fhir/Consent", json=deny, headers=app)).status_code == 201
    assert await sees("hospital-c") == (403, set())
    assert await sees("hospital-b") == (200, {urls["observation"]})


async def test_a_search_pinned_to_a_patient_is_decided_by_that_patients_consent_alone(
    fhir: httpx.AsyncClient,
) -> None:
    """``Observation?patient=X`` reads only X's consents (not every consent naming the
    hospital), and decides exactly as the unpinned search does."""
    urls = await _record(fhir)
    writer = fhir_auth(client_id="hospital-a")
    other = await fhir.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=writer)
    assert other.status_code == 201, other.text
    other_patient = f"Patient/{other.json()['id']}"
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": other_patient},
    }
    written = await fhir.post("/fhir/Observation", json=observation, headers=writer)
    assert written.status_code == 201, written.text
    app = person(purpose="mobile_app", scope="patient/*.rs patient/Consent.cru")
    given = await fhir.post(
        "/fhir/Consent", json=consent(urls["patient"], "hospital-b"), headers=app
    )
    assert given.status_code == 201, given.text

    async def found(query: str) -> set[str]:
        headers = fhir_auth(client_id="hospital-b")
        response = await fhir.get(f"/fhir/Observation{query}", headers=headers)
        assert response.status_code == 200, response.text
        return {f"Observation/{e['resource']['id']}" for e in response.json().get("entry", [])}

    consented_id = urls["patient"].split("/")[1]
    assert await found(f"?patient={consented_id}") == {urls["observation"]}
    assert await found(f"?subject={urls['patient']}") == {urls["observation"]}
    assert await found(f"?patient={other.json()['id']}") == set()
    assert await found("") == {urls["observation"]}
    # An include reaches beyond the pinned patient: the search is restricted as a whole.
    included = await fhir.get(
        f"/fhir/Observation?patient={consented_id}&_include=Observation:subject",
        headers=fhir_auth(client_id="hospital-b"),
    )
    assert {e["resource"]["resourceType"] for e in included.json()["entry"]} == {
        "Observation",
        "Patient",
    }
