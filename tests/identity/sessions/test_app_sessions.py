"""The citizen's app: card login over NFC, refresh-token rotation, reuse detection, logout."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from identity.simulators.card import VirtualCard
from identity.simulators.terminal import app_login, card_answer
from services.kit.tokens import unverified_claims
from tests.identity.terminals.conftest import ISSUER, PIN, Taps

TOKEN = "/identity/oauth2/token"


def installation() -> str:
    return secrets.token_urlsafe(24)


async def _refresh(taps: Taps, refresh_token: str, **extra: str) -> Any:
    return await taps.http.post(
        TOKEN, data={"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}
    )


async def _session_row(taps: Taps, sid: str) -> dict[str, Any]:
    (row,) = await taps.rows("SELECT * FROM sessions WHERE sid = :sid", sid=sid)
    return row


async def _qr(taps: Taps, access_token: str) -> Any:
    """An identity route that needs the app's token (scope card.self)."""
    return await taps.http.post(
        "/identity/ecard/qr", headers={"Authorization": f"Bearer {access_token}"}
    )


async def _login(taps: Taps, card: VirtualCard, install: str, pin: str | None = PIN) -> Any:
    return await app_login(taps.http, installation_id=install, card=card, pin=pin)


async def test_card_login_gives_a_short_access_token_and_a_refresh_token(taps: Taps) -> None:
    card = await taps.card()
    install = installation()
    tokens = await _login(taps, card, install)

    claims = (await (await taps.verifier("/fhir")).verify(tokens["access_token"])).claims
    assert claims["client_id"] == f"app:{install}"
    assert claims["act"] == {"sub": f"app:{install}", "purpose": "mobile_app"}
    assert claims["acr"] == "2"
    assert claims["amr"] == ["sc", "hwk", "pin"]
    assert claims["card"] == card.serial
    assert claims["sid"]
    assert set(claims["aud"]) == {
        ISSUER + p for p in ("/identity", "/fhir", "/insurance", "/social-security", "/audit")
    }
    assert "card.self" in claims["scope"].split()
    assert 0 < tokens["expires_in"] <= 300
    assert claims["exp"] - claims["iat"] <= 300

    refresh_token = tokens["refresh_token"]
    assert len(refresh_token) == 43  # 256 random bits
    row = await _session_row(taps, claims["sid"])
    # Only the SHA-256 of the refresh token is stored.
    assert row["refresh_token_hash"] == hashlib.sha256(refresh_token.encode()).hexdigest()
    assert refresh_token not in str(row)
    assert row["generation"] == 0
    assert row["ended_at"] is None


async def test_the_app_challenge_is_bound_to_the_installation(taps: Taps) -> None:
    card = await taps.card()
    mine, theirs = installation(), installation()
    challenge = (
        await taps.http.post("/identity/app/challenges", json={"installation_id": mine})
    ).json()
    assert challenge["terminal_id"] == f"app:{mine}"
    answer = card_answer(card, challenge, pin=None)
    response = await taps.http.post(
        "/identity/app/sessions", json={**answer, "installation_id": theirs}
    )
    assert response.status_code == 401
    assert response.json()["code"] == "nonce_foreign"
    bad = await taps.http.post("/identity/app/challenges", json={"installation_id": "short"})
    assert bad.status_code == 422


async def test_refresh_rotates_the_refresh_token(taps: Taps) -> None:
    card = await taps.card()
    tokens = await _login(taps, card, installation(), pin=None)
    sid = unverified_claims(tokens["access_token"])["sid"]

    first = await _refresh(taps, tokens["refresh_token"])
    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-store"
    body = first.json()
    assert body["refresh_token"] != tokens["refresh_token"]
    claims = unverified_claims(body["access_token"])
    assert claims["sid"] == sid
    assert claims["acr"] == "1"  # the assurance of the tap that started the session
    assert claims["amr"] == ["sc", "hwk"]
    assert claims["jti"] != unverified_claims(tokens["access_token"])["jti"]

    second = await _refresh(taps, body["refresh_token"])
    assert second.status_code == 200
    assert (await _session_row(taps, sid))["generation"] == 2


