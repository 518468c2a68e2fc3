"""Bulk Data ``$export`` (hl7.org/fhir/uv/bulkdata/export.html): kick-off, polling, manifest,
NDJSON files, filters, who may read what, cancellation, retention and bad input."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from health.app import create_app
from health.bulk import repository
from health.fhir.compartment import CITIZEN_SYSTEM
from health.settings import HealthSettings
from services.kit.tokens import KeySet, StaticKeySource
from tests.harness import serve_asgi
from tests.health.conftest import FHIR_KEY, ISSUER, conforms, fhir_auth
from tests.health.test_who_may_read import HIV, consent, person

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
CITIZEN = "cz_bulk000000001"


def hospital(client_id: str = "hospital-a", scope: str = "system/*.cruds") -> dict[str, str]:
    return {**fhir_auth(scope, client_id=client_id), **ASYNC}


async def _patient_record(
    fhir: httpx.AsyncClient,
    *,
    client_id: str = "hospital-a",
    citizen: str = CITIZEN,
    observations: int = 2,
) -> dict[str, Any]:
    """A hospital's record of one patient: the Patient, observations, one Condition."""
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": "urn:uuid:patient",
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": CITIZEN_SYSTEM, "value": citizen}],
            },
            "request": {"method": "POST", "url": "Patient"},
        },
        {
            "resource": {
                "resourceType": "Condition",
                "subject": {"reference": "urn:uuid:patient"},
                "code": {"text": "hypertension"},
            },
            "request": {"method": "POST", "url": "Condition"},
        },
    ]
    for n in range(observations):
        observation: dict[str, Any] = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": f"blood pressure {n}"},
            "subject": {"reference": "urn:uuid:patient"},
        }
        entries.append(
            {"resource": observation, "request": {"method": "POST", "url": "Observation"}}
        )
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = await fhir.post("/fhir", json=bundle, headers=fhir_auth(client_id=client_id))
    assert response.status_code == 200, response.text
    ids: dict[str, list[str]] = {}
    for entry in response.json()["entry"]:
        resource_type, resource_id = entry["response"]["location"].split("/")[:2]
        ids.setdefault(resource_type, []).append(resource_id)
    return {"patient": ids["Patient"][0], "ids": ids}


async def kick_off(fhir: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None) -> str:
    response = await fhir.get(url, headers=headers or hospital())
    assert response.status_code == 202, response.text
    location = response.headers["content-location"]
    assert location.startswith("http://testserver/fhir/bulk/")
    return location


