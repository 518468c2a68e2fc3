"""The ledger's HTTP surface: only platform services append; citizens read their own log."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI

import services.audit
from services.audit.app import start as start_ledger
from services.audit.app import stop as stop_ledger
from services.audit.routes import router
from services.audit.settings import AuditSettings
from services.kit.app import create_service_app
from services.kit.tokens import KeySet, StaticKeySource, sign_access_token
from tests.harness import serve_asgi
from tests.services.audit.test_ledger import record

ISSUER = "http://testserver"
KEY = ec.generate_private_key(ec.SECP256R1())


def token(*, sub: str, scope: str, client_id: str = "svc_health", acr: str = "2") -> dict[str, str]:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": sub,
        "aud": [ISSUER + "/audit"],
        "exp": now + 300,
        "iat": now,
        "jti": secrets.token_hex(8),
        "client_id": client_id,
        "scope": scope,
        "acr": acr,
        "amr": ["sc", "pin"],
    }
    return {"Authorization": "Bearer " + sign_access_token(claims, private_key=KEY, kid="kt")}


@pytest.fixture
async def client(make_settings: Callable[..., Any]) -> AsyncIterator[httpx.AsyncClient]:
    async def start(app: FastAPI) -> None:
        await start_ledger(app)
        app.state.token_keys = StaticKeySource(KeySet({"kt": KEY.public_key()}))

    app = create_service_app(
        settings=make_settings(AuditSettings, public_url=ISSUER),
        title="audit under test",
        migrations_dir=Path(services.audit.__file__).parent / "migrations",
        routers=[router],
        on_startup=start,
        on_shutdown=stop_ledger,
        token_audience="/audit",
    )
    async with serve_asgi(app) as http:
        yield http


def _body(*records: Any) -> dict[str, Any]:
    return {"entries": [r.model_dump(mode="json") for r in records]}


async def test_a_platform_service_appends_and_gets_durable_receipts(
    client: httpx.AsyncClient,
) -> None:
    first, second = record(), record(citizen="cz_other")
    response = await client.post(
        "/audit/entries",
        json=_body(first, second),
        headers=token(sub="svc_health", scope="audit.append"),
    )
    assert response.status_code == 201
    receipts = response.json()["receipts"]
    assert [r["seq"] for r in receipts] == [0, 1]
    assert all(len(r["leaf_hash"]) == 64 for r in receipts)
    again = await client.post(
        "/audit/entries", json=_body(first), headers=token(sub="svc_health", scope="audit.append")
    )
    assert again.json()["receipts"][0] | {"duplicate": True} == again.json()["receipts"][0]
    assert again.json()["receipts"][0]["seq"] == 0


async def test_submissions_from_outside_the_platform_are_refused(
    client: httpx.AsyncClient,
) -> None:
    anonymous = await client.post("/audit/entries", json=_body(record()))
    citizen = await client.post(
        "/audit/entries", json=_body(record()), headers=token(sub="cz_demo", scope="audit.self")
    )
    assert anonymous.status_code == 401
    assert citizen.status_code == 403
    assert "audit.append" in citizen.json()["detail"]


async def test_malformed_entries_are_refused_whole(client: httpx.AsyncClient) -> None:
    good = record().model_dump(mode="json")
    bad = {**good, "entry_id": "short", "level": 7}
    response = await client.post(
        "/audit/entries",
        json={"entries": [good, bad]},
        headers=token(sub="svc_health", scope="audit.append"),
    )
    assert response.status_code == 422
    assert "entries.1" in response.json()["detail"]
    log = await client.get(
        "/audit/me", headers=token(sub="cz_demo", scope="audit.self", client_id="app")
    )
    assert log.json() == []  # nothing of the refused submission was stored


async def test_a_citizen_reads_who_accessed_their_data_and_nothing_else(
    client: httpx.AsyncClient,
) -> None:
    mine, theirs = record(citizen="cz_demo"), record(citizen="cz_other")
    await client.post(
        "/audit/entries",
        json=_body(mine, theirs),
        headers=token(sub="svc_health", scope="audit.append"),
    )
    log = await client.get(
        "/audit/me", headers=token(sub="cz_demo", scope="audit.self", client_id="app")
    )
    assert log.status_code == 200
    [entry] = log.json()
    assert entry["record"]["entry_id"] == mine.entry_id
    assert entry["record"]["agent"] == {
        "who": "hosp_1",
        "role": "clinician",
        "acting_via": "term_1",
    }
    # Only auditors read any entry by position.
    assert (
        await client.get("/audit/entries/1", headers=token(sub="cz_demo", scope="audit.self"))
    ).status_code == 403
    assert (
        await client.get("/audit/entries/1", headers=token(sub="adm_auditor", scope="audit.read"))
    ).json()["record"]["citizen"] == "cz_other"


async def test_the_ledger_itself_enforces_the_protection_levels(client: httpx.AsyncClient) -> None:
    # Defence in depth: even a request that reached the ledger without the gateway is held to
    # the graded-protection table. A one-factor token reads the level-2 access log but cannot
    # append level-3 audit data.
    one_factor = token(sub="cz_demo", scope="audit.self audit.append", acr="1")
    assert (await client.get("/audit/me", headers=one_factor)).status_code == 200
    refused = await client.post("/audit/entries", json=_body(record()), headers=one_factor)
    assert refused.status_code == 403
    assert "level-3" in refused.json()["detail"]
