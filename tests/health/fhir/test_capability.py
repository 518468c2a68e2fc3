"""GET /fhir/metadata states what the server does (FHIR R4 capabilitystatement.html)."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from tests.harness import serve_asgi
from tests.health.conftest import conforms


async def test_metadata_is_public_and_lists_the_interactions(fhir: httpx.AsyncClient) -> None:
    response = await fhir.get("/fhir/metadata", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    statement = response.json()
    conforms(statement)
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["format"] == ["application/fhir+json", "json"]
    rest = statement["rest"][0]
    assert {"transaction", "batch", "history-system"} == {i["code"] for i in rest["interaction"]}
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    codes = {i["code"] for i in patient["interaction"]}
    assert {"read", "vread", "update", "patch", "delete", "create", "history-type"} <= codes
    assert patient["conditionalCreate"] is True
    assert patient["conditionalDelete"] == "single"


async def test_search_is_claimed_with_the_parameters_it_serves(fhir_app: FastAPI) -> None:
    async with serve_asgi(fhir_app) as http:
        after = (await http.get("/fhir/metadata")).json()
    conforms(after)
    assert "search-type" in _codes(after, "Patient")
    patient = next(r for r in after["rest"][0]["resource"] if r["type"] == "Patient")
    assert {"identifier", "birthdate", "_id"} <= {p["name"] for p in patient["searchParam"]}


def _codes(statement: dict[str, Any], resource_type: str) -> set[str]:
    resource = next(r for r in statement["rest"][0]["resource"] if r["type"] == resource_type)
    return {i["code"] for i in resource["interaction"]}
