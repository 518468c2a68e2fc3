"""The rules around export jobs: one running export per client, and a job whose process died
(a crash or a restart) ends as failed rather than holding the client's slot forever."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
from fastapi import FastAPI

from health.bulk.exporter import STALE_AFTER
from health.bulk.models import IN_PROGRESS, SYSTEM, ExportJob
from health.bulk.parameters import ExportParameters
from services.kit.sqltypes import utcnow
from tests.health.bulk.test_export import hospital, kick_off, manifest_of
from tests.health.conftest import conforms


async def _running_job(app: FastAPI, *, client_id: str, heartbeat_age: timedelta) -> str:
    """A job as the export task of another process leaves it in the table while it runs."""
    now = utcnow()
    job = ExportJob(
        id=uuid.uuid4().hex,
        client_id=client_id,
        active_client=client_id,
        kind=SYSTEM,
        params=ExportParameters().to_json(),
        request_url="http://testserver/fhir/$export",
        status=IN_PROGRESS,
        progress="120 resources exported",
        files="[]",
        transaction_time=now - heartbeat_age,
        created_at=now - heartbeat_age,
        heartbeat_at=now - heartbeat_age,
    )
    async with app.state.runtime.db.unit_of_work() as session:
        session.add(job)
    return job.id


async def test_a_second_export_waits_for_the_first(
    fhir_app: FastAPI, fhir: httpx.AsyncClient
) -> None:
    job = await _running_job(fhir_app, client_id="hospital-a", heartbeat_age=timedelta(0))
    refused = await fhir.get("/fhir/$export", headers=hospital())
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    assert refused.json()["issue"][0]["code"] == "throttled"
    # The running one is still reported as running, with its progress.
    status = await fhir.get(f"/fhir/bulk/{job}")
    assert status.status_code == 202
    assert status.headers["x-progress"] == "120 resources exported"
    # Another hospital is not held up.
    other = hospital("hospital-b")
    await manifest_of(fhir, await kick_off(fhir, "/fhir/$export", other), other)


async def test_an_export_whose_process_died_is_failed_and_frees_the_client(
    fhir_app: FastAPI, fhir: httpx.AsyncClient
) -> None:
    job = await _running_job(
        fhir_app, client_id="hospital-a", heartbeat_age=STALE_AFTER + timedelta(seconds=5)
    )
    status = await fhir.get(f"/fhir/bulk/{job}")
    assert status.status_code == 503
    outcome = status.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "transient"
    assert "kick off again" in outcome["issue"][0]["diagnostics"]
    await manifest_of(fhir, await kick_off(fhir, "/fhir/$export"))


async def test_the_capability_statement_declares_the_exports(fhir: httpx.AsyncClient) -> None:
    statement = (await fhir.get("/fhir/metadata")).json()
    conforms(statement)
    assert statement["instantiates"] == [
        "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
    ]
    rest = statement["rest"][0]
    assert any(o["definition"].endswith("/OperationDefinition/export") for o in rest["operation"])
    for resource_type, name in [("Patient", "patient-export"), ("Group", "group-export")]:
        entry = next(r for r in rest["resource"] if r["type"] == resource_type)
        definitions = [o["definition"] for o in entry["operation"]]
        assert f"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/{name}" in definitions
