"""The security administrator sets the graded-protection policy; nobody else can."""

from __future__ import annotations

import httpx
import pytest

from tests.services.audit.conftest import LedgerApp
from tests.services.audit.test_routes import token


@pytest.fixture
def client(ledger_app: LedgerApp) -> httpx.AsyncClient:
    return ledger_app.http


CHANGE = {
    "policy": {"fhir_types": {"Observation": 4}},
    "based_on": 0,
    "reason": "lab results are sensitive in this province",
}


def admin(scope: str = "policy.manage") -> dict[str, str]:
    return token(sub="adm_security", scope=scope, client_id="adm_security", acr="3")


async def test_the_policy_in_force_is_public_and_starts_at_the_defaults(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/audit/policy")
    assert response.status_code == 200
    assert response.json() == {
        "version": 0,
        "set_at": None,
        "policy": {"rules": [], "fhir_types": {}, "labels": {}},
    }


async def test_the_security_administrator_sets_it_and_the_change_is_in_the_ledger(
    client: httpx.AsyncClient,
) -> None:
    response = await client.put("/audit/policy", json=CHANGE, headers=admin())
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 1
    assert (await client.get("/audit/policy")).json()["policy"]["fhir_types"] == {"Observation": 4}
    entry = (
        await client.get(
            "/audit/entries/0", headers=token(sub="adm_audit", scope="audit.read", acr="3")
        )
    ).json()
    assert entry["record"]["entity_type"] == "ProtectionPolicy"
    assert entry["record"]["agent"]["who"] == "adm_security"
    assert entry["record"]["outcome_detail"] == CHANGE["reason"]


async def test_nobody_else_can_change_it(client: httpx.AsyncClient) -> None:
    for scope in ("audit.read", "audit.append", "client.manage card.manage", "system/*.cruds"):
        response = await client.put("/audit/policy", json=CHANGE, headers=admin(scope))
        assert response.status_code == 403, scope
        assert "lacks scope policy.manage" in response.json()["detail"]
    assert (await client.get("/audit/policy")).json()["version"] == 0


async def test_two_administrators_cannot_overwrite_each_other(client: httpx.AsyncClient) -> None:
    assert (await client.put("/audit/policy", json=CHANGE, headers=admin())).status_code == 200
    stale = await client.put("/audit/policy", json=CHANGE, headers=admin())
    assert stale.status_code == 409
    assert "version 1, not 0" in stale.json()["detail"]


async def test_a_malformed_policy_is_refused_and_nothing_changes(
    client: httpx.AsyncClient,
) -> None:
    for policy in (
        {"fhir_types": {"Observation": 7}},
        {"rules": [{"prefix": "fhir/../x", "level": 2}]},
        {"labels": {"not a label|": 4}},
        {"unknown": 1},
    ):
        body = {**CHANGE, "policy": policy}
        response = await client.put("/audit/policy", json=body, headers=admin())
        assert response.status_code == 422, policy
    assert (await client.get("/audit/policy")).json()["version"] == 0
