"""The token server as a hospital system, a terminal and a resource server see it."""

from __future__ import annotations

import time

from identity.clients.models import ClientKind
from services.kit.credentials import ASSERTION_TYPE, ClientCredentials
from services.kit.tokens import KeySet, StaticKeySource, TokenVerifier
from tests.identity.conftest import IdentityService


async def _verify(identity: IdentityService, token: str, audience: str = "/fhir") -> dict:  # type: ignore[type-arg]
    jwks = (await identity.http.get("/.well-known/jwks.json")).json()
    verifier = TokenVerifier(
        issuer="http://testserver",
        audience="http://testserver" + audience,
        keys=StaticKeySource(KeySet.from_jwks(jwks)),
    )
    return (await verifier.verify(token)).claims


async def test_discovery_and_jwks_publish_the_current_and_next_keys(
    identity_service: IdentityService,
) -> None:
    config = (await identity_service.http.get("/.well-known/openid-configuration")).json()
    assert config["issuer"] == "http://testserver"
    assert config["token_endpoint"] == "http://testserver/identity/oauth2/token"
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt", "none"]
    jwks = (await identity_service.http.get("/.well-known/jwks.json")).json()
    assert len(jwks["keys"]) == 2
    assert {k["alg"] for k in jwks["keys"]} == {"ES256"}
    assert all("d" not in k for k in jwks["keys"])