async def manifest_of(
    fhir: httpx.AsyncClient, status_url: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Poll the status URL as a client does until the manifest is there."""
    headers = headers or hospital()
    for _ in range(600):
        response = await fhir.get(status_url, headers=headers)
        if response.status_code == 200:
            assert response.headers["content-type"].startswith("application/json")
            return dict(response.json())
        assert response.status_code == 202, response.text
        assert response.headers["x-progress"]
        assert int(response.headers["retry-after"]) >= 1
        await asyncio.sleep(0.02)
    raise AssertionError("the export did not complete")


async def download(
    fhir: httpx.AsyncClient, manifest: dict[str, Any], headers: dict[str, str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Every file of a manifest, parsed: type -> resources."""
    files: dict[str, list[dict[str, Any]]] = {}
    for output in manifest["output"]:
        response = await fhir.get(output["url"], headers=headers or fhir_auth())
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/fhir+ndjson")
        lines = response.text.splitlines()
        resources = [json.loads(line) for line in lines]
        assert len(resources) == output["count"]
        assert all(r["resourceType"] == output["type"] for r in resources)
        files[output["type"]] = resources
    return files


def ids_of(files: dict[str, list[dict[str, Any]]]) -> dict[str, set[str]]:
    return {t: {r["id"] for r in resources} for t, resources in files.items()}


async def test_system_export_holds_every_record_the_hospital_wrote(
    fhir: httpx.AsyncClient,
) -> None:
    record = await _patient_record(fhir, observations=3)
    organization = await fhir.post(
        "/fhir/Organization", json={"resourceType": "Organization", "name": "Clinic"}
    )
    assert organization.status_code == 201

    status_url = await kick_off(fhir, "/fhir/$export")
    manifest = await manifest_of(fhir, status_url)
    complete = await fhir.get(status_url)
    assert parsedate_to_datetime(complete.headers["expires"]) > datetime.now(UTC)

    assert manifest["requiresAccessToken"] is True
    assert manifest["request"] == "http://testserver/fhir/$export"
    assert datetime.fromisoformat(manifest["transactionTime"]) <= datetime.now(UTC)
    assert manifest["error"] == []
    files = await download(fhir, manifest)
    assert ids_of(files) == {
        "Condition": set(record["ids"]["Condition"]),
        "Observation": set(record["ids"]["Observation"]),
        "Organization": {organization.json()["id"]},
        "Patient": {record["patient"]},
    }
    for resources in files.values():
        for resource in resources:
            conforms(resource)
            assert resource["meta"]["versionId"] == "1"


async def test_a_large_store_is_read_page_by_page_into_complete_files(
    fhir: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pages of 3 rows: pages end inside a type and across types, as they do with 500 rows on a
    # large store.
    monkeypatch.setattr(repository, "PAGE_SIZE", 3)
    first = await _patient_record(fhir, citizen="cz_bulk000000001", observations=7)
    second = await _patient_record(fhir, citizen="cz_bulk000000002", observations=4)
    files = await download(fhir, await manifest_of(fhir, await kick_off(fhir, "/fhir/$export")))
    assert ids_of(files) == {
        "Condition": {*first["ids"]["Condition"], *second["ids"]["Condition"]},
        "Observation": {*first["ids"]["Observation"], *second["ids"]["Observation"]},
        "Patient": {first["patient"], second["patient"]},
    }
    assert len(files["Observation"]) == 11  # each once


async def test_patient_and_group_exports_hold_the_patients_compartments(
    fhir: httpx.AsyncClient,
) -> None:
    first = await _patient_record(fhir, citizen="cz_bulk000000001")
    second = await _patient_record(fhir, citizen="cz_bulk000000002", observations=1)
    await fhir.post("/fhir/Organization", json={"resourceType": "Organization", "name": "X"})

    patients = await download(
        fhir, await manifest_of(fhir, await kick_off(fhir, "/fhir/Patient/$export"))
    )
    assert set(patients) == {"Patient", "Observation", "Condition"}  # no Organization
    assert ids_of(patients)["Patient"] == {first["patient"], second["patient"]}
    assert len(patients["Observation"]) == 3

    group = await fhir.post(
        "/fhir/Group",
        json={
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": f"Patient/{second['patient']}"}}],
        },
    )
    assert group.status_code == 201, group.text
    url = f"/fhir/Group/{group.json()['id']}/$export"
    members = await download(fhir, await manifest_of(fhir, await kick_off(fhir, url)))
    assert ids_of(members) == {
        # FHIR R4 compartmentdefinition-patient: a Group is in its members' compartments.
        "Group": {group.json()["id"]},
        "Patient": {second["patient"]},
        "Observation": set(second["ids"]["Observation"]),
        "Condition": set(second["ids"]["Condition"]),
    }


async def test_type_and_since_filter_the_export(fhir: httpx.AsyncClient) -> None:
    old = await _patient_record(fhir, citizen="cz_bulk000000001")
    await asyncio.sleep(0.01)
    since = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    await asyncio.sleep(0.01)
    new = await _patient_record(fhir, citizen="cz_bulk000000002", observations=1)

    typed = await download(
        fhir,
        await manifest_of(fhir, await kick_off(fhir, "/fhir/$export?_type=Patient,Condition")),
    )
    assert set(typed) == {"Patient", "Condition"}
    assert ids_of(typed)["Patient"] == {old["patient"], new["patient"]}

    recent = await download(
        fhir,
        await manifest_of(
            fhir,
            await kick_off(
                fhir,
                "/fhir/$export?_since=" + since + "&_outputFormat=application/fhir%2Bndjson",
            ),
        ),
    )
    assert ids_of(recent) == {
        "Patient": {new["patient"]},
        "Observation": set(new["ids"]["Observation"]),
        "Condition": set(new["ids"]["Condition"]),
    }


@pytest.mark.parametrize("named_in_query", [500, 0], ids=["consents-in-sql", "consents-in-python"])
async def test_another_hospital_exports_a_patient_only_with_their_consent(
    fhir: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, named_in_query: int
) -> None:
    # Both ways of choosing the readable records: in the query (few consents) or per record.
    monkeypatch.setattr(repository, "MAX_CONSENTED_IN_QUERY", named_in_query)
    record = await _patient_record(fhir, citizen=CITIZEN)
    other = await _patient_record(fhir, citizen="cz_bulk000000002")
    hiv = await fhir.post(
        "/fhir/Observation",
        json={
            "resourceType": "Observation",
            "meta": {"security": [HIV]},
            "status": "final",
            "code": {"text": "HIV viral load"},
            "subject": {"reference": f"Patient/{record['patient']}"},
        },
    )
    assert hiv.status_code == 201, hiv.text
    b = hospital("hospital-b")
    files = await download(
        fhir, await manifest_of(fhir, await kick_off(fhir, "/fhir/$export", b), b), b
    )
    assert files == {}

    app = person(CITIZEN, purpose="mobile_app", scope="patient/*.rs patient/Consent.cru")
    given = await fhir.post(
        "/fhir/Consent", json=consent(f"Patient/{record['patient']}", "hospital-b"), headers=app
    )
    assert given.status_code == 201, given.text
    files = await download(
        fhir, await manifest_of(fhir, await kick_off(fhir, "/fhir/$export", b), b), b
    )
    # The consenting patient's ordinary records; the sensitive one needs its label consented.
    assert ids_of(files)["Observation"] == set(record["ids"]["Observation"])
    assert ids_of(files)["Patient"] == {record["patient"]}  # not the other, who did not consent
    assert ids_of(files)["Condition"] == set(record["ids"]["Condition"])
    assert other["patient"] not in json.dumps(files)

    labelled = consent(f"Patient/{record['patient']}", "hospital-b", HIV)
    assert (await fhir.post("/fhir/Consent", json=labelled, headers=app)).status_code == 201
    files = await download(
        fhir, await manifest_of(fhir, await kick_off(fhir, "/fhir/$export", b), b), b
    )
    assert ids_of(files)["Observation"] == {*record["ids"]["Observation"], hiv.json()["id"]}


async def test_the_export_is_audited_once_per_patient(
    fhir: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    first = await _patient_record(fhir, citizen="cz_bulk000000001")
    await _patient_record(fhir, citizen="cz_bulk000000002")
    with caplog.at_level(logging.INFO, logger="services.kit.audit"):
        await manifest_of(fhir, await kick_off(fhir, "/fhir/Patient/$export"))
    records = [
        r.record  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "audit.local" and r.record["outcome_detail"] == "$export"  # type: ignore[attr-defined]
    ]
    assert sorted(r["citizen"] for r in records) == ["cz_bulk000000001", "cz_bulk000000002"]
    assert all(r["action"] == "R" and r["entity_type"] == "Bundle" for r in records)
    assert first["patient"]  # the first patient's records were among them
    assert all(r["agent"]["who"] == "hospital-a" for r in records)


async def test_another_client_reaches_neither_the_status_nor_the_files(
    fhir: httpx.AsyncClient,
) -> None:
    await _patient_record(fhir)
    status_url = await kick_off(fhir, "/fhir/$export")
    manifest = await manifest_of(fhir, status_url)
    other = fhir_auth(client_id="hospital-b")
    assert (await fhir.get(status_url, headers=other)).status_code == 404
    assert (await fhir.delete(status_url, headers=other)).status_code == 404
    for output in manifest["output"]:
        refused = await fhir.get(output["url"], headers=other)
        assert refused.status_code == 404
        assert refused.json()["resourceType"] == "OperationOutcome"
        # A token is required to download.
        assert (await fhir.get(output["url"], headers={"Authorization": ""})).status_code == 401
    # A name the manifest does not list is not served, whatever it points at.
    job = status_url.rsplit("/", 1)[1]
    assert (await fhir.get(f"/fhir/bulk/{job}/..%2Fsecrets")).status_code == 404
    assert (await fhir.get(f"/fhir/bulk/{job}/Account.ndjson")).status_code == 404


async def test_a_card_holder_cannot_export(fhir: httpx.AsyncClient) -> None:
    response = await fhir.get("/fhir/$export", headers={**person(scope="patient/*.rs"), **ASYNC})
    assert response.status_code == 403
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_types_outside_the_tokens_scopes_are_refused_or_left_out(
    fhir: httpx.AsyncClient,
) -> None:
    record = await _patient_record(fhir)
    narrow = hospital(scope="system/Patient.rs system/Condition.rs")
    refused = await fhir.get("/fhir/$export?_type=Observation", headers=narrow)
    assert refused.status_code == 403
    files = await download(
        fhir, await manifest_of(fhir, await kick_off(fhir, "/fhir/$export", narrow), narrow)
    )
    assert ids_of(files) == {
        "Patient": {record["patient"]},
        "Condition": set(record["ids"]["Condition"]),
    }


async def test_cancel_deletes_the_job_and_its_files(fhir: httpx.AsyncClient) -> None:
    await _patient_record(fhir)
    status_url = await kick_off(fhir, "/fhir/$export")
    manifest = await manifest_of(fhir, status_url)
    cancelled = await fhir.delete(status_url)
    assert cancelled.status_code == 202
    assert (await fhir.get(status_url)).status_code == 404
    for output in manifest["output"]:
        assert (await fhir.get(output["url"])).status_code == 404
    assert (await fhir.delete(status_url)).status_code == 404


async def test_a_running_export_is_cancelled_and_frees_the_client(
    fhir_app: FastAPI, fhir: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repository, "PAGE_SIZE", 1)  # many pages: still running when cancelled
    await _patient_record(fhir, observations=30)
    first = await kick_off(fhir, "/fhir/$export")
    # Cancelled at once, running or not: the status URL is gone and a new export may start.
    assert (await fhir.delete(first)).status_code == 202
    assert (await fhir.get(first)).status_code == 404
    var_dir = fhir_app.state.runtime.settings.var_dir
    assert not (var_dir / "bulk" / first.rsplit("/", 1)[1]).exists()
    second = await kick_off(fhir, "/fhir/$export")
    assert len((await manifest_of(fhir, second))["output"]) == 3


async def test_one_running_export_per_client(fhir: httpx.AsyncClient) -> None:
    await _patient_record(fhir, observations=5)
    answers = await asyncio.gather(
        *(fhir.get("/fhir/$export", headers=hospital()) for _ in range(4))
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(202) >= 1
    assert set(statuses) <= {202, 429}
    for answer in answers:
        if answer.status_code == 429:
            assert answer.headers["retry-after"]
            assert answer.json()["issue"][0]["code"] == "throttled"
    # Another hospital is not held up by hospital A's export.
    other = hospital("hospital-b")
    await manifest_of(fhir, await kick_off(fhir, "/fhir/$export", other), other)
    # Once hospital A's export completed, it may kick off the next.
    for answer in answers:
        if answer.status_code == 202:
            await manifest_of(fhir, answer.headers["content-location"])
    await manifest_of(fhir, await kick_off(fhir, "/fhir/$export"))


@pytest.mark.parametrize(
    ("query", "expression"),
    [
        ("_type=Observation,Nonsense", "_type"),
        ("_type=", "_type"),
        ("_since=yesterday", "_since"),
        ("_since=2026-01-01T00:00:00", "_since"),  # an instant needs a zone
        ("_outputFormat=text/csv", "_outputFormat"),
        ("_typeFilter=Observation%3Fstatus%3Dfinal", "_typeFilter"),
        ("_count=10", "_count"),
        ("_type=Patient&_type=Observation", "_type"),
    ],
)
async def test_bad_parameters_give_400_naming_them(
    fhir: httpx.AsyncClient, query: str, expression: str
) -> None:
    response = await fhir.get(f"/fhir/$export?{query}", headers=hospital())
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [expression]
    # Nothing was started: a good kick-off is accepted at once.
    await manifest_of(fhir, await kick_off(fhir, "/fhir/$export"))


async def test_a_posted_kick_off_takes_a_parameters_body(fhir: httpx.AsyncClient) -> None:
    record = await _patient_record(fhir)
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueString": "Patient"},
            {"name": "_type", "valueString": "Condition"},
            {"name": "_outputFormat", "valueString": "application/fhir+ndjson"},
        ],
    }
    response = await fhir.post("/fhir/Patient/$export", json=body, headers=hospital())
    assert response.status_code == 202, response.text
    files = await download(fhir, await manifest_of(fhir, response.headers["content-location"]))
    assert ids_of(files) == {
        "Patient": {record["patient"]},
        "Condition": set(record["ids"]["Condition"]),
    }

    for bad, expression in [
        ({"resourceType": "Parameters", "parameter": [{"name": "_type"}]}, None),
        ({"resourceType": "Parameters", "parameter": [{"valueString": "x"}]}, None),
        ({"resourceType": "Patient"}, None),
        ({"resourceType": "Parameters", "parameter": ["_type"]}, ["Parameters.parameter[0]"]),
        ({"resourceType": "Parameters", "parameter": {"name": "x"}}, ["Parameters.parameter"]),
        (
            {"resourceType": "Parameters", "parameter": [{"name": "_since", "valueString": "x"}]},
            ["_since"],
        ),
    ]:
        refused = await fhir.post("/fhir/$export", json=bad, headers=hospital())
        assert refused.status_code == 400, refused.text
        issue = refused.json()["issue"][0]
        if expression is not None:
            assert issue["expression"] == expression
    in_url = await fhir.post("/fhir/$export?_type=Patient", json=body, headers=hospital())
    assert in_url.status_code == 400


async def test_kick_off_needs_respond_async_and_a_known_group(fhir: httpx.AsyncClient) -> None:
    sync = await fhir.get("/fhir/$export", headers=fhir_auth())
    assert sync.status_code == 400
    assert "respond-async" in sync.json()["issue"][0]["diagnostics"]
    missing = await fhir.get("/fhir/Group/nope/$export", headers=hospital())
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"
    xml = await fhir.get("/fhir/$export", headers={**hospital(), "Accept": "application/fhir+xml"})
    assert xml.status_code == 406


async def test_files_are_deleted_after_the_retention_time(
    make_settings: Callable[..., Any],
) -> None:
    settings = make_settings(HealthSettings, public_url=ISSUER, bulk_retention_seconds=1)
    app = create_app(settings)
    app.state.token_keys = StaticKeySource(KeySet({"kf": FHIR_KEY.public_key()}))
    async with serve_asgi(app) as fhir:
        fhir.headers.update(fhir_auth())
        await _patient_record(fhir)
        status_url = await kick_off(fhir, "/fhir/$export")
        manifest = await manifest_of(fhir, status_url)
        url = manifest["output"][0]["url"]
        assert (await fhir.get(url)).status_code == 200
        await asyncio.sleep(1.5)
        assert (await fhir.get(status_url)).status_code == 404
        assert (await fhir.get(url)).status_code == 404
        assert not any((settings.var_dir / "bulk").iterdir())
