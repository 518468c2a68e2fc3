"""The card lifecycle over HTTP: each step with its certificate status and its Redis status."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from identity.cards.service import serial_is_well_formed
from identity.pki.certificates import card_applications, card_pseudonym, card_serial_of
from tests.identity.cards.conftest import ALL_APPS, Desk, problem


def _csr(
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey,
    common_name: str,
) -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM).decode()


# -- issue -----------------------------------------------------------------------------------


async def test_issuing_certifies_the_key_made_on_the_card_held_until_activation(
    desk: Desk,
) -> None:
    citizen = await desk.citizen()
    card = desk.blank_card()
    response = await desk.issue(citizen, card, apps=["transit", "health", "health"])
    assert response.status_code == 201, response.text
    body = response.json()
    serial = body["serial"]
    assert serial_is_well_formed(serial)
    assert serial.startswith("C")
    assert response.headers["location"] == f"/identity/cards/{serial}"
    assert response.headers["cache-control"] == "no-store"
    assert body["status"] == "issued"
    assert body["kind"] == "physical"
    assert body["citizen"] == citizen
    assert body["parent"] is None
    assert body["applications"] == ["health", "transit"]
    assert body["activated_at"] is None

    certificate = x509.load_pem_x509_certificate(body["certificate"].encode())
    assert card_pseudonym(certificate) == citizen
    assert card_serial_of(certificate) == serial
    assert card_applications(certificate) == {"health", "transit"}
    assert certificate.public_key() == card.public_key
    assert body["not_after"].startswith(certificate.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M"))
    # The card learns its serial from its certificate.
    card.install_certificate(body["certificate"])
    assert card.serial == serial

    # Unusable until activated: certificate on hold, and refused by every service.
    assert await desk.certificate_status(body) == ("suspended", "certificateHold")
    assert await desk.cached_status(serial) == "issued"


async def test_activation_makes_card_and_certificate_good_everywhere(desk: Desk) -> None:
    _, _, issued = await desk.issued_card(active=False)
    card = await desk.step(issued["serial"], "activate")
    assert card["status"] == "active"
    assert card["activated_at"] is not None
    assert await desk.certificate_status(card) == ("good", None)
    assert await desk.cached_status(card["serial"]) is None

    again = await desk.http.post(f"/identity/cards/{card['serial']}/activate", headers=desk.admin)
    body = problem(again, 409)
    assert body["card_status"] == "active"
    assert body["transition"] == "activate"
    assert f"cannot activate card {card['serial']}: it is active" in body["detail"]


# -- suspend and resume ----------------------------------------------------------------------


async def test_a_suspended_card_token_is_refused_at_once_and_accepted_after_resume(
    desk: Desk,
) -> None:
    citizen, _, card = await desk.issued_card()
    serial = card["serial"]
    holder = desk.holder(citizen, card=serial)
    assert (await desk.http.get("/identity/cards/mine", headers=holder)).status_code == 200

    suspended = await desk.step(serial, "suspend")
    assert suspended["status"] == "suspended"
    assert await desk.certificate_status(suspended) == ("suspended", "certificateHold")
    assert await desk.cached_status(serial) == "suspended"
    refused = await desk.http.get("/identity/cards/mine", headers=holder)
    assert problem(refused, 401)["detail"] == f"card {serial} is suspended"
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]

    resumed = await desk.step(serial, "resume")
    assert resumed["status"] == "active"
    assert await desk.certificate_status(resumed) == ("good", None)
    assert await desk.cached_status(serial) is None
    assert (await desk.http.get("/identity/cards/mine", headers=holder)).status_code == 200


async def test_the_holder_reports_their_own_card_lost_and_the_next_request_is_refused(
    desk: Desk,
) -> None:
    citizen, _, card = await desk.issued_card()
    serial = card["serial"]
    holder = desk.holder(citizen, card=serial, acr="1")
    response = await desk.http.post(f"/identity/cards/{serial}/suspend", headers=holder)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "suspended"
    assert await desk.certificate_status(card) == ("suspended", "certificateHold")
    refused = await desk.http.post(f"/identity/cards/{serial}/suspend", headers=holder)
    assert problem(refused, 401)["detail"] == f"card {serial} is suspended"
    # Reporting it again (another token, e.g. a second device) changes nothing, and says so.
    again = await desk.http.post(f"/identity/cards/{serial}/suspend", headers=desk.holder(citizen))
    assert again.status_code == 200
    assert again.json()["status_changed_at"] == response.json()["status_changed_at"]
    # Only an administrator resumes, after checking who is at the counter.
    denied = await desk.http.post(f"/identity/cards/{serial}/resume", headers=desk.holder(citizen))
    assert problem(denied, 403)["detail"] == "token lacks scope card.manage"


async def test_a_citizen_cannot_suspend_or_read_another_citizens_card(desk: Desk) -> None:
    _, _, card = await desk.issued_card()
    other = await desk.citizen()
    before = await desk.snapshot()
    intruder = desk.holder(other)
    response = await desk.http.post(f"/identity/cards/{card['serial']}/suspend", headers=intruder)
    assert "is not yours" in problem(response, 403)["detail"]
    assert problem(await desk.http.get(f"/identity/cards/{card['serial']}", headers=intruder), 403)
    assert await desk.snapshot() == before
    assert await desk.cached_status(card["serial"]) is None


async def test_wrong_transitions_are_refused_naming_the_status_and_the_step(desk: Desk) -> None:
    _, _, issued = await desk.issued_card(active=False)
    serial = issued["serial"]
    before = await desk.snapshot()
    for transition, status in (("suspend", "issued"), ("resume", "issued")):
        response = await desk.http.post(
            f"/identity/cards/{serial}/{transition}", headers=desk.admin
        )
        body = problem(response, 409)
        assert (body["card_status"], body["transition"]) == (status, transition)
        assert f"cannot {transition} card {serial}: it is {status}" in body["detail"]
    assert await desk.snapshot() == before

    await desk.step(serial, "cancel")
    for transition in ("activate", "suspend", "resume", "cancel"):
        response = await desk.http.post(
            f"/identity/cards/{serial}/{transition}", headers=desk.admin
        )
        assert problem(response, 409)["card_status"] == "cancelled"
    replace = await desk.http.post(
        f"/identity/cards/{serial}/replace",
        json={"csr": desk.blank_card().csr(issued["citizen"])},
        headers=desk.admin,
    )
    assert "only a live card is replaced" in problem(replace, 409)["detail"]


# -- replace and cancel ----------------------------------------------------------------------


async def test_replacing_a_lost_card_revokes_it_and_issues_a_new_one(desk: Desk) -> None:
    citizen, _, old = await desk.issued_card()
    await desk.step(old["serial"], "suspend")  # reported lost first, as usual
    new_card = desk.blank_card()
    response = await desk.http.post(
        f"/identity/cards/{old['serial']}/replace",
        json={"csr": new_card.csr(citizen), "applications": ["health"]},
        headers=desk.admin,
    )
    assert response.status_code == 201, response.text
    new = response.json()
    assert new["serial"] != old["serial"]
    assert (new["citizen"], new["status"], new["applications"]) == (citizen, "issued", ["health"])
    assert response.headers["location"] == f"/identity/cards/{new['serial']}"
    new_card.install_certificate(new["certificate"])

    old_now = await desk.read(old["serial"])
    assert old_now["status"] == "revoked"
    assert old_now["replaced_by"] == new["serial"]
    assert await desk.certificate_status(old) == ("revoked", "superseded")
    assert await desk.cached_status(old["serial"]) == "revoked"
    assert await desk.certificate_status(new) == ("suspended", "certificateHold")
    assert await desk.cached_status(new["serial"]) == "issued"

    activated = await desk.step(new["serial"], "activate")
    assert await desk.certificate_status(activated) == ("good", None)
    listed = await desk.http.get(f"/identity/cards?citizen={citizen}", headers=desk.admin)
    assert [c["serial"] for c in listed.json()] == [new["serial"], old["serial"]]


async def test_a_replacement_keeps_the_applications_unless_told(desk: Desk) -> None:
    citizen, _, old = await desk.issued_card()
    response = await desk.http.post(
        f"/identity/cards/{old['serial']}/replace",
        json={"csr": desk.blank_card().csr(citizen)},
        headers=desk.admin,
    )
    assert response.status_code == 201, response.text
    assert response.json()["applications"] == ALL_APPS


async def test_cancelling_revokes_the_certificate_for_good(desk: Desk) -> None:
    _, _, card = await desk.issued_card()
    cancelled = await desk.step(card["serial"], "cancel")
    assert cancelled["status"] == "cancelled"
    assert await desk.certificate_status(card) == ("revoked", "cessationOfOperation")
    assert await desk.cached_status(card["serial"]) == "cancelled"


async def test_a_cancelled_card_frees_the_citizen_for_a_new_one(desk: Desk) -> None:
    citizen, _, card = await desk.issued_card()
    await desk.step(card["serial"], "cancel")
    assert (await desk.issue(citizen)).status_code == 201


# -- expiry ----------------------------------------------------------------------------------


async def _age(desk: Desk, serial: str) -> None:
    """Time passes for one card: its notAfter is now in the past (the clock, not a status)."""
    past = datetime.now(UTC) - timedelta(seconds=1)
    async with desk.db.engine.begin() as conn:
        from sqlalchemy import text

        await conn.execute(
            text("UPDATE cards SET not_after = :t WHERE serial = :s"), {"t": past, "s": serial}
        )


async def test_a_card_past_its_expiry_reads_expired_and_the_sweep_persists_it(
    desk: Desk,
) -> None:
    from identity.cards.service import StatusOutbox, expire_cards
    from services.kit.revocation import Revocations

    citizen, _, card = await desk.issued_card()
    serial = card["serial"]
    ecard = (await desk.ecard(serial, citizen)).json()
    await _age(desk, serial)

    assert (await desk.read(serial))["status"] == "expired"  # computed on read
    [row] = await desk.rows(f"SELECT status FROM cards WHERE serial = '{serial}'")
    assert row["status"] == "active"  # not persisted yet
    response = await desk.http.post(f"/identity/cards/{serial}/suspend", headers=desk.admin)
    assert problem(response, 409)["card_status"] == "expired"

    outbox = StatusOutbox()
    async with desk.session() as session:
        expired = await expire_cards(session=session, outbox=outbox, now=datetime.now(UTC))
    await outbox.publish(Revocations(desk.identity.app.state.runtime.redis))
    assert {c.serial for c in expired} == {serial, ecard["serial"]}
    [row] = await desk.rows(f"SELECT status FROM cards WHERE serial = '{serial}'")
    assert row["status"] == "expired"
    assert (await desk.read(ecard["serial"]))["status"] == "expired"
    assert await desk.cached_status(serial) == "expired"
    assert await desk.cached_status(ecard["serial"]) == "expired"
    # The certificates expire by their own notAfter; their status is not changed.
    assert await desk.certificate_status(card) == ("good", None)
    # A second sweep finds nothing.
    async with desk.session() as session:
        assert (
            await expire_cards(session=session, outbox=StatusOutbox(), now=datetime.now(UTC)) == []
        )


async def test_an_expired_card_does_not_block_its_successor_before_the_sweep(desk: Desk) -> None:
    citizen, _, card = await desk.issued_card()
    await _age(desk, card["serial"])
    response = await desk.issue(citizen)
    assert response.status_code == 201, response.text
    [row] = await desk.rows(f"SELECT status FROM cards WHERE serial = '{card['serial']}'")
    assert row["status"] == "expired"
    assert await desk.cached_status(card["serial"]) == "expired"


# -- the electronic card ---------------------------------------------------------------------


async def test_the_holder_gets_an_electronic_card_against_their_active_card(desk: Desk) -> None:
    citizen, _, card = await desk.issued_card()
    phone = desk.blank_card()
    response = await desk.http.post(
        f"/identity/cards/{card['serial']}/ecard",
        json={"csr": phone.csr(citizen)},
        headers=desk.holder(citizen, card=card["serial"]),
    )
    assert response.status_code == 201, response.text
    ecard = response.json()
    assert ecard["serial"].startswith("E")
    assert serial_is_well_formed(ecard["serial"])
    assert (ecard["kind"], ecard["status"], ecard["parent"]) == (
        "electronic",
        "active",
        card["serial"],
    )
    assert ecard["applications"] == card["applications"]
    assert ecard["not_after"] <= card["not_after"]
    assert ecard["certificate_serial"] != card["certificate_serial"]
    phone.install_certificate(ecard["certificate"])
    assert phone.serial == ecard["serial"]
    assert await desk.certificate_status(ecard) == ("good", None)
    assert await desk.cached_status(ecard["serial"]) is None

    mine = await desk.http.get("/identity/cards/mine", headers=desk.holder(citizen))
    assert [(c["serial"], c["kind"]) for c in mine.json()] == [
        (ecard["serial"], "electronic"),
        (card["serial"], "physical"),
    ]


async def test_the_electronic_card_follows_suspension_and_resumption(desk: Desk) -> None:
    citizen, _, card = await desk.issued_card()
    ecard = (await desk.ecard(card["serial"], citizen)).json()
    await desk.step(card["serial"], "suspend")
    held = await desk.read(ecard["serial"])
    assert (held["status"], held["held_by_parent"]) == ("suspended", True)
    assert await desk.certificate_status(ecard) == ("suspended", "certificateHold")
    assert await desk.cached_status(ecard["serial"]) == "suspended"
    refused = await desk.http.post(f"/identity/cards/{ecard['serial']}/resume", headers=desk.admin)
    assert f"physical card {card['serial']} is suspended" in problem(refused, 409)["detail"]

    await desk.step(card["serial"], "resume")
    back = await desk.read(ecard["serial"])
    assert (back["status"], back["held_by_parent"]) == ("active", False)
    assert await desk.certificate_status(ecard) == ("good", None)
    assert await desk.cached_status(ecard["serial"]) is None


async def test_a_lost_phone_stays_suspended_when_the_physical_card_comes_back(
    desk: Desk,
) -> None:
    citizen, _, card = await desk.issued_card()
    ecard = (await desk.ecard(card["serial"], citizen)).json()
    await desk.step(ecard["serial"], "suspend", headers=desk.holder(citizen))  # phone lost
    await desk.step(card["serial"], "suspend")
    await desk.step(card["serial"], "resume")
    assert (await desk.read(card["serial"]))["status"] == "active"
    assert (await desk.read(ecard["serial"]))["status"] == "suspended"
    assert await desk.cached_status(ecard["serial"]) == "suspended"
    await desk.step(ecard["serial"], "resume")
    assert await desk.cached_status(ecard["serial"]) is None


async def test_replacing_or_cancelling_the_physical_card_takes_the_electronic_card_with_it(
    desk: Desk,
) -> None:
    citizen, _, card = await desk.issued_card()
    ecard = (await desk.ecard(card["serial"], citizen)).json()
    response = await desk.http.post(
        f"/identity/cards/{card['serial']}/replace",
        json={"csr": desk.blank_card().csr(citizen)},
        headers=desk.admin,
    )
    assert response.status_code == 201
    assert (await desk.read(ecard["serial"]))["status"] == "revoked"
    assert await desk.certificate_status(ecard) == ("revoked", "superseded")
    assert await desk.cached_status(ecard["serial"]) == "revoked"

    new = await desk.step(response.json()["serial"], "activate")
    second = (await desk.ecard(new["serial"], citizen)).json()
    await desk.step(new["serial"], "cancel")
    assert (await desk.read(second["serial"]))["status"] == "cancelled"
    assert await desk.certificate_status(second) == ("revoked", "cessationOfOperation")
    assert await desk.cached_status(second["serial"]) == "cancelled"


async def test_a_new_phone_supersedes_the_previous_electronic_card(desk: Desk) -> None:
    citizen, _, card = await desk.issued_card()
    first = (await desk.ecard(card["serial"], citizen)).json()
    response = await desk.ecard(card["serial"], citizen, headers=desk.admin)
    assert response.status_code == 201, response.text
    second = response.json()
    old = await desk.read(first["serial"])
    assert (old["status"], old["replaced_by"]) == ("revoked", second["serial"])
    assert await desk.certificate_status(first) == ("revoked", "superseded")
    assert await desk.cached_status(first["serial"]) == "revoked"


async def test_an_electronic_card_needs_an_active_physical_card_and_card_plus_pin(
    desk: Desk,
) -> None:
    citizen, _, card = await desk.issued_card()
    serial = card["serial"]
    before = await desk.snapshot()
    # acr=1 (card without PIN), or a token from another card, does not bind a phone.
    for headers in (
        desk.holder(citizen, card=serial, acr="1"),
        desk.holder(citizen, card=None),
    ):
        response = await desk.ecard(serial, citizen, headers=headers)
        assert "with its PIN" in problem(response, 403)["detail"]
    assert await desk.snapshot() == before

    await desk.step(serial, "suspend")
    response = await desk.ecard(serial, citizen, headers=desk.admin)
    body = problem(response, 409)
    assert (body["card_status"], body["transition"]) == ("suspended", "ecard")
    await desk.step(serial, "resume")
    ecard = (await desk.ecard(serial, citizen)).json()
    on_ecard = await desk.ecard(ecard["serial"], citizen, headers=desk.admin)
    assert "issued against a physical card" in problem(on_ecard, 409)["detail"]
    replace = await desk.http.post(
        f"/identity/cards/{ecard['serial']}/replace",
        json={"csr": desk.blank_card().csr(citizen)},
        headers=desk.admin,
    )
    assert "an electronic card is not replaced" in problem(replace, 409)["detail"]


# -- reads and access ------------------------------------------------------------------------


async def test_reads_for_the_holder_and_the_administrator(desk: Desk) -> None:
    citizen, _, card = await desk.issued_card()
    own = await desk.http.get(f"/identity/cards/{card['serial']}", headers=desk.holder(citizen))
    assert own.status_code == 200
    assert own.headers["cache-control"] == "no-store"
    assert own.json() == await desk.read(card["serial"])
    assert own.json()["status"] == "active"

    unknown = await desk.http.get("/identity/cards/C0001234567897", headers=desk.admin)
    assert problem(unknown, 404)["detail"] == "no card C0001234567897"
    typo = await desk.http.get("/identity/cards/C0001234567898", headers=desk.admin)
    assert "check digit" in problem(typo, 422)["detail"]
    garbage = await desk.http.get("/identity/cards/not-a-card", headers=desk.admin)
    problem(garbage, 422)
    nobody = await desk.http.get("/identity/cards?citizen=cz_nobody", headers=desk.admin)
    assert problem(nobody, 404)["detail"] == "no citizen has this id"
    assert (await desk.http.get("/identity/cards/mine", headers=desk.holder("cz_x"))).json() == []


async def test_tokens_without_the_right_scope_are_refused(desk: Desk) -> None:
    citizen, _, card = await desk.issued_card()
    serial = card["serial"]
    assert problem(await desk.http.get(f"/identity/cards/{serial}"), 401)
    other = await desk.identity.auth("citizen.manage")
    listing = await desk.http.get(f"/identity/cards?citizen={citizen}", headers=other)
    assert problem(listing, 403)["detail"] == "token lacks scope card.manage"
    read = await desk.http.get(f"/identity/cards/{serial}", headers=other)
    assert "card.manage (an administrator) or card.self" in problem(read, 403)["detail"]
    mine = await desk.http.get("/identity/cards/mine", headers=desk.admin)
    assert problem(mine, 403)["detail"] == "token lacks scope card.self"
    issue = await desk.http.post(
        "/identity/cards",
        json={"citizen": citizen, "applications": ["health"], "csr": "x"},
        headers=desk.holder(citizen),
    )
    assert problem(issue, 403)["detail"] == "token lacks scope card.manage"


# -- bad input: a clear refusal, and nothing changed -----------------------------------------


async def test_malformed_and_foreign_csrs_are_refused_and_nothing_is_written(desk: Desk) -> None:
    citizen = await desk.citizen()
    before = await desk.snapshot()
    lines = desk.blank_card().csr(citizen).splitlines()
    lines[1] = "!" + lines[1][1:]
    cases = {
        "not a csr": "CSR is not PEM",
        "\n".join(lines): "CSR PEM body is not valid base64",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n": (
            "not a well-formed PKCS#10"
        ),
        _csr(ed25519.Ed25519PrivateKey.generate(), citizen): "must be EC P-256",
        _csr(ec.generate_private_key(ec.SECP384R1()), citizen): "must be EC P-256",
        _csr(ec.generate_private_key(ec.SECP256R1()), "cz_someone_else"): "CN is not this",
    }
    for csr, detail in cases.items():
        response = await desk.http.post(
            "/identity/cards",
            json={"citizen": citizen, "applications": ["health"], "csr": csr},
            headers=desk.admin,
        )
        body = problem(response, 422)
        assert body["detail"].startswith("csr: "), body
        assert detail in body["detail"], body
    assert await desk.snapshot() == before


async def test_a_replacement_or_ecard_with_a_bad_csr_leaves_the_old_card_as_it_was(
    desk: Desk,
) -> None:
    citizen, _, card = await desk.issued_card()
    ecard = (await desk.ecard(card["serial"], citizen)).json()
    before = await desk.snapshot()
    stranger = desk.blank_card().csr("cz_someone_else")
    for path in (f"{card['serial']}/replace", f"{card['serial']}/ecard"):
        response = await desk.http.post(
            f"/identity/cards/{path}", json={"csr": stranger}, headers=desk.admin
        )
        assert "CN is not this citizen" in problem(response, 422)["detail"]
    assert await desk.snapshot() == before
    assert await desk.cached_status(card["serial"]) is None
    assert await desk.cached_status(ecard["serial"]) is None


async def test_bad_requests_are_refused_by_name(desk: Desk) -> None:
    citizen = await desk.citizen()
    csr = desk.blank_card().csr(citizen)
    before = await desk.snapshot()
    cases = [
        ({"citizen": citizen, "applications": ["casino"], "csr": csr}, 422, "applications.0"),
        ({"citizen": citizen, "applications": [], "csr": csr}, 422, "applications"),
        ({"citizen": citizen, "applications": ["health"]}, 422, "body.csr: Field required"),
        ({"citizen": citizen, "applications": ["health"], "csr": csr, "pin": "1"}, 422, "pin"),
        (
            {
                "citizen": "cz_nobody",
                "applications": ["health"],
                "csr": desk.blank_card().csr("cz_nobody"),
            },
            404,
            "no citizen has this id",
        ),
    ]
    for body, status, detail in cases:
        response = await desk.http.post("/identity/cards", json=body, headers=desk.admin)
        assert detail in problem(response, status)["detail"]
    not_json = await desk.http.post(
        "/identity/cards", content=b"{", headers={**desk.admin, "content-type": "application/json"}
    )
    problem(not_json, 400)
    assert await desk.snapshot() == before


async def test_a_second_live_card_and_a_reused_key_are_conflicts(desk: Desk) -> None:
    citizen, card, existing = await desk.issued_card(active=False)
    before = await desk.snapshot()
    second = await desk.issue(citizen)
    body = problem(second, 409)
    assert f"already has live physical card {existing['serial']} (issued)" in body["detail"]
    assert body["card"] == existing["serial"]

    # The same key pair for another citizen (a cloned or recycled chip).
    other = await desk.citizen()
    before = await desk.snapshot()
    reused = await desk.http.post(
        "/identity/cards",
        json={"citizen": other, "applications": ["health"], "csr": card.csr(other)},
        headers=desk.admin,
    )
    assert f"already certified for card {existing['serial']}" in problem(reused, 409)["detail"]
    assert await desk.snapshot() == before


async def test_two_desks_issuing_to_one_citizen_at_once_make_one_card(desk: Desk) -> None:
    citizen = await desk.citizen()
    _, certificates_before = await desk.snapshot()
    responses = await asyncio.gather(*(desk.issue(citizen) for _ in range(2)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409], [r.text for r in responses]
    cards = await desk.rows(f"SELECT serial FROM cards WHERE citizen_pseudonym = '{citizen}'")
    assert len(cards) == 1
    _, certificates_after = await desk.snapshot()
    # The loser's certificate was rolled back with its card: no orphan in the PKI.
    assert len(certificates_after) == len(certificates_before) + 1


async def test_a_status_cache_outage_after_commit_is_a_clear_503_and_the_database_holds(
    desk: Desk, monkeypatch: object
) -> None:
    import pytest
    from redis.exceptions import ConnectionError as RedisConnectionError

    from services.kit.revocation import Revocations

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    _, _, card = await desk.issued_card()

    async def down(self: Revocations, serial: str, status: str | None) -> None:
        raise RedisConnectionError("Redis is down")

    with monkeypatch.context() as patch:
        patch.setattr(Revocations, "set_card_status", down)
        response = await desk.http.post(
            f"/identity/cards/{card['serial']}/suspend", headers=desk.admin
        )
    body = problem(response, 503)
    assert "saved (database and certificate)" in body["detail"]
    assert body["cards"] == [card["serial"]]
    assert (await desk.read(card["serial"]))["status"] == "suspended"
    # Suspending again is accepted and publishes what the outage missed.
    await desk.step(card["serial"], "suspend")
    assert await desk.cached_status(card["serial"]) == "suspended"