async def test_a_hospital_gets_a_system_token_with_private_key_jwt(
    identity_service: IdentityService,
) -> None:
    hospital = await identity_service.add_client(
        kind=ClientKind.HOSPITAL, scopes=["system/Observation.cruds", "system/Patient.rs"]
    )
    response = await identity_service.http.post(
        "/identity/oauth2/token", data=hospital.token_form("system/Observation.rs")
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "system/Observation.rs"
    assert 0 < body["expires_in"] <= 300
    claims = await _verify(identity_service, body["access_token"])
    assert claims["sub"] == hospital.client_id
    assert claims["client_id"] == hospital.client_id
    assert claims["acr"] == "3"
    assert claims["exp"] - claims["iat"] <= 300


async def test_without_a_scope_the_client_gets_all_it_is_allowed(
    identity_service: IdentityService,
) -> None:
    hospital = await identity_service.add_client(
        kind=ClientKind.HOSPITAL, scopes=["system/Patient.rs", "system/Claim.c"]
    )
    body = (
        await identity_service.http.post("/identity/oauth2/token", data=hospital.token_form())
    ).json()
    assert set(body["scope"].split()) == {"system/Patient.rs", "system/Claim.c"}


async def test_a_scope_beyond_the_registration_is_refused_by_name(
    identity_service: IdentityService,
) -> None:
    hospital = await identity_service.add_client(
        kind=ClientKind.HOSPITAL, scopes=["system/Patient.rs"]
    )
    response = await identity_service.http.post(
        "/identity/oauth2/token", data=hospital.token_form("system/Patient.rs system/Claim.c")
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
    assert "system/Claim.c" in response.json()["detail"]


async def test_a_replayed_client_assertion_is_refused(identity_service: IdentityService) -> None:
    hospital = await identity_service.add_client(
        kind=ClientKind.HOSPITAL, scopes=["system/Patient.rs"]
    )
    form = hospital.token_form()
    first = await identity_service.http.post("/identity/oauth2/token", data=form)
    again = await identity_service.http.post("/identity/oauth2/token", data=form)
    assert first.status_code == 200
    assert again.status_code == 401
    assert again.json()["error"] == "invalid_client"
    assert "jti already used" in again.json()["detail"]


async def test_an_assertion_living_longer_than_five_minutes_is_refused(
    identity_service: IdentityService,
) -> None:
    hospital = await identity_service.add_client(
        kind=ClientKind.HOSPITAL, scopes=["system/Patient.rs"]
    )
    form = hospital.token_form()
    form["client_assertion"] = hospital.assertion(lifetime=3600)
    response = await identity_service.http.post("/identity/oauth2/token", data=form)
    assert response.status_code == 401
    assert "more than 300 s ahead" in response.json()["detail"]


async def test_an_assertion_signed_by_another_key_is_refused(
    identity_service: IdentityService,
) -> None:
    hospital = await identity_service.add_client(
        kind=ClientKind.HOSPITAL, scopes=["system/Patient.rs"]
    )
    impostor = ClientCredentials.generate(
        client_id=hospital.client_id, base_url="http://testserver"
    )
    impostor.kid = hospital.kid
    response = await identity_service.http.post(
        "/identity/oauth2/token", data=impostor.token_form()
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


async def test_an_assertion_for_another_audience_is_refused(
    identity_service: IdentityService,
) -> None:
    hospital = await identity_service.add_client(
        kind=ClientKind.HOSPITAL, scopes=["system/Patient.rs"]
    )
    form = hospital.token_form()
    form["client_assertion"] = hospital.assertion(audience="https://elsewhere.example/token")
    response = await identity_service.http.post("/identity/oauth2/token", data=form)
    assert response.status_code == 401


async def test_unknown_clients_and_grant_types_get_oauth_errors(
    identity_service: IdentityService,
) -> None:
    stranger = ClientCredentials.generate(client_id="hosp_nobody", base_url="http://testserver")
    unknown = await identity_service.http.post("/identity/oauth2/token", data=stranger.token_form())
    assert unknown.status_code == 401
    assert unknown.headers["content-type"] == "application/problem+json"
    password = await identity_service.http.post(
        "/identity/oauth2/token", data={"grant_type": "password", "username": "x"}
    )
    assert password.status_code == 400
    assert password.json()["error"] == "unsupported_grant_type"
    as_json = await identity_service.http.post(
        "/identity/oauth2/token", json={"grant_type": "client_credentials"}
    )
    assert as_json.status_code == 400
    assert as_json.json()["error"] == "invalid_request"
    no_assertion = await identity_service.http.post(
        "/identity/oauth2/token",
        data={"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE},
    )
    assert no_assertion.status_code == 401


async def test_introspection_and_revocation(identity_service: IdentityService) -> None:
    hospital = await identity_service.add_client(
        kind=ClientKind.HOSPITAL, scopes=["system/Patient.rs"]
    )
    token = await hospital.fetch_token(identity_service.http)
    form = {"token": token, "client_assertion_type": ASSERTION_TYPE}

    active = await identity_service.http.post(
        "/identity/oauth2/introspect",
        data={
            **form,
            "client_assertion": hospital.assertion(
                audience="http://testserver/identity/oauth2/token"
            ),
        },
    )
    assert active.json()["active"] is True
    assert active.json()["client_id"] == hospital.client_id

    revoked = await identity_service.http.post(
        "/identity/oauth2/revoke", data={**form, "client_assertion": hospital.assertion()}
    )
    assert revoked.status_code == 200

    after = await identity_service.http.post(
        "/identity/oauth2/introspect", data={**form, "client_assertion": hospital.assertion()}
    )
    assert after.json() == {"active": False}
    # And the identity service's own routes refuse it on the next request.
    refused = await identity_service.http.get(
        "/identity/clients/" + hospital.client_id, headers={"Authorization": f"Bearer {token}"}
    )
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]


async def test_registering_clients_needs_the_client_manage_scope(
    identity_service: IdentityService,
) -> None:
    new = ClientCredentials.generate(client_id="x", base_url="http://testserver")
    body = {
        "name": "Provincial People's Hospital",
        "kind": "hospital",
        "jwk": new.jwk,
        "scopes": ["system/Observation.cruds"],
    }
    anonymous = await identity_service.http.post("/identity/clients", json=body)
    assert anonymous.status_code == 401
    wrong = await identity_service.http.post(
        "/identity/clients", json=body, headers=await identity_service.auth("citizen.manage")
    )
    assert wrong.status_code == 403
    created = await identity_service.http.post(
        "/identity/clients", json=body, headers=await identity_service.auth("client.manage")
    )
    assert created.status_code == 201
    assert created.json()["kind"] == "hospital"
    assert created.headers["location"] == "/identity/clients/" + created.json()["client_id"]


async def test_a_private_jwk_is_refused_at_registration(identity_service: IdentityService) -> None:
    new = ClientCredentials.generate(client_id="x", base_url="http://testserver")
    jwk = {**new.jwk, "d": "AAAA"}
    response = await identity_service.http.post(
        "/identity/clients",
        json={"name": "h", "kind": "hospital", "jwk": jwk, "scopes": ["system/Patient.rs"]},
        headers=await identity_service.auth("client.manage"),
    )
    assert response.status_code == 422


async def test_tokens_expire_within_five_minutes(identity_service: IdentityService) -> None:
    token = await identity_service.token("client.manage")
    claims = await _verify(identity_service, token, "/identity")
    assert claims["exp"] <= time.time() + 300