async def test_a_reused_refresh_token_ends_the_whole_session(taps: Taps) -> None:
    card = await taps.card()
    tokens = await _login(taps, card, installation())
    stolen = tokens["refresh_token"]
    rotated = (await _refresh(taps, stolen)).json()
    assert (await _qr(taps, rotated["access_token"])).status_code == 200

    reuse = await _refresh(taps, stolen)
    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    assert "already used" in reuse.json()["detail"]

    row = await _session_row(taps, unverified_claims(rotated["access_token"])["sid"])
    assert row["ended_at"] is not None
    assert row["end_reason"] == "refresh-token-reuse"
    # Every outstanding access token of the session is refused, here and everywhere.
    for access_token in (tokens["access_token"], rotated["access_token"]):
        refused = await _qr(taps, access_token)
        assert refused.status_code == 401
        assert refused.json()["detail"] == "session ended"
    # And the newest refresh token is dead too.
    after = await _refresh(taps, rotated["refresh_token"])
    assert after.status_code == 400
    assert "refresh-token-reuse" in after.json()["detail"]


async def test_logout_ends_the_session(taps: Taps) -> None:
    card = await taps.card()
    tokens = await _login(taps, card, installation(), pin=None)
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    ended = await taps.http.post("/identity/app/sessions/current/end", headers=headers)
    assert ended.status_code == 204
    assert (await _qr(taps, tokens["access_token"])).json()["detail"] == "session ended"
    refresh = await _refresh(taps, tokens["refresh_token"])
    assert refresh.status_code == 400
    assert "logout" in refresh.json()["detail"]
    row = await _session_row(taps, unverified_claims(tokens["access_token"])["sid"])
    assert row["end_reason"] == "logout"


async def test_a_token_without_a_session_cannot_log_out(taps: Taps) -> None:
    headers = await taps.identity.auth("card.manage")
    response = await taps.http.post("/identity/app/sessions/current/end", headers=headers)
    assert response.status_code == 400
    assert "no app session" in response.json()["detail"]


async def test_the_refresh_grant_is_for_a_public_client_and_its_own_tokens(taps: Taps) -> None:
    card = await taps.card()
    install = installation()
    tokens = await _login(taps, card, install, pin=None)
    unknown = await _refresh(taps, secrets.token_urlsafe(32))
    assert unknown.status_code == 400
    assert unknown.json()["detail"] == "unknown refresh token"
    malformed = await _refresh(taps, "x")
    assert malformed.json()["error"] == "invalid_grant"
    with_assertion = await _refresh(taps, tokens["refresh_token"], client_assertion="abc")
    assert with_assertion.status_code == 400
    assert with_assertion.json()["error"] == "invalid_request"
    other_client = await _refresh(taps, tokens["refresh_token"], client_id="app:someone-else")
    assert other_client.json()["error"] == "invalid_grant"
    # None of the refused requests used the token up.
    own = await _refresh(taps, tokens["refresh_token"], client_id=f"app:{install}")
    assert own.status_code == 200


async def test_refresh_may_narrow_the_scope_but_not_widen_it(taps: Taps) -> None:
    card = await taps.card()
    tokens = await _login(taps, card, installation(), pin=None)
    narrow = await _refresh(taps, tokens["refresh_token"], scope="card.self")
    assert narrow.status_code == 200
    assert unverified_claims(narrow.json()["access_token"])["scope"] == "card.self"
    wide = await _refresh(taps, narrow.json()["refresh_token"], scope="system/*.cruds")
    assert wide.status_code == 400
    assert wide.json()["error"] == "invalid_scope"


async def test_a_suspended_card_ends_the_session_at_its_next_refresh(taps: Taps) -> None:
    card = await taps.card()
    tokens = await _login(taps, card, installation(), pin=None)
    await taps.set_status(card, "suspended")
    # Its access tokens are refused at once (the card claim) ...
    assert "suspended" in (await _qr(taps, tokens["access_token"])).json()["detail"]
    # ... and the session ends instead of refreshing.
    refused = await _refresh(taps, tokens["refresh_token"])
    assert refused.status_code == 400
    assert "suspended" in refused.json()["detail"]
    row = await _session_row(taps, unverified_claims(tokens["access_token"])["sid"])
    assert row["end_reason"] == "card_suspended"
    await taps.set_status(card, "good")
    assert (await _refresh(taps, tokens["refresh_token"])).status_code == 400


async def test_discovery_lists_the_new_grants(taps: Taps) -> None:
    config = (await taps.http.get("/.well-known/openid-configuration")).json()
    assert config["grant_types_supported"] == [
        "client_credentials",
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:token-exchange",
    ]
