"""A card tapped at a terminal: the challenge-response, every refusal, the lock (both backends)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization

from identity.clients.models import ClientKind
from identity.pki.certificates import PublicUrls, build_card_certificate, load_csr
from identity.simulators.card import VirtualCard
from identity.simulators.terminal import VirtualTerminal, card_answer, tap
from services.kit.tokens import TokenError
from tests.identity.pki.conftest import make_authority
from tests.identity.terminals.conftest import ISSUER, PIN, Taps


async def test_card_and_pin_give_acr_2_for_the_holder_with_the_terminal_acting(
    taps: Taps,
) -> None:
    desk = await taps.terminal("registration_desk", facility="Provincial People's Hospital")
    card = await taps.card()
    result = await tap(taps.http, terminal=desk, card=card, pin=PIN)

    claims = (await (await taps.verifier("/fhir")).verify(result.access_token)).claims
    certificate = card.certificate
    assert certificate is not None
    pseudonym = certificate.subject.rfc4514_string().split("CN=")[1].split(",")[0]
    assert claims["sub"] == pseudonym
    assert claims["client_id"] == desk.terminal_id
    assert claims["act"] == {
        "sub": desk.terminal_id,
        "facility": "Provincial People's Hospital",
        "purpose": "registration_desk",
    }
    assert claims["card"] == card.serial
    assert claims["acr"] == "2"
    assert claims["amr"] == ["sc", "hwk", "pin"]
    assert claims["scope"] == "patient/*.rs presence.health"
    assert claims["aud"] == [ISSUER + "/fhir"]
    assert claims["iss"] == ISSUER
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert result.response["token_type"] == "Bearer"


async def test_card_alone_gives_acr_1(taps: Taps) -> None:
    pharmacy = await taps.terminal("pharmacy", facility="Central Pharmacy")
    card = await taps.card()
    result = await tap(taps.http, terminal=pharmacy, card=card)
    claims = result.claims
    assert claims["acr"] == "1"
    assert claims["amr"] == ["sc", "hwk"]
    assert claims["aud"] == [ISSUER + "/insurance"]
    assert set(claims["scope"].split()) == {"patient/Coverage.rs", "insurance.settle"}
    # A resource server for another audience refuses it.
    with pytest.raises(TokenError, match="audience"):
        await (await taps.verifier("/fhir")).verify(result.access_token)


async def test_the_challenge_is_a_fresh_256_bit_nonce_bound_to_the_terminal(taps: Taps) -> None:
    desk = await taps.terminal()
    first = await desk.challenge(taps.http)
    second = await desk.challenge(taps.http)
    assert first["nonce"] != second["nonce"]
    assert len(base64.urlsafe_b64decode(first["nonce"] + "=")) == 32
    assert first["expires_in"] == 120
    assert first["domain"] == ISSUER
    assert first["terminal_id"] == desk.terminal_id


async def test_a_replayed_nonce_is_refused(taps: Taps) -> None:
    desk = await taps.terminal()
    card = await taps.card()
    answer = await taps.answer(desk, card)
    assert (await taps.post_answer(desk, answer)).status_code == 200
    again = await taps.post_answer(desk, answer)
    assert again.status_code == 401
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["code"] == "nonce_unknown"
    assert "already used" in again.json()["detail"]


async def test_a_nonce_used_from_another_terminal_is_refused_and_burnt(taps: Taps) -> None:
    desk, other = await taps.terminal(), await taps.terminal()
    card = await taps.card()
    answer = await taps.answer(desk, card)  # the card signed for the desk's challenge
    stolen = await taps.post_answer(other, answer)
    assert stolen.status_code == 401
    assert stolen.json()["code"] == "nonce_foreign"
    assert stolen.json()["detail"] == "the nonce was issued to another terminal"
    # A nonce seen at the wrong terminal is dead for the right one too.
    late = await taps.post_answer(desk, answer)
    assert late.json()["code"] == "nonce_unknown"


async def test_a_nonce_signed_for_another_terminal_id_does_not_verify(taps: Taps) -> None:
    desk, other = await taps.terminal(), await taps.terminal()
    card = await taps.card()
    challenge = await desk.challenge(taps.http)
    # A relaying terminal makes the card sign for itself, then posts the desk's nonce.
    answer = card_answer(card, {**challenge, "terminal_id": other.terminal_id}, pin=None)
    response = await taps.post_answer(desk, answer)
    assert response.status_code == 401
    assert response.json()["code"] == "signature_invalid"


async def test_an_expired_nonce_is_refused(taps: Taps) -> None:
    desk = await taps.terminal()
    card = await taps.card()
    answer = await taps.answer(desk, card)
    key = taps.authenticator.store.redis.key("tap-nonce", answer["nonce"])
    assert 120 < await taps.authenticator.store.redis.client.ttl(key) <= 150
    taps.clock.advance(121)
    response = await taps.post_answer(desk, answer)
    assert response.status_code == 401
    assert response.json()["code"] == "nonce_expired"


async def test_a_card_not_enabled_for_the_terminals_purpose_is_refused(taps: Taps) -> None:
    desk, bus = await taps.terminal("registration_desk"), await taps.terminal("bus")
    card = await taps.card(applications=frozenset({"transit", "library"}))
    response = await taps.post_answer(desk, await taps.answer(desk, card))
    assert response.status_code == 403
    assert response.json()["code"] == "application_not_enabled"
    assert "health" in response.json()["detail"]
    # The same card rides the bus.
    ride = await tap(taps.http, terminal=bus, card=card)
    assert ride.claims["scope"] == "transit.ride"


@pytest.mark.parametrize("status", ["suspended", "revoked"])
async def test_a_suspended_or_revoked_card_is_refused(taps: Taps, status: str) -> None:
    desk = await taps.terminal()
    card = await taps.card()
    await taps.set_status(card, status)
    response = await taps.post_answer(desk, await taps.answer(desk, card))
    assert response.status_code == 403
    assert response.json()["code"] == f"card_{status}"


@pytest.mark.parametrize(("in_pki", "in_redis"), [(True, False), (False, True)])
async def test_either_the_pki_truth_or_the_shared_status_refuses_a_card(
    taps: Taps, in_pki: bool, in_redis: bool
) -> None:
    desk = await taps.terminal()
    card = await taps.card()
    await taps.set_status(card, "suspended", in_pki=in_pki, in_redis=in_redis)
    response = await taps.post_answer(desk, await taps.answer(desk, card))
    assert response.status_code == 403
    assert response.json()["code"] == "card_suspended"


async def test_a_resumed_card_works_again(taps: Taps) -> None:
    desk = await taps.terminal()
    card = await taps.card()
    await taps.set_status(card, "suspended")
    await taps.set_status(card, "good")
    assert (await tap(taps.http, terminal=desk, card=card)).claims["card"] == card.serial


async def test_a_terminal_certificate_presented_as_a_card_is_refused(taps: Taps) -> None:
    desk = await taps.terminal()
    info = (
        await taps.http.get(
            f"/identity/terminals/{desk.terminal_id}",
            headers=await taps.identity.auth("terminal.manage"),
        )
    ).json()
    card = await taps.card()
    answer = await taps.answer(desk, card)
    response = await taps.post_answer(desk, {**answer, "certificate": info["certificate"]})
    assert response.status_code == 401
    assert response.json()["code"] == "not_a_card"
    assert response.headers["www-authenticate"].startswith("Card ")


async def test_a_card_certificate_from_another_ca_is_refused(taps: Taps) -> None:
    desk = await taps.terminal()
    card = await taps.card()
    _, foreign_ca = make_authority()
    now = datetime.now(UTC)
    forged = build_card_certificate(
        load_csr(card.csr("cz_forgedholder000000000000")),
        issuer=foreign_ca,
        serial=12345,
        pseudonym="cz_forgedholder000000000000",
        card_serial=card.serial,
        applications=frozenset({"health"}),
        not_after=now + timedelta(days=30),
        now=now,
        urls=PublicUrls("https://elsewhere.example"),
    )
    answer = await taps.answer(desk, card)
    pem = forged.public_bytes(serialization.Encoding.PEM).decode()
    response = await taps.post_answer(desk, {**answer, "certificate": pem})
    assert response.status_code == 401
    assert response.json()["code"] == "chain_invalid"


async def test_base64_der_certificates_are_accepted_and_garbage_is_refused(taps: Taps) -> None:
    desk = await taps.terminal()
    card = await taps.card()
    certificate = card.certificate
    assert certificate is not None
    der = base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()
    answer = await taps.answer(desk, card)
    assert (await taps.post_answer(desk, {**answer, "certificate": der})).status_code == 200
    for garbage in ("not a certificate", base64.b64encode(b"\x30\x03\x02\x01\x01").decode()):
        answer = await taps.answer(desk, card)
        response = await taps.post_answer(desk, {**answer, "certificate": garbage})
        assert response.status_code == 401
        assert response.json()["code"] == "certificate_malformed"


async def test_a_tampered_signature_is_refused(taps: Taps) -> None:
    desk = await taps.terminal()
    card = await taps.card()
    answer = await taps.answer(desk, card)
    raw = bytearray(base64.b64decode(answer["signature"]))
    raw[-1] ^= 0x01  # the last byte of s: still DER, no longer the card's signature
    response = await taps.post_answer(
        desk, {**answer, "signature": base64.b64encode(bytes(raw)).decode()}
    )
    assert response.status_code == 401
    assert response.json()["code"] == "signature_invalid"


async def test_a_signature_for_another_domain_is_refused(taps: Taps) -> None:
    desk = await taps.terminal()
    card = await taps.card()
    challenge = await desk.challenge(taps.http)
    # A phishing site relays our nonce but the card signs for its domain.
    answer = card_answer(card, {**challenge, "domain": "https://onecard.example.evil"}, pin=None)
    response = await taps.post_answer(desk, answer)
    assert response.json()["code"] == "signature_invalid"


@pytest.mark.parametrize("pin", [None, PIN])
async def test_pin_verified_flipped_after_signing_is_refused(taps: Taps, pin: str | None) -> None:
    desk = await taps.terminal()
    card = await taps.card()
    answer = await taps.answer(desk, card, pin=pin)
    assert answer["pin_verified"] is (pin is not None)
    flipped = {**answer, "pin_verified": not answer["pin_verified"]}
    response = await taps.post_answer(desk, flipped)
    assert response.status_code == 401
    assert response.json()["code"] == "signature_invalid"


async def test_pin_verified_must_be_a_real_boolean(taps: Taps) -> None:
    desk = await taps.terminal()
    card = await taps.card()
    answer = await taps.answer(desk, card)
    response = await taps.post_answer(desk, {**answer, "pin_verified": "true"})
    assert response.status_code == 422
    assert "pin_verified" in response.json()["detail"]


async def _fail(taps: Taps, desk: VirtualTerminal, card: VirtualCard) -> dict[str, object]:
    """One failed proof: a tampered signature."""
    answer = await taps.answer(desk, card)
    raw = bytearray(base64.b64decode(answer["signature"]))
    raw[-1] ^= 0x01
    response = await taps.post_answer(
        desk, {**answer, "signature": base64.b64encode(bytes(raw)).decode()}
    )
    assert response.status_code == 401
    body: dict[str, object] = response.json()
    return body


async def test_five_failures_in_15_minutes_lock_the_card_for_30_minutes(taps: Taps) -> None:
    desk = await taps.terminal()
    card, bystander = await taps.card(), await taps.card()
    for attempt in range(1, 6):
        body = await _fail(taps, desk, card)
        assert ("locked for 30 minutes" in str(body["detail"])) is (attempt == 5)
    locked = await taps.post_answer(desk, await taps.answer(desk, card))
    assert locked.status_code == 403
    assert locked.json()["code"] == "card_locked"
    assert 1790 <= int(locked.headers["retry-after"]) <= 1800
    # Other cards are not affected.
    assert (await tap(taps.http, terminal=desk, card=bystander)).claims["card"] == bystander.serial
    taps.clock.advance(29 * 60)
    still = await taps.post_answer(desk, await taps.answer(desk, card))
    assert still.json()["code"] == "card_locked"
    taps.clock.advance(60 + 1)
    assert (await tap(taps.http, terminal=desk, card=card)).claims["card"] == card.serial


async def test_failures_older_than_15_minutes_do_not_count(taps: Taps) -> None:
    desk = await taps.terminal()
    card = await taps.card()
    for _ in range(4):
        await _fail(taps, desk, card)
    taps.clock.advance(15 * 60 + 1)
    body = await _fail(taps, desk, card)
    assert "locked" not in str(body["detail"])
    assert (await tap(taps.http, terminal=desk, card=card)).claims["card"] == card.serial


async def test_a_success_clears_earlier_failures(taps: Taps) -> None:
    desk = await taps.terminal()
    card = await taps.card()
    for _ in range(4):
        await _fail(taps, desk, card)
    await tap(taps.http, terminal=desk, card=card)
    for _ in range(4):
        await _fail(taps, desk, card)
    assert (await tap(taps.http, terminal=desk, card=card)).claims["card"] == card.serial


async def test_replayed_nonces_of_a_genuine_card_count_towards_its_lock(taps: Taps) -> None:
    desk = await taps.terminal()
    card = await taps.card()
    answer = await taps.answer(desk, card)
    assert (await taps.post_answer(desk, answer)).status_code == 200
    for _ in range(5):
        assert (await taps.post_answer(desk, answer)).json()["code"] == "nonce_unknown"
    locked = await taps.post_answer(desk, await taps.answer(desk, card))
    assert locked.json()["code"] == "card_locked"


async def test_only_a_registered_terminal_may_ask_for_a_challenge(taps: Taps) -> None:
    # A hospital system that was (wrongly) allowed the terminal scope is still no terminal.
    hospital = await taps.identity.add_client(kind=ClientKind.HOSPITAL, scopes=["terminal.auth"])
    token = await hospital.fetch_token(taps.http, "terminal.auth")
    response = await taps.http.post(
        "/identity/terminal/challenges", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 403
    assert response.json()["code"] == "not_a_terminal"
    anonymous = await taps.http.post("/identity/terminal/challenges")
    assert anonymous.status_code == 401


async def test_a_holder_token_cannot_act_as_the_terminal(taps: Taps) -> None:
    bus = await taps.terminal("bus")  # its holder tokens are for /identity, this service
    card = await taps.card()
    result = await tap(taps.http, terminal=bus, card=card)
    response = await taps.http.post(
        "/identity/terminal/challenges",
        headers={"Authorization": f"Bearer {result.access_token}"},
    )
    assert response.status_code == 403
    assert "terminal.auth" in response.json()["detail"]


async def test_a_terminal_whose_certificate_is_revoked_is_refused(taps: Taps) -> None:
    desk = await taps.terminal()
    info = (
        await taps.http.get(
            f"/identity/terminals/{desk.terminal_id}",
            headers=await taps.identity.auth("terminal.manage"),
        )
    ).json()
    async with taps.session() as session:
        await taps.pki.set_status(
            session=session, serial=info["certificate_serial"], status="revoked"
        )
    token = await desk.access_token(taps.http)
    response = await taps.http.post(
        "/identity/terminal/challenges", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 403
    assert response.json()["code"] == "terminal_certificate"


async def test_a_holder_token_is_refused_everywhere_once_its_card_is_suspended(
    taps: Taps,
) -> None:
    bus = await taps.terminal("bus")  # bus tokens are for /identity, this service
    card = await taps.card()
    result = await tap(taps.http, terminal=bus, card=card)
    await taps.set_status(card, "suspended")
    introspected = await taps.http.post(
        "/identity/oauth2/introspect",
        data={
            "token": result.access_token,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": bus.credentials.assertion(),
        },
    )
    assert introspected.json() == {"active": False}
