"""The dynamic QR e-card: issued to the app, checked offline with the JWKS, redeemed once."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from identity.simulators.card import VirtualCard
from identity.simulators.terminal import FlowError, VirtualTerminal, app_login
from services.kit.tokens import KeySet, StaticKeySource, TokenError, TokenVerifier
from tests.identity.terminals.conftest import ISSUER, PIN, Taps

QR_TYPE = "onecard-qr+jwt"


async def _app_token(taps: Taps, card: VirtualCard) -> str:
    tokens = await app_login(
        taps.http, installation_id=secrets.token_urlsafe(24), card=card, pin=PIN
    )
    token: str = tokens["access_token"]
    return token


async def _new_qr(taps: Taps, app_token: str) -> Any:
    return await taps.http.post(
        "/identity/ecard/qr", headers={"Authorization": f"Bearer {app_token}"}
    )


async def _qr(taps: Taps, card: VirtualCard) -> str:
    response = await _new_qr(taps, await _app_token(taps, card))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["expires_in"] == 60
    qr: str = response.json()["qr"]
    return qr


async def _redeem(taps: Taps, terminal: VirtualTerminal, qr: str) -> Any:
    token = await terminal.access_token(taps.http)
    return await taps.http.post(
        "/identity/terminal/qr-redemptions",
        json={"qr": qr},
        headers={"Authorization": f"Bearer {token}"},
    )


async def test_the_qr_payload_verifies_offline_with_the_published_keys(taps: Taps) -> None:
    card = await taps.card()
    qr = await _qr(taps, card)
    jwks = (await taps.http.get("/.well-known/jwks.json")).json()
    # A verifier holding only the JWKS: no call to the platform.
    offline = TokenVerifier(
        issuer=ISSUER, audience=ISSUER, keys=StaticKeySource(KeySet.from_jwks(jwks))
    )
    claims = await offline.verify_claims(
        qr, typ=QR_TYPE, max_lifetime=60, require=("iss", "sub", "aud", "exp", "iat", "jti")
    )
    assert claims["card"] == card.serial
    assert claims["sub"].startswith("cz_")
    assert claims["aud"] == ISSUER
    assert 0 < claims["exp"] - claims["iat"] <= 60
    # Its own type: it never passes as an access token (nor an access token as a QR code).
    with pytest.raises(TokenError, match="typ"):
        await offline.verify(qr)


async def test_a_terminal_redeems_the_qr_once_for_a_one_factor_holder_token(taps: Taps) -> None:
    pharmacy = await taps.terminal("pharmacy", facility="Central Pharmacy")
    card = await taps.card()
    qr = await _qr(taps, card)
    result = await pharmacy.redeem_qr(taps.http, qr)
    claims = (await (await taps.verifier("/insurance")).verify(result.access_token)).claims
    assert claims["acr"] == "1"
    assert claims["amr"] == ["qr"]
    assert claims["card"] == card.serial
    assert claims["client_id"] == pharmacy.terminal_id
    assert claims["act"] == {
        "sub": pharmacy.terminal_id,
        "facility": "Central Pharmacy",
        "purpose": "pharmacy",
    }
    assert set(claims["scope"].split()) == {"patient/Coverage.rs", "insurance.settle"}

    replay = await _redeem(taps, pharmacy, qr)
    assert replay.status_code == 401
    assert replay.json()["code"] == "qr_replayed"
    elsewhere = await _redeem(taps, await taps.terminal("pharmacy"), qr)
    assert elsewhere.json()["code"] == "qr_replayed"


async def test_an_expired_qr_is_refused(taps: Taps) -> None:
    pharmacy = await taps.terminal("pharmacy")
    qr = await _qr(taps, await taps.card())
    taps.clock.advance(60 + 10 + 1)  # lifetime plus the verifier's clock leeway
    response = await _redeem(taps, pharmacy, qr)
    assert response.status_code == 401
    assert response.json()["code"] == "qr_invalid"
    assert "expired" in response.json()["detail"]


async def test_forged_or_foreign_payloads_are_refused(taps: Taps) -> None:
    pharmacy = await taps.terminal("pharmacy")
    card = await taps.card()
    qr = await _qr(taps, card)
    header, payload, signature = qr.split(".")
    tampered = (
        f"{header}.{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{signature}"
    )
    app_token = await _app_token(taps, card)
    for forged in (tampered, app_token, "not-a-qr"):
        response = await _redeem(taps, pharmacy, forged)
        assert response.status_code == 401, forged
        assert response.json()["code"] == "qr_invalid"
    # The genuine one was not used up by any of that.
    assert (await _redeem(taps, pharmacy, qr)).status_code == 200


async def test_a_qr_of_a_card_suspended_since_is_refused(taps: Taps) -> None:
    pharmacy = await taps.terminal("pharmacy")
    card = await taps.card()
    qr = await _qr(taps, card)
    await taps.set_status(card, "suspended")
    response = await _redeem(taps, pharmacy, qr)
    assert response.status_code == 403
    assert response.json()["code"] == "card_suspended"


async def test_no_qr_for_a_card_that_is_not_active(taps: Taps) -> None:
    card = await taps.card()
    app_token = await _app_token(taps, card)
    # The PKI (the truth) says revoked before Redis has heard of it: still refused.
    await taps.set_status(card, "revoked", in_redis=False)
    refused = await _new_qr(taps, app_token)
    assert refused.status_code == 403
    assert refused.json()["code"] == "card_revoked"
    # Once Redis knows, the app's token itself is refused everywhere.
    await taps.revocations.set_card_status(card.serial, "revoked")
    assert (await _new_qr(taps, app_token)).status_code == 401


async def test_a_token_without_a_card_gets_no_qr(taps: Taps) -> None:
    response = await _new_qr(taps, await taps.identity.token("card.self"))
    assert response.status_code == 403
    assert response.json()["code"] == "no_card"


async def test_the_qr_card_must_be_enabled_for_the_terminals_purpose(taps: Taps) -> None:
    library = await taps.terminal("library", facility="Provincial Library")
    card = await taps.card(applications=frozenset({"health", "transit"}))
    with pytest.raises(FlowError) as refused:
        await library.redeem_qr(taps.http, await _qr(taps, card))
    assert refused.value.status == 403
    assert refused.value.code == "application_not_enabled"
