"""A health app with the search routes, a token maker, and a way to put resources in the store.

Resources are written the way the store writes them: a ``resources`` row and, in the same
transaction, ``reindex`` (part A's repository does exactly this on every write).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI

import health
from health.fhir.outcome import render_operation_outcome
from health.search.index import Indexed, reindex_many
from health.search.routes import router
from health.settings import HealthSettings
from health.store.models import ResourceRow
from services.kit.app import create_service_app
from services.kit.errors import register_renderer
from services.kit.tokens import KeySet, StaticKeySource, sign_access_token
from tests.harness import serve_asgi
from tests.health.conftest import synthea_file

ISSUER = "http://testserver"
KEY = ec.generate_private_key(ec.SECP256R1())


def auth(scope: str = "system/*.rs", *, client_id: str = "hospital-a") -> dict[str, str]:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": client_id,
        "aud": [ISSUER + "/fhir"],
        "exp": now + 300,
        "iat": now,
        "jti": secrets.token_hex(8),
        "client_id": client_id,
        "scope": scope,
        "acr": "3",
        "amr": ["pop"],
    }
    return {"Authorization": "Bearer " + sign_access_token(claims, private_key=KEY, kid="kt")}


def patient_key_of(resource: dict[str, Any]) -> str | None:
    """The Patient compartment a test resource is in (its own id for a Patient)."""
    if resource["resourceType"] == "Patient":
        return str(resource["id"])
    for element in ("subject", "patient", "beneficiary"):
        value = resource.get(element)
        if isinstance(value, dict) and str(value.get("reference", "")).startswith("Patient/"):
            return str(value["reference"]).split("/", 1)[1]
    return None


@dataclass
class Store:
    app: FastAPI
    http: httpx.AsyncClient

    async def put(self, *resources: dict[str, Any], deleted: Iterable[str] = ()) -> None:
        """Write resources as current versions (``deleted`` names Type/id written as deleted)."""
        db = self.app.state.runtime.db
        gone = set(deleted)
        async with db.unit_of_work() as session:
            items = []
            for written in resources:
                key = f"{written['resourceType']}/{written['id']}"
                updated = written.get("meta", {}).get("lastUpdated")
                when = datetime.fromisoformat(updated) if updated else datetime.now(UTC)
                resource = {
                    **written,
                    "meta": {
                        **written.get("meta", {}),
                        "versionId": "1",
                        "lastUpdated": when.isoformat(),
                    },
                }
                row = ResourceRow(
                    resource_type=resource["resourceType"],
                    id=resource["id"],
                    version_id=1,
                    last_updated=when,
                    deleted=key in gone,
                    patient_key=patient_key_of(resource),
                    author="hospital-a",
                    content="" if key in gone else json.dumps(resource),
                )
                await session.merge(row)
                items.append(
                    Indexed(
                        row.resource_type,
                        row.id,
                        None if key in gone else resource,
                        row.patient_key,
                    )
                )
            await reindex_many(session, items)

    async def search(
        self, query: str, *, scope: str = "system/*.rs", **kwargs: Any
    ) -> httpx.Response:
        headers = {**auth(scope), **kwargs.pop("headers", {})}
        path = f"/fhir{query}" if query.startswith("?") else f"/fhir/{query}"
        return await self.http.get(path, headers=headers, **kwargs)

    async def ids(self, query: str) -> list[str]:
        response = await self.search(query)
        assert response.status_code == 200, response.text
        return [
            e["resource"]["id"]
            for e in response.json().get("entry", [])
            if e["search"]["mode"] == "match"
        ]


@pytest.fixture
async def store(make_settings: Callable[..., Any]) -> AsyncIterator[Store]:
    async def start(app: FastAPI) -> None:
        app.state.token_keys = StaticKeySource(KeySet({"kt": KEY.public_key()}))

    app = create_service_app(
        settings=make_settings(HealthSettings, public_url=ISSUER),
        title="health search under test",
        migrations_dir=Path(health.__file__).parent / "migrations",
        routers=[router],
        on_startup=start,
        token_audience="/fhir",
    )
    register_renderer(app, "/fhir", render_operation_outcome)
    async with serve_asgi(app) as http:
        yield Store(app, http)


Loader = Callable[[str], Awaitable[list[dict[str, Any]]]]


def synthea_resources(name: str) -> list[dict[str, Any]]:
    """A Synthea bundle's resources with its urn:uuid references made local (Type/id), as the
    store's transaction processing does (FHIR R4 http.html#trules)."""
    path = synthea_file(name)
    bundle = json.loads(path.read_text(encoding="utf-8"))
    local = {
        e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle["entry"]
    }

    def rewrite(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: (local.get(v, v) if k == "reference" and isinstance(v, str) else rewrite(v))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [rewrite(v) for v in value]
        return value

    return [rewrite(e["resource"]) for e in bundle["entry"]]
