"""Bad input gets a clear problem+json (RFC 9457), never a 500 with a stack trace."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

from services.audit.settings import AuditSettings
from services.kit.app import create_service_app
from services.kit.errors import Problem, register_renderer
from tests.harness import serve_asgi


class Citizen(BaseModel):
    name: str
    phone: str


router = APIRouter()


@router.post("/things")
async def create_thing(citizen: Citizen) -> dict[str, str]:
    return {"name": citizen.name}


@router.get("/conflict")
async def conflict() -> None:
    raise Problem(
        409,
        "a citizen with this national ID number is already registered",
        type="https://onecard.example/problems/duplicate",
        existing="/citizens/1",
    )


@router.get("/boom")
async def boom() -> None:
    raise RuntimeError("database password is hunter2")


@router.get("/fhir/Patient/{pid}")
async def fhir_read(pid: str) -> None:
    raise Problem(404, f"Patient/{pid} is not known")


def _operation_outcome(request: Request, problem: Problem) -> Response:
    return JSONResponse(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "not-found", "diagnostics": problem.detail}],
        },
        status_code=problem.status,
        media_type="application/fhir+json",
    )


@pytest.fixture
async def client(tmp_path: object) -> AsyncIterator[object]:
    # No database needed here: these tests exercise the error layer only.
    app: FastAPI = create_service_app(
        settings=AuditSettings(var_dir=tmp_path, environment="test"),  # type: ignore[arg-type]
        title="errors under test",
        routers=[router],
    )
    register_renderer(app, "/fhir", _operation_outcome)
    async with serve_asgi(app) as c:
        yield c


async def test_unknown_route_is_a_404_problem(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.get("/no/such/route")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["title"] == "Not Found"
    assert body["detail"] == "no route matches GET /no/such/route"
    assert body["instance"] == "/no/such/route"
    assert body["request_id"] == response.headers["x-request-id"]


async def test_wrong_method_is_a_405_problem(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.delete("/things")
    assert response.status_code == 405
    assert response.json()["detail"] == "method DELETE is not allowed on /things"


async def test_malformed_json_is_a_400_naming_the_problem(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.post(
        "/things", content=b'{"name": "Li Lei", ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"].startswith("body is not valid JSON")


async def test_invalid_fields_are_a_422_naming_each_field(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.post("/things", json={"name": 5})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "body.name" in detail
    assert "body.phone: Field required" in detail


async def test_a_raised_problem_keeps_its_type_and_extensions(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.get("/conflict")
    assert response.status_code == 409
    assert response.json() == {
        "type": "https://onecard.example/problems/duplicate",
        "title": "Conflict",
        "status": 409,
        "detail": "a citizen with this national ID number is already registered",
        "instance": "/conflict",
        "request_id": response.headers["x-request-id"],
        "existing": "/citizens/1",
    }


async def test_an_unexpected_error_reveals_nothing(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "hunter2" not in response.text
    assert "Traceback" not in response.text
    assert "quote the request id" in response.json()["detail"]


async def test_routes_under_a_registered_prefix_use_their_own_error_dialect(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.get("/fhir/Patient/42")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/fhir+json"
    assert response.json()["resourceType"] == "OperationOutcome"
    unknown = await client.get("/fhir/Nope/1/x/y")
    assert unknown.json()["resourceType"] == "OperationOutcome"
