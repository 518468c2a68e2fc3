"""Token exchange (RFC 8693) on the token endpoint: narrower audience and scope, with ``act``.

(The grant lives in ``identity/tokens``; these tests sit with the app sessions whose tokens
they exchange.)
"""

from __future__ import annotations

import secrets
from typing import Any

from identity.clients.models import ClientKind
from identity.simulators.terminal import TapResult, app_login, tap
from services.kit.credentials import ASSERTION_TYPE, ClientCredentials
from services.kit.tokens import unverified_claims
from tests.identity.terminals.conftest import ISSUER, PIN, Taps

TOKEN = "/identity/oauth2/token"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"


async def _hospital(taps: Taps) -> ClientCredentials:
    return await taps.identity.add_client(
        kind=ClientKind.HOSPITAL, scopes=["system/Patient.rs"], facility="Provincial Hospital"
    )


async def _desk_token(taps: Taps) -> TapResult:
    desk = await taps.terminal("hospital_counter", facility="Provincial Hospital")
    return await tap(taps.http, terminal=desk, card=await taps.card(), pin=PIN)


async def _exchange(
    taps: Taps, client: ClientCredentials, subject_token: str, **params: str
) -> Any:
    form = {
        "grant_type": EXCHANGE,
        "subject_token": subject_token,
        "subject_token_type": ACCESS_TOKEN,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client.assertion(),
        **params,
    }
    return await taps.http.post(TOKEN, data={k: v for k, v in form.items() if v})


async def test_exchange_narrows_audience_and_scope_and_names_the_actor(taps: Taps) -> None:
    hospital = await _hospital(taps)
    subject = await _desk_token(taps)
    before = subject.claims
    response = await _exchange(
        taps,
        hospital,
        subject.access_token,
        audience=ISSUER + "/insurance",
        scope="patient/Coverage.rs",
    )
    assert response.status_code == 200
    body = response.json()
    assert body["issued_token_type"] == ACCESS_TOKEN
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "patient/Coverage.rs"

    claims = (await (await taps.verifier("/insurance")).verify(body["access_token"])).claims
    assert claims["aud"] == [ISSUER + "/insurance"]
    assert claims["scope"] == "patient/Coverage.rs"
    for same in ("sub", "acr", "amr", "card"):
        assert claims[same] == before[same]
    assert claims["client_id"] == hospital.client_id
    # RFC 8693 section 4.1: the exchanging client acts now; the terminal acted before it.
    assert claims["act"] == {"sub": hospital.client_id, "act": before["act"]}
    assert claims["exp"] <= before["exp"]
    assert claims["jti"] != before["jti"]


async def test_smart_wildcards_narrow_to_a_resource(taps: Taps) -> None:
    hospital = await _hospital(taps)
    desk = await taps.terminal("registration_desk")
    subject = await tap(taps.http, terminal=desk, card=await taps.card())
    response = await _exchange(taps, hospital, subject.access_token, scope="patient/Observation.r")
    assert response.status_code == 200
    claims = unverified_claims(response.json()["access_token"])
    assert claims["scope"] == "patient/Observation.r"
    assert claims["aud"] == subject.claims["aud"]


async def test_exchange_never_widens(taps: Taps) -> None:
    hospital = await _hospital(taps)
    subject = await _desk_token(taps)
    wider_scope = await _exchange(
        taps, hospital, subject.access_token, scope="patient/Coverage.rs patient/Coverage.cruds"
    )
    assert wider_scope.status_code == 400
    assert wider_scope.json()["error"] == "invalid_scope"
    assert "patient/Coverage.cruds" in wider_scope.json()["detail"]
    other_scope = await _exchange(taps, hospital, subject.access_token, scope="benefits.read")
    assert other_scope.json()["error"] == "invalid_scope"
    other_audience = await _exchange(
        taps, hospital, subject.access_token, audience=ISSUER + "/audit"
    )
    assert other_audience.status_code == 400
    assert other_audience.json()["error"] == "invalid_target"


async def test_exchange_needs_an_authenticated_client_and_a_live_subject_token(
    taps: Taps,
) -> None:
    hospital = await _hospital(taps)
    subject = await _desk_token(taps)
    anonymous = await taps.http.post(
        TOKEN,
        data={
            "grant_type": EXCHANGE,
            "subject_token": subject.access_token,
            "subject_token_type": ACCESS_TOKEN,
        },
    )
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "invalid_client"
    no_type = await _exchange(taps, hospital, subject.access_token, subject_token_type="")
    assert no_type.json()["error"] == "invalid_request"
    garbage = await _exchange(taps, hospital, "not.a.token")
    assert garbage.status_code == 400
    assert garbage.json()["error"] == "invalid_request"
    actor = await _exchange(taps, hospital, subject.access_token, actor_token="x")
    assert actor.json()["error"] == "invalid_request"


async def test_an_exchanged_token_dies_with_its_session(taps: Taps) -> None:
    hospital = await _hospital(taps)
    card = await taps.card()
    tokens = await app_login(
        taps.http, installation_id=secrets.token_urlsafe(24), card=card, pin=None
    )
    exchanged = await _exchange(
        taps, hospital, tokens["access_token"], audience=ISSUER + "/identity", scope="card.self"
    )
    assert exchanged.status_code == 200
    narrow = exchanged.json()["access_token"]
    claims = unverified_claims(narrow)
    assert claims["sid"] == unverified_claims(tokens["access_token"])["sid"]
    assert claims["act"]["act"]["sub"].startswith("app:")
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    ended = await taps.http.post("/identity/app/sessions/current/end", headers=headers)
    assert ended.status_code == 204
    refused = await taps.http.post(
        "/identity/ecard/qr", headers={"Authorization": f"Bearer {narrow}"}
    )
    assert refused.status_code == 401
    assert refused.json()["detail"] == "session ended"
    # And an ended session's token cannot be exchanged any more.
    again = await _exchange(taps, hospital, tokens["access_token"])
    assert again.json()["error"] == "invalid_request"
    assert "session ended" in again.json()["detail"]
